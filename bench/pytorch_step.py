#!/usr/bin/env python3
"""The reference model of issue 7 in current PyTorch (CPU), eager or torch.compile, timed like bench/vs_libtorch.

Same model as bench/torch_reference.cpp (fairseq semantics, /work/shared/TOPOLOGIES.md §0-§2), written the way a
PyTorch user would today: nn.Linear / nn.LayerNorm / nn.Embedding, F.scaled_dot_product_attention, F.cross_entropy
with label smoothing, Adam (fused=True where this torch supports it on CPU). Parameter names are skipgrad's, so the
weights load by name from the safetensors file vs_libtorch writes.

  pytorch_step.py --worker --mode eager|compile --weights F --topology T --threads N [--positions P] [--norm N]
      the line protocol of vs_libtorch (it starts this script): "loss", "steps K", "rss", "quit"
  pytorch_step.py [--mode eager|compile] [--topology pre_ln] [--threads 1] [--steps 20] [--weights F]
      standalone: times `steps` training steps (random weights unless --weights) and prints median ms/step

Needs a `torch` from PyPI (`pip install torch numpy`); without one, the worker answers "unavailable ..." and exits,
and vs_libtorch leaves PyTorch out of the table. Debian's torch 1.13 runs the eager model too (attention() writes
out the SDPA that 1.13 lacks), so tests/scripts/pytorch_step_parity.sh can check the model without PyPI.
bench/pytorch_cuda_step.py reuses this model and Runner on the GPU at the sizes of issue 6 (set_sizes, Runner's
device and batch_shape); the defaults here stay issue 7's, on the CPU.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

VOCAB, D, HEADS, FF, LAYERS, PAD, EPS_LS = 1000, 256, 4, 1024, 6, 0, 0.1
# sinusoidal: the table added to the embeddings; rope: q and k rotated in every self-attention, with rotate_half as
# Hugging Face's LLaMA (skipgrad's cos/sin tables); alibi: -m_h |p_i - p_j| added to every self-attention's scores
# through SDPA's float mask, as Hugging Face's BLOOM adds its alibi tensor (skipgrad's slopes); t5: a learned
# table[bucket(p_j - p_i)] added there instead, one table per stack, the bucket Hugging Face's T5's
# _relative_position_bucket (skipgrad's default 32 buckets up to distance 128)
POSITIONS = "sinusoidal"
# layer_norm: nn.LayerNorm; dyt: DyT (Zhu et al. 2025) as its authors' module, tanh(alpha * x) * weight + bias
NORM = "layer_norm"
RELATIVE_BUCKETS, RELATIVE_MAX_DISTANCE = 32, 128


def set_sizes(vocab, d, heads, ff, layers):
    """Changes the model's sizes (module globals, read when a model is built and run); call before Runner()."""
    global VOCAB, D, HEADS, FF, LAYERS
    VOCAB, D, HEADS, FF, LAYERS = vocab, d, heads, ff, layers


def vm_mib(field):  # VmHWM (peak resident) / VmRSS from /proc/self/status, MiB
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return float(line.split()[1]) / 1024.0
    return float("nan")


START_RSS = vm_mib("VmRSS:")

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # report, don't crash: the driver skips us
    if "--worker" in sys.argv:
        print(f"unavailable: cannot import torch/numpy ({e})", flush=True)
        sys.exit(0)
    raise


def read_safetensors(path):
    """name -> numpy array, for F32/F64/I64 tensors (the format: 8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + e], dtype=dtypes[h["dtype"]]).reshape(h["shape"]).copy()
    return out


# ---------------------------------------------------------------- the model (TOPOLOGIES.md §0-§2)

class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(D, D) for _ in range(4))

    # keep: bool, True = may attend, broadcast to [B, H, Tq, Tk]; or (ALiBi) a float mask added to the scores, -inf
    # where hidden. rope: (cos, sin) [B, 1, T, d_h] of a self-attention's positions, or None.
    def forward(self, q_in, kv_in, keep, rope=None):
        B, Tq, _ = q_in.shape
        Tk = kv_in.shape[1]
        split = lambda t, T: t.view(B, T, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = split(self.q_proj(q_in), Tq), split(self.k_proj(kv_in), Tk), split(self.v_proj(kv_in), Tk)
        if rope is not None:  # q·cos + rotate_half(q)·sin
            cos, sin = rope
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        o = attention(q, k, v, keep)
        return self.out_proj(o.transpose(1, 2).reshape(B, Tq, D))


def attention(q, k, v, mask):
    """softmax(q kᵀ/√d_h, masked) v: F.scaled_dot_product_attention, written out where torch < 2.0 lacks it."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, -1) @ v


