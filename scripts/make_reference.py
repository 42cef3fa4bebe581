#!/usr/bin/python3
# Writes tests/reference/ops_reference.json: forward outputs and input gradients of skipgrad's ops, computed by
# PyTorch on the same inputs, in float32 and float64. tests/test_reference.cpp rebuilds every case with skipgrad's
# ops and compares. CI never needs torch: the JSON is committed; re-run this script only when cases change.
#
# The committed file was produced by Debian bookworm's python3-torch 1.13.1+dfsg-4 (torch.__version__ "1.13.0a0",
# CPU) with numpy 1.24.2:  apt-get install -y python3-torch && /usr/bin/python3 scripts/make_reference.py
#
# For every case: inputs (float ones drawn from a fixed seed in float64, then rounded to the case's dtype), a random
# weight w shaped like the output, out = op(inputs), and the gradients of sum(out * w) with respect to the float
# inputs. Layouts: an input may carry "storage_order" (its memory holds the dims in that order, so skipgrad sees
# a permuted, non-contiguous view) or "step" (every other element of a buffer twice as wide in the last dim).
# Those only change how skipgrad builds the input; the values are the same, so torch computes on plain tensors.
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference", "ops_reference.json")


class In:
    """One input: kind is 'normal', 'positive' (uniform [0.5, 2)), 'nonzero' (+-uniform [0.5, 2)), 'int64' or
    'mask' (0/1, given as `values`); grad=False for inputs that get no gradient."""

    def __init__(self, shape, kind="normal", values=None, grad=True, storage_order=None, step=None):
        self.shape, self.kind, self.values, self.grad = list(shape), kind, values, grad
        self.storage_order, self.step = storage_order, step
        if kind in ("int64", "mask"):
            self.grad = False

    def draw(self, rng):
        n = int(np.prod(self.shape)) if self.shape else 1
        if self.kind == "normal":
            return rng.standard_normal(n)
        if self.kind == "positive":
            return rng.uniform(0.5, 2.0, n)
        if self.kind == "nonzero":
            return rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
        assert len(self.values) == n, (self.shape, self.values)
        return np.array(self.values, dtype=np.int64)


CASES = []


def case(op, label, inputs, fn, params=None, out_dtype=None):
    """fn(params, *torch_inputs) -> output. out_dtype: a fixed output dtype (to_dtype), else the case dtype."""
    CASES.append(dict(op=op, label=label, inputs=inputs, fn=fn, params=params or {}, out_dtype=out_dtype))


T2 = [1, 0]  # storage_order of a transposed 2-D input

# ---------------------------------------------------------------- elementwise, binary
binary = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "maximum": torch.maximum, "minimum": torch.minimum}
for name, f in binary.items():
    b_kind = "nonzero" if name == "div" else "normal"
    fn = lambda p, a, b, f=f: f(a, b)
    case(name, "same shape [3,4]", [In([3, 4]), In([3, 4], b_kind)], fn)
    case(name, "broadcast [2,3,4] with [4]", [In([2, 3, 4]), In([4], b_kind)], fn)
    case(name, "broadcast [3,1] with [1,4]", [In([3, 1]), In([1, 4], b_kind)], fn)
    case(name, "transposed [4,3] with [2,1,3]", [In([4, 3], storage_order=T2), In([2, 1, 3], b_kind)], fn)

# ---------------------------------------------------------------- elementwise, unary
unary = {
    "neg": ("normal", {}, lambda p, x: -x),
    "add_scalar": ("normal", {"scalar": 2.5}, lambda p, x: x + p["scalar"]),
    "mul_scalar": ("normal", {"scalar": -1.5}, lambda p, x: x * p["scalar"]),
    "rsub_scalar": ("normal", {"scalar": 3.0}, lambda p, x: p["scalar"] - x),
    "exp": ("normal", {}, lambda p, x: torch.exp(x)),
    "log": ("positive", {}, lambda p, x: torch.log(x)),
    "sqrt": ("positive", {}, lambda p, x: torch.sqrt(x)),
    "rsqrt": ("positive", {}, lambda p, x: torch.rsqrt(x)),
    "reciprocal": ("nonzero", {}, lambda p, x: torch.reciprocal(x)),
    "abs": ("nonzero", {}, lambda p, x: torch.abs(x)),
    "tanh": ("normal", {}, lambda p, x: torch.tanh(x)),
    "sigmoid": ("normal", {}, lambda p, x: torch.sigmoid(x)),
    "relu": ("nonzero", {}, lambda p, x: torch.relu(x)),
    "gelu_tanh": ("normal", {}, lambda p, x: F.gelu(x, approximate="tanh")),
    "gelu_erf": ("normal", {}, lambda p, x: F.gelu(x)),
    "silu": ("normal", {}, lambda p, x: F.silu(x)),
}
for name, (kind, params, fn) in unary.items():
    case(name, "[3,5]", [In([3, 5], kind)], fn, params)
    case(name, "transposed [5,3]", [In([5, 3], kind, storage_order=T2)], fn, params)
    case(name, "every other element [2,3,4]", [In([2, 3, 4], kind, step=2)], fn, params)
