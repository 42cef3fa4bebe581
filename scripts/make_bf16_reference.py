#!/usr/bin/python3
# Writes tests/reference/bf16_reference.json: PyTorch's float32 -> bfloat16 rounding of a set of floats (random bit
# patterns, ties, subnormals, values near the largest bfloat16, infinities) and a few ops on bfloat16 inputs
# computed by PyTorch in float32 and rounded to bfloat16 (CPU), for tests/test_bf16.cpp. CI never needs torch: the JSON is committed; re-run this script
# only when the cases change.
#
# The committed file was produced by Debian bookworm's python3-torch 1.13.1+dfsg-4 (CPU):
#   apt-get install -y python3-torch && /usr/bin/python3 scripts/make_bf16_reference.py
import json
import os
import struct

import torch


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_to_f32(u):
    return struct.unpack("<f", struct.pack("<I", u))[0]


def bf16_bits(t):
    """The bit patterns of a bfloat16 tensor, as a flat list of ints."""
    return t.contiguous().view(torch.int16).flatten().tolist()


def main():
    g = torch.Generator().manual_seed(20261203)
    # rounding: random bit patterns (NaNs dropped), then the hand-picked edges
    raw = torch.randint(0, 2**32, (4000,), generator=g, dtype=torch.int64).tolist()
    floats = [bits_to_f32(u) for u in raw]
    floats = [f for f in floats if f == f]
    edges = [0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F810000, 0x00000001, 0x00008000, 0x00018000, 0x007FFFFF,
             0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7FFFFF, 0x7F800000, 0xFF7F8000, 0x80000000, 0x3F7FFFFF]
    floats += [bits_to_f32(u) for u in edges]
    x = torch.tensor(floats, dtype=torch.float32)
    rounding = [[f32_bits(f), b & 0xFFFF] for f, b in zip(floats, bf16_bits(x.to(torch.bfloat16)))]

    # ops on bfloat16 tensors: inputs drawn in float32 and rounded; outputs as bfloat16 bits
    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(torch.bfloat16)

    # Each op's reference is torch's float32 op on the (bf16) inputs, rounded to bfloat16 once: what cuBLAS with
    # float32 accumulation and skipgrad's kernels compute. torch 1.13's own CPU bf16 matmul and layer_norm round
    # intermediate results (3-8 ulps from this on these cases), so they are not the reference.
    a, b = draw(5, 7), draw(7, 3)
    w, bias = draw(4, 7), draw(4)
    s = draw(3, 9)
    ln_x, ln_g, ln_b = draw(4, 8), draw(8), draw(8)
    p, q = draw(3, 1), draw(1, 4)
    F = torch.nn.functional
    cases = {
        "matmul": ([a, b], lambda a, b: a @ b),
        "linear": ([a, w, bias], F.linear),
        "softmax": ([s], lambda s: torch.softmax(s, -1)),
        "log_softmax": ([s], lambda s: torch.log_softmax(s, -1)),
        "gelu": ([s], F.gelu),
        "layer_norm": ([ln_x, ln_g, ln_b], lambda x, g, b: F.layer_norm(x, (8,), g, b, 1e-5)),
        "add_broadcast": ([p, q], lambda p, q: p + q),
        "mul_broadcast": ([p, q], lambda p, q: p * q),
        "sum_rows": ([s], lambda s: s.sum(1)),
    }
    ops = {name: {"inputs": ins, "out": fn(*[t.float() for t in ins]).to(torch.bfloat16)}
           for name, (ins, fn) in cases.items()}
    out = {
        "torch_version": torch.__version__,
        "rounding": rounding,
        "ops": {name: {"inputs": [{"shape": list(t.shape), "bits": [v & 0xFFFF for v in bf16_bits(t)]}
                                  for t in case["inputs"]],
                       "out": {"shape": list(case["out"].shape),
                               "bits": [v & 0xFFFF for v in bf16_bits(case["out"])]}}
                for name, case in ops.items()},
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference",
                        "bf16_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(rounding)} roundings, {len(ops)} ops (torch {torch.__version__})")


if __name__ == "__main__":
    main()