def rotate_half(x):  # [-x2, x1] for x = [x1, x2] split in halves of the last dim
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


class FFN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class DyT(nn.Module):  # the authors' DynamicTanh (channels last); parameters named as skipgrad's
    def __init__(self, dim, alpha0=0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha0))
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return torch.tanh(self.alpha * x) * self.weight + self.bias


def make_norm():  # every norm of the model: NORM's kind
    return DyT(D) if NORM == "dyt" else nn.LayerNorm(D, eps=1e-5)


class Layer(nn.Module):
    def __init__(self, decoder, pre_ln):
        super().__init__()
        self.decoder, self.pre_ln = decoder, pre_ln
        self.self_attn, self.ffn = MHA(), FFN()
        self.self_attn_norm, self.ffn_norm = make_norm(), make_norm()
        if decoder:
            self.cross_attn, self.cross_attn_norm = MHA(), make_norm()

    def forward(self, x, self_keep, memory, memory_keep, rope=None):
        if self.pre_ln:  # x = x + f(LN(x))
            h = self.self_attn_norm(x)
            x = x + self.self_attn(h, h, self_keep, rope)
            if self.decoder:
                x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_keep)
            return x + self.ffn(self.ffn_norm(x))
        x = self.self_attn_norm(x + self.self_attn(x, x, self_keep, rope))  # Post-LN: x = LN(x + f(x))
        if self.decoder:
            x = self.cross_attn_norm(x + self.cross_attn(x, memory, memory_keep))
        return self.ffn_norm(x + self.ffn(x))


class Stack(nn.Module):
    def __init__(self, decoder, pre_ln):
        super().__init__()
        for i in range(LAYERS):
            self.add_module(str(i), Layer(decoder, pre_ln))
        self.final_norm = make_norm() if pre_ln else None
        self.relative_bias = RelativeBias(not decoder) if POSITIONS == "t5" else None

    def forward(self, x, self_keep, memory=None, memory_keep=None, rope=None):
        for i in range(LAYERS):
            x = getattr(self, str(i))(x, self_keep, memory, memory_keep, rope)
        return self.final_norm(x) if self.final_norm is not None else x


class Positions(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.zeros(1024 + PAD + 1, D))