pow_fn = lambda p, x: torch.pow(x, p["exponent"])
case("pow", "x^3 on [3,5]", [In([3, 5])], pow_fn, {"exponent": 3.0})
case("pow", "x^2 on transposed [5,3]", [In([5, 3], storage_order=T2)], pow_fn, {"exponent": 2.0})
case("pow", "x^2.5 on positive [2,3,4]", [In([2, 3, 4], "positive")], pow_fn, {"exponent": 2.5})
case("pow", "x^-1.5 on positive [3,5]", [In([3, 5], "positive")], pow_fn, {"exponent": -1.5})

# ---------------------------------------------------------------- matmul, linear


def matmul_fn(p, a, b):
    if p.get("trans_a"):
        a = a.transpose(-2, -1)
    if p.get("trans_b"):
        b = b.transpose(-2, -1)
    return torch.matmul(a, b)


case("matmul", "[3,4] @ [4,5]", [In([3, 4]), In([4, 5])], matmul_fn)
case("matmul", "batched [2,3,4] @ broadcast [4,5]", [In([2, 3, 4]), In([4, 5])], matmul_fn)
case("matmul", "broadcast batch [2,1,3,4] @ [3,4,5]", [In([2, 1, 3, 4]), In([3, 4, 5])], matmul_fn)
case("matmul", "trans_a [4,3]^T @ trans_b [5,4]^T", [In([4, 3]), In([5, 4])], matmul_fn,
     {"trans_a": True, "trans_b": True})
case("matmul", "batched trans_b [2,3,4] @ [2,5,4]^T", [In([2, 3, 4]), In([2, 5, 4])], matmul_fn, {"trans_b": True})
case("matmul", "transposed inputs [3,4] @ [4,5]", [In([3, 4], storage_order=T2), In([4, 5], storage_order=T2)],
     matmul_fn)
case("matmul", "vector [4] @ [4,5]", [In([4]), In([4, 5])], matmul_fn)
case("matmul", "[2,3,4] @ vector [4]", [In([2, 3, 4]), In([4])], matmul_fn)
case("matmul", "vector [4] @ vector [4]", [In([4]), In([4])], matmul_fn)
linear_fn = lambda p, x, w, b=None: F.linear(x, w, b)
case("linear", "x [2,3,4], W [5,4], b [5]", [In([2, 3, 4]), In([5, 4]), In([5])], linear_fn)
case("linear", "x [3,4], W [5,4], no bias", [In([3, 4]), In([5, 4])], linear_fn)
case("linear", "transposed x [6,4], W [3,4], b [3]", [In([6, 4], storage_order=T2), In([3, 4]), In([3])], linear_fn)

# ---------------------------------------------------------------- reductions


def reduce_fn(torch_op):
    def fn(p, x):
        if "dims" not in p:
            return torch_op(x)
        return torch_op(x, dim=p["dims"], keepdim=p["keepdim"])
    return fn


for name, f in (("sum", torch.sum), ("mean", torch.mean)):
    case(name, "all of [3,4]", [In([3, 4])], reduce_fn(f))
    case(name, "dim 1 of [2,3,4]", [In([2, 3, 4])], reduce_fn(f), {"dims": [1], "keepdim": False})
    case(name, "dims 0,2 of [2,3,4], keepdim", [In([2, 3, 4])], reduce_fn(f), {"dims": [0, 2], "keepdim": True})
    case(name, "dim -1 of transposed [5,3]", [In([5, 3], storage_order=T2)], reduce_fn(f),
         {"dims": [-1], "keepdim": False})
case("max", "dim 1 of [2,3,4]", [In([2, 3, 4])], reduce_fn(torch.amax), {"dims": [1], "keepdim": False})
case("max", "dims 0,2 of [2,3,4], keepdim", [In([2, 3, 4])], reduce_fn(torch.amax), {"dims": [0, 2], "keepdim": True})
case("max", "dim 0 of transposed [5,3]", [In([5, 3], storage_order=T2)], reduce_fn(torch.amax),
     {"dims": [0], "keepdim": False})
case("min", "dim 1 of [2,3,4]", [In([2, 3, 4])], reduce_fn(torch.amin), {"dims": [1], "keepdim": False})
case("min", "dims 0,1 of transposed [4,3], keepdim", [In([4, 3], storage_order=T2)], reduce_fn(torch.amin),
     {"dims": [0, 1], "keepdim": True})

# ---------------------------------------------------------------- views and shape ops
reshape_fn = lambda p, x: x.reshape(p["shape"])
case("reshape", "[2,3,4] -> [6,4]", [In([2, 3, 4])], reshape_fn, {"shape": [6, 4]})
case("reshape", "transposed [4,6] -> [-1] (copies)", [In([4, 6], storage_order=T2)], reshape_fn, {"shape": [-1]})
case("transpose", "dims 0,2 of [2,3,4]", [In([2, 3, 4])], lambda p, x: x.transpose(p["d0"], p["d1"]),
     {"d0": 0, "d1": 2})
case("permute", "[2,3,4] by [2,0,1]", [In([2, 3, 4])], lambda p, x: x.permute(p["order"]), {"order": [2, 0, 1]})


def slice_fn(p, x):
    index = [slice(None)] * x.dim()
    index[p["dim"]] = slice(p["start"], p["end"], p["step"])
    return x[tuple(index)]


case("slice", "dim 1 of [2,6,3], 1:5:2", [In([2, 6, 3])], slice_fn, {"dim": 1, "start": 1, "end": 5, "step": 2})
case("slice", "dim 0 of transposed [5,4], 2:5", [In([5, 4], storage_order=T2)], slice_fn,
     {"dim": 0, "start": 2, "end": 5, "step": 1})
case("expand", "[3,1] -> [2,3,4]", [In([3, 1])], lambda p, x: x.expand(p["shape"]), {"shape": [2, 3, 4]})
case("contiguous", "transposed [4,3]", [In([4, 3], storage_order=T2)], lambda p, x: x.contiguous())
case("to_dtype", "to float64", [In([3, 4])], lambda p, x: x.to(torch.float64), {"dtype": "float64"}, "float64")
case("to_dtype", "to float32", [In([3, 4])], lambda p, x: x.to(torch.float32), {"dtype": "float32"}, "float32")
cat_fn = lambda p, *xs: torch.cat(xs, dim=p["dim"])
case("concat", "[2,1,4], [2,3,4], [2,2,4] on dim 1", [In([2, 1, 4]), In([2, 3, 4]), In([2, 2, 4])], cat_fn, {"dim": 1})
case("concat", "transposed [3,2] and [3,4] on dim -1", [In([3, 2], storage_order=T2), In([3, 4])], cat_fn, {"dim": -1})

# ---------------------------------------------------------------- softmax
for name, f in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
    fn = lambda p, x, f=f: f(x, dim=p["dim"])
    case(name, "dim -1 of [3,7]", [In([3, 7], "normal")], fn, {"dim": -1})
    case(name, "dim 1 of [2,5,3]", [In([2, 5, 3])], fn, {"dim": 1})
    case(name, "dim -1 of transposed [4,6]", [In([4, 6], storage_order=T2)], fn, {"dim": -1})

# ---------------------------------------------------------------- norms
ln_fn = lambda p, x, g=None, b=None: F.layer_norm(x, [x.shape[-1]], g, b, p["eps"])
case("layer_norm", "x [2,3,8], gamma, beta", [In([2, 3, 8]), In([8]), In([8])], ln_fn, {"eps": 1e-5})
case("layer_norm", "no affine, x [4,6]", [In([4, 6])], ln_fn, {"eps": 1e-5})
case("layer_norm", "transposed x [5,6], eps 1e-3", [In([5, 6], storage_order=T2), In([6]), In([6])], ln_fn,
     {"eps": 1e-3})
rms_fn = lambda p, x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + p["eps"]) * w
case("rms_norm", "x [2,3,8], weight", [In([2, 3, 8]), In([8])], rms_fn, {"eps": 1e-6})
case("rms_norm", "transposed x [5,6], eps 1e-2", [In([5, 6], storage_order=T2), In([6])], rms_fn, {"eps": 1e-2})
l2_fn = lambda p, x: F.normalize(x, dim=-1, eps=p["eps"])
case("l2_norm", "[2,3,8]", [In([2, 3, 8])], l2_fn, {"eps": 1e-12})
case("l2_norm", "every other element [4,5]", [In([4, 5], step=2)], l2_fn, {"eps": 1e-12})