class Rotary(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cos_table", torch.zeros(1024 + PAD + 1, D // HEADS // 2))
        self.register_buffer("sin_table", torch.zeros(1024 + PAD + 1, D // HEADS // 2))


class RelativeBias(nn.Module):  # T5's: weight [buckets, H]; "buckets" is skipgrad's lookup table (copied, unused)
    def __init__(self, bidirectional):
        super().__init__()
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.zeros(RELATIVE_BUCKETS, HEADS))
        self.register_buffer("buckets", torch.zeros(2 * RELATIVE_MAX_DISTANCE + 1, dtype=torch.long))

    def forward(self, pos):  # [B, T] -> [B, H, T, T]
        relative = pos[:, None, :] - pos[:, :, None]  # memory - context position, as T5's
        n, bucket = RELATIVE_BUCKETS, torch.zeros_like(relative)
        if self.bidirectional:  # Hugging Face's T5Attention._relative_position_bucket
            n //= 2
            bucket = bucket + (relative > 0).long() * n
            relative = relative.abs()
        else:
            relative = -torch.min(relative, torch.zeros_like(relative))
        exact = n // 2
        large = exact + (torch.log(relative.float() / exact) / math.log(RELATIVE_MAX_DISTANCE / exact)
                         * (n - exact)).long()
        large = torch.min(large, torch.full_like(large, n - 1))
        bucket = bucket + torch.where(relative < exact, relative, large)
        return F.embedding(bucket, self.weight).permute(0, 3, 1, 2)


class Alibi(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("slopes", torch.zeros(HEADS))


def make_positions(ids):  # fairseq's: pad + (non-pad tokens so far) for a token, pad for a pad
    nonpad = ids.ne(PAD).long()
    return torch.cumsum(nonpad, 1) * nonpad + PAD


class Transformer(nn.Module):
    def __init__(self, pre_ln):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D, padding_idx=PAD)
        if POSITIONS == "sinusoidal":
            self.positions = Positions()
        elif POSITIONS == "rope":
            self.rotary = Rotary()
        elif POSITIONS == "alibi":
            self.alibi = Alibi()
        elif POSITIONS != "t5":
            raise ValueError(f"positions must be sinusoidal, rope, alibi or t5, not {POSITIONS}")
        self.enc, self.dec = Stack(False, pre_ln), Stack(True, pre_ln)

    def embed_tokens(self, ids, zero_pads):  # √d·E[ids] (+ PE[make_positions(ids)])
        x = self.embed(ids) * math.sqrt(D)
        if POSITIONS == "sinusoidal":
            x = x + F.embedding(make_positions(ids), self.positions.table)
        return x * ids.ne(PAD).unsqueeze(-1).to(x.dtype) if zero_pads else x

    def rope(self, ids):  # (cos, sin) [B, 1, T, d_h] of ids' positions, each half repeated as rotate_half pairs them
        if POSITIONS != "rope":
            return None
        pos = make_positions(ids)
        rows = lambda table: torch.cat([F.embedding(pos, table)] * 2, -1).unsqueeze(1)
        return rows(self.rotary.cos_table), rows(self.rotary.sin_table)

    # keep, or with ALiBi the float mask -m_h |p_i - p_j|, with T5 the stack's bias (-inf where hidden)
    def self_mask(self, ids, keep, stack):
        if POSITIONS == "t5":
            return stack.relative_bias(make_positions(ids)).masked_fill(~keep, float("-inf"))
        if POSITIONS != "alibi":
            return keep
        pos = make_positions(ids).to(self.alibi.slopes.dtype)
        bias = -self.alibi.slopes.view(1, -1, 1, 1) * (pos[:, None, :, None] - pos[:, None, None, :]).abs()
        return bias.masked_fill(~keep, float("-inf"))

    def forward(self, src, tgt_in, tgt_out):
        T = tgt_in.shape[1]
        src_keep = src.ne(PAD)[:, None, None, :]
        causal_keep = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).tril()
        tgt_keep = tgt_in.ne(PAD)[:, None, None, :] & causal_keep
        memory = self.enc(self.embed_tokens(src, True), self.self_mask(src, src_keep, self.enc), rope=self.rope(src))
        y = self.dec(self.embed_tokens(tgt_in, False), self.self_mask(tgt_in, tgt_keep, self.dec), memory, src_keep,
                     self.rope(tgt_in))
        logits = F.linear(y, self.embed.weight)
        # PyTorch's smoothing eps·V/(V−1) = fairseq's label-smoothed loss with eps (nn/loss.h)
        return F.cross_entropy(logits.view(-1, VOCAB), tgt_out.view(-1), ignore_index=PAD,
                               label_smoothing=EPS_LS * VOCAB / (VOCAB - 1))


# ---------------------------------------------------------------- one runner

class Runner:
    """Model, Adam and batch on `device`; the batch from the weights file, else random ids of `batch_shape`."""

    def __init__(self, topology, mode, weights, device="cpu", batch_shape=(32, 32)):
        if topology not in ("post_ln", "pre_ln"):
            raise ValueError(f"topology must be post_ln or pre_ln, not {topology}")
        torch.manual_seed(1)
        self.model = Transformer(topology == "pre_ln")
        if weights:
            w = read_safetensors(weights)
            names = dict(self.model.named_parameters())
            names.update(dict(self.model.named_buffers()))
            file_names = {n for n in w if not n.startswith("batch.")}
            if set(names) != file_names:
                raise ValueError(f"names differ: only in model {sorted(set(names) - file_names)[:5]}, "
                                 f"only in file {sorted(file_names - set(names))[:5]}")
            with torch.no_grad():
                for n, t in names.items():
                    t.copy_(torch.from_numpy(w[n]).to(t.dtype))
            self.batch = [torch.from_numpy(w["batch." + k]) for k in ("src", "tgt_in", "tgt_out")]
        else:
            g = torch.Generator().manual_seed(3)
            self.batch = [torch.randint(1, VOCAB, batch_shape, generator=g) for _ in range(3)]
        self.model.to(device)
        self.batch = [t.to(device) for t in self.batch]
        try:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
            self.adam = "fused"
        except (RuntimeError, TypeError, ValueError):
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
            self.adam = "default"
        self.fn = torch.compile(self.model) if mode == "compile" else self.model

    def loss(self):
        with torch.no_grad():
            return self.fn(*self.batch).item()

    def step(self, read_loss=True):
        """One training step; returns its loss as a float, or (read_loss=False: no host sync) as a tensor."""
        self.opt.zero_grad()
        loss = self.fn(*self.batch)
        value = loss.item() if read_loss else loss.detach()
        loss.backward()
        self.opt.step()
        return value


def worker(args):
    torch.set_num_threads(args.threads)
    r = Runner(args.topology, args.mode, args.weights)
    info = (f"torch {torch.__version__} threads {torch.get_num_threads()}, adam {r.adam}, "
            f"blas {'mkl' if torch.backends.mkl.is_available() else 'other'}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"ready pytorch-{torch.__version__.split('+')[0]}-{args.mode} {info}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "loss":
            print(f"loss {r.loss():.9g}", flush=True)
        elif cmd[0] == "steps":
            times, losses = [], []
            for _ in range(int(cmd[1])):
                t0 = time.perf_counter()
                losses.append(r.step())
                times.append((time.perf_counter() - t0) * 1e3)
            print("times " + " ".join(f"{t:.3f}" for t in times) + " losses " + " ".join(f"{l:.9g}" for l in losses),
                  flush=True)
        elif cmd[0] == "rss":
            print(f"rss {vm_mib('VmHWM:'):.1f} {START_RSS:.1f}", flush=True)
        elif cmd[0] == "quit":
            break
        else:
            print(f"error unknown command {cmd[0]!r}", flush=True)


def standalone(args):
    torch.set_num_threads(args.threads)
    r = Runner(args.topology, args.mode, args.weights)
    for _ in range(3):
        r.step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        r.step()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4)
    print(f"pytorch {torch.__version__} {args.mode} {args.topology} threads {torch.get_num_threads()}: "
          f"median {statistics.median(times):.1f} ms/step (IQR {q[0]:.1f}-{q[2]:.1f}), "
          f"peak RSS {vm_mib('VmHWM:'):.0f} MiB, adam {r.adam}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--mode", choices=["eager", "compile"], default="eager")
    p.add_argument("--weights", default="")
    p.add_argument("--topology", default="pre_ln")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sizes", default="", help="vocab,d,heads,ffn,layers (vs_libtorch --model); default the reference")
    p.add_argument("--positions", default="sinusoidal", choices=["sinusoidal", "rope", "alibi", "t5"])
    p.add_argument("--norm", default="layer_norm", choices=["layer_norm", "dyt"])
    args = p.parse_args()
    global POSITIONS, NORM
    POSITIONS, NORM = args.positions, args.norm
    if args.sizes:
        set_sizes(*[int(v) for v in args.sizes.split(",")])
    if args.worker:
        try:
            worker(args)
        except Exception as e:  # tell the driver, which then leaves us out
            print(f"unavailable: {type(e).__name__}: {e}", flush=True)
            raise
    else:
        standalone(args)


if __name__ == "__main__":
    main()