# ---------------------------------------------------------------- embedding, cross entropy
emb_fn = lambda p, weight, ids: F.embedding(ids, weight,
                                            padding_idx=p["padding_idx"] if p["padding_idx"] >= 0 else None)
case("embedding", "V=10 d=4, ids [2,5] repeated, padding_idx 0",
     [In([10, 4]), In([2, 5], "int64", [3, 0, 7, 3, 3, 9, 0, 1, 7, 2])], emb_fn, {"padding_idx": 0})
case("embedding", "V=6 d=3, ids [7] repeated, no padding", [In([6, 3]), In([7], "int64", [5, 1, 5, 0, 2, 5, 1])],
     emb_fn, {"padding_idx": -1})


def ce_fn(p, logits, targets):
    v = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), ignore_index=p["ignore_index"],
                           reduction=p["reduction"], label_smoothing=p["label_smoothing"])
    return loss.reshape(targets.shape) if p["reduction"] == "none" else loss


def ce_by_hand(p, logits, targets):
    """The same loss composed from log_softmax, to check torch's own definition before trusting it."""
    logp = torch.log_softmax(logits, dim=-1)
    keep = targets != p["ignore_index"]
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    ls = p["label_smoothing"]
    loss = ((1 - ls) * nll + ls * (-logp.mean(-1))) * keep
    if p["reduction"] == "none":
        return loss
    return loss.sum() if p["reduction"] == "sum" else loss.sum() / keep.sum()


targets6 = [2, -100, 6, 0, 2, 4]
for reduction in ("mean", "sum", "none"):
    case("cross_entropy", f"[6,7], label smoothing 0.1, one ignored target, {reduction}",
         [In([6, 7]), In([6], "int64", targets6)], ce_fn,
         {"ignore_index": -100, "label_smoothing": 0.1, "reduction": reduction})
case("cross_entropy", "[2,3,5] logits, ignore_index 1, no smoothing, mean",
     [In([2, 3, 5]), In([2, 3], "int64", [1, 4, 0, 1, 3, 3])], ce_fn,
     {"ignore_index": 1, "label_smoothing": 0.0, "reduction": "mean"})
case("cross_entropy", "transposed logits [4,6], label smoothing 0.1, mean",
     [In([4, 6], storage_order=T2), In([4], "int64", [5, 0, 3, 3])], ce_fn,
     {"ignore_index": -100, "label_smoothing": 0.1, "reduction": "mean"})

# ---------------------------------------------------------------- masked_fill, where
mf_fn = lambda p, x, mask: x.masked_fill(mask.bool(), p["value"])
case("masked_fill", "[3,4] with [3,4] mask", [In([3, 4]), In([3, 4], "mask", [1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0])],
     mf_fn, {"value": -2.5})
case("masked_fill", "[2,3,4] with broadcast [4] mask", [In([2, 3, 4]), In([4], "mask", [0, 1, 1, 0])], mf_fn,
     {"value": 7.0})
case("masked_fill", "transposed [4,3] with [4,1] mask",
     [In([4, 3], storage_order=T2), In([4, 1], "mask", [1, 0, 0, 1])], mf_fn, {"value": 0.0})
where_fn = lambda p, cond, a, b: torch.where(cond.bool(), a, b)
case("where", "cond [3,4], a [3,4], b [3,4]",
     [In([3, 4], "mask", [1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1]), In([3, 4]), In([3, 4])], where_fn)
case("where", "cond [3,1], a [3,4], broadcast b [4]", [In([3, 1], "mask", [1, 0, 1]), In([3, 4]), In([4])], where_fn)
case("where", "cond [2,1,4], transposed a [4,3]^T, b [1]",
     [In([2, 1, 4], "mask", [0, 1, 1, 0, 1, 1, 0, 0]), In([3, 4], storage_order=T2), In([1])], where_fn)

# ---------------------------------------------------------------- attention


def attention_fn(p, q, k, v, key_padding_mask=None):
    """softmax(q k^T * scale + mask) v composed from plain torch ops; a fully masked row gives zeros."""
    tq, tk, dh = q.shape[2], k.shape[2], q.shape[3]
    scale = p["scale"] if p["scale"] != -1 else dh ** -0.5
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    masked = torch.zeros(q.shape[0], 1, tq, tk, dtype=torch.bool)
    if p["causal"]:  # key j is in the future of query i when j > i + (tk - tq)
        i = torch.arange(tq).unsqueeze(1)
        j = torch.arange(tk).unsqueeze(0)
        masked = masked | (j > i + (tk - tq))
    if key_padding_mask is not None:
        masked = masked | key_padding_mask.bool()[:, None, None, :]
    row_dead = masked.all(-1, keepdim=True)
    masked = masked & ~row_dead  # a fully masked row: any finite scores, zeroed after the softmax
    probs = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1) * (~row_dead).to(q.dtype)
    return torch.matmul(probs, v)


B, H, TQ, TK, DH = 2, 2, 4, 5, 3
case("attention", "no mask, q [2,2,4,3], kv [2,2,5,3]", [In([B, H, TQ, DH]), In([B, H, TK, DH]), In([B, H, TK, DH])],
     attention_fn, {"causal": False, "scale": -1})
case("attention", "causal Tq=Tk=4, q/k/v as [B,T,H,dh] views",
     [In([B, H, 4, DH], storage_order=[0, 2, 1, 3]), In([B, H, 4, DH], storage_order=[0, 2, 1, 3]),
      In([B, H, 4, DH], storage_order=[0, 2, 1, 3])], attention_fn, {"causal": True, "scale": -1})
case("attention", "key padding mask, batch 1 fully masked, scale 0.3",
     [In([B, H, TQ, DH]), In([B, H, TK, DH]), In([B, H, TK, DH]), In([B, TK], "mask", [0, 0, 1, 0, 1, 1, 1, 1, 1, 1])],
     attention_fn, {"causal": False, "scale": 0.3})
case("attention", "causal Tq=5 > Tk=4 (query 0 sees nothing) + key padding",
     [In([B, H, 5, DH]), In([B, H, 4, DH]), In([B, H, 4, DH]), In([B, 4], "mask", [0, 0, 0, 1, 0, 1, 0, 0])],
     attention_fn, {"causal": True, "scale": -1})
case("attention", "causal Tq=2 < Tk=5 (decoder with a cache)",
     [In([B, H, 2, DH]), In([B, H, TK, DH]), In([B, H, TK, DH])], attention_fn, {"causal": True, "scale": -1})

# ---------------------------------------------------------------- added later (at the end, so earlier cases keep
# their seeds)
cumsum_fn = lambda p, x: torch.cumsum(x, dim=p["dim"])
case("cumsum", "dim 1 of [2,3,4]", [In([2, 3, 4])], cumsum_fn, {"dim": 1})
case("cumsum", "dim -1 of transposed [5,3]", [In([5, 3], storage_order=T2)], cumsum_fn, {"dim": -1})
gather_fn = lambda p, x, index: torch.gather(x, p["dim"], index)
case("gather", "dim 1 of [3,4], repeated indices", [In([3, 4]), In([3, 2], "int64", [3, 3, 0, 1, 2, 2])],
     gather_fn, {"dim": 1})
case("gather", "dim 0 of transposed [4,3], index [2,2] smaller on dim 1",
     [In([4, 3], storage_order=T2), In([2, 2], "int64", [3, 0, 1, 1])], gather_fn, {"dim": 0})



def rotary_fn(p, x, cos, sin):
    """RoPE, GPT-NeoX's half split: x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin], rotate_half(x) = [-x2, x1]."""
    h = x.shape[-1] // 2
    c, s = torch.cat([cos, cos], -1)[:, None], torch.cat([sin, sin], -1)[:, None]
    return x * c + torch.cat([-x[..., h:], x[..., :h]], -1) * s


# (the rotary cases were appended to the committed file on 2026-12-06 without rewriting its earlier lines, which a
# rerun moves by rounding in a few matmul and reshape cases)
case("rotary", "x [2,2,3,4], angles [2,3,2]", [In([2, 2, 3, 4]), In([2, 3, 2], grad=False), In([2, 3, 2], grad=False)],
     rotary_fn)
case("rotary", "x a [B,T,H,dh] view, angles [1,T,h] for every batch entry",
     [In([2, 2, 3, 6], storage_order=[0, 2, 1, 3]), In([1, 3, 3], grad=False), In([1, 3, 3], grad=False)], rotary_fn)

# DyT (Zhu et al. 2025), as its authors' DynamicTanh module computes it: tanh(alpha * x) * weight + bias. (Appended
# on 2026-12-07 as the rotary cases were: the committed file's earlier lines were kept.)
dyt_fn = lambda p, x, alpha, w=None, b=None: (torch.tanh(alpha * x) * (1 if w is None else w)
                                             + (0 if b is None else b))
case("dyt", "x [2,3,8], alpha [1], weight, bias", [In([2, 3, 8]), In([1], "positive"), In([8]), In([8])], dyt_fn)
case("dyt", "transposed x [5,6], no weight or bias", [In([5, 6], storage_order=T2), In([1], "positive")], dyt_fn)

# ---------------------------------------------------------------- running and writing

EXCLUDED = {
    "dropout": "its mask comes from skipgrad's own counter-based RNG, not torch's; its statistics (keeps about "
               "1-p, scales by 1/(1-p), seeded) are tested in the ops_nn suite and its gradient in gradcheck",
    "to_device": "CPU -> CPU is the identity and CI has no second device; the cuda suite tests transfers",
}


def fmt(values, dtype):
    """JSON numbers, shortest round-trip text for the dtype (float32 values read back as doubles, then rounded
    to float32, give the same float32)."""
    if dtype == "float32":
        return [float(str(np.float32(v))) for v in values]
    if dtype == "float64":
        return [float(v) for v in values]
    return [int(v) for v in values]


def torch_dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def run_case(index, c, dtype):
    rng = np.random.default_rng(1000 + index)  # the same draws for both dtypes
    tensors, records = [], []
    for inp in c["inputs"]:
        raw = inp.draw(rng)
        if inp.kind in ("int64", "mask"):
            t = torch.tensor(raw, dtype=torch.int64).reshape(inp.shape)
            kind = inp.kind
        else:
            t = torch.tensor(raw, dtype=torch_dtype(dtype)).reshape(inp.shape).requires_grad_(inp.grad)
            kind = "float"
        values = fmt(t.detach().reshape(-1).tolist(), dtype if kind == "float" else "int")
        rec = {"kind": kind, "shape": inp.shape, "data": values}
        if inp.storage_order:
            rec["storage_order"] = inp.storage_order
        if inp.step:
            rec["step"] = inp.step
        rec["requires_grad"] = inp.grad
        tensors.append(t)
        records.append(rec)
    out = c["fn"](c["params"], *tensors)
    out_dtype = c["out_dtype"] or dtype
    assert out.dtype == torch_dtype(out_dtype), (c["op"], out.dtype)
    w = torch.tensor(np.random.default_rng(5000 + index).standard_normal(max(out.numel(), 1)),
                     dtype=out.dtype)[: out.numel()].reshape(out.shape)
    (out * w).sum().backward()
    for t, rec in zip(tensors, records):
        if rec["requires_grad"]:
            assert t.grad is not None, (c["op"], c["label"])
            rec["grad"] = fmt(t.grad.reshape(-1).tolist(), dtype)
    if c["op"] == "cross_entropy":  # torch's definition must agree with the formula skipgrad documents
        by_hand = ce_by_hand(c["params"], *[t.detach() for t in tensors])
        assert torch.allclose(by_hand, out.detach(), rtol=1e-5, atol=1e-6), (c["label"], by_hand, out)
    return {
        "op": c["op"], "label": c["label"], "dtype": dtype, "params": c["params"], "inputs": records,
        "output": {"dtype": out_dtype, "shape": list(out.shape),
                   "data": fmt(out.detach().reshape(-1).tolist(), out_dtype)},
        "w": fmt(w.reshape(-1).tolist(), out_dtype),
    }


def torch_package():
    """Where this torch came from: the Debian package version when it is one, else pip's."""
    try:
        return "python3-torch " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "torch " + torch.__version__ + " (" + os.path.dirname(torch.__file__) + ")"


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    results = []
    for i, c in enumerate(CASES):
        for dtype in ("float32", "float64"):
            if c["op"] == "to_dtype" and c["params"]["dtype"] == dtype:
                continue  # a cast to the same dtype is not a cast
            results.append(run_case(i, c, dtype))
    doc = {
        "generator": "scripts/make_reference.py",
        "torch_version": torch.__version__,
        "torch_package": torch_package(),
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "excluded": EXCLUDED,
        "cases": results,
    }
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:  # one case per line, so a diff shows which cases changed
        head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=1)
        f.write(head[:-2] + ',\n "cases": [\n')
        f.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in results))
        f.write("\n ]\n}\n")
    print(f"wrote {len(results)} cases ({len(CASES)} x float32/float64) to {os.path.normpath(OUT_PATH)}, "
          f"{os.path.getsize(OUT_PATH)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main()
