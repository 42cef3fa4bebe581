#!/usr/bin/python3
# Writes tests/reference/transformer_<case>.safetensors: an independent PyTorch (float64) reference of skipgrad's
# encoder-decoder Transformer for every topology, lm_<case>.safetensors, the decoder-only language model (C16),
# and positions_<case>.safetensors, learned positions and RoPE (C17). tests/test_transformer_reference.cpp builds
# the same model in skipgrad (float64), loads these weights, and compares logits, loss and every parameter gradient
# (1e-9 relative).
# CI never needs torch: the files are committed; re-run this script only when a case changes.
#
# The committed files were produced by Debian bookworm's python3-torch 1.13.1+dfsg-4 (torch.__version__ "1.13.0a0",
# CPU) with numpy 1.24.2:   apt-get install -y python3-torch && /usr/bin/python3 scripts/make_transformer_reference.py
# A later run on another machine reproduces them to rounding (~1e-16, BLAS summation order), not bit for bit; the
# lm_* and positions_* files were added on 2026-12-06 without rewriting the transformer_* files (git checkout them
# after a run).
# The safetensors format is written by hand (write_safetensors below), so the `safetensors` package is not needed.
#
# The layer equations are written here from /work/shared/TOPOLOGIES.md (§0-§5), NOT translated from the C++.
# What had to be copied from skipgrad because it is a convention of ours, not an equation of the spec:
#   C1  parameter names ("enc.0.self_attn.q_proj.weight", "dec.1.cross_attn_out_norm.bias", "enc.final_norm.weight",
#       "enc.embed_norm.weight", ...) and one shared table "embed.weight" (source, target and output).
#   C2  sinusoidal positions: fairseq's table, row p = [sin(p·w_i), cos(p·w_i)], w_i = exp(-i·ln(10000)/(d/2-1));
#       skipgrad computes each entry in double and rounds it to float32 (the table is a float32 buffer, cast to
#       float64 with the model), so this script does the same (math.sin/cos/exp, then float32). Non-pad tokens count
#       positions from pad_id+1, pad tokens read the all-zero row pad_id (fairseq make_positions).
#   C3  embedding: x = √d·E[tok] + PE; the encoder then zeroes pad positions, the decoder does not (fairseq).
#   C4  masks: key padding mask in every attention (the decoder's self-attention masks target pads too, as fairseq
#       does), causal mask j > i in decoder self-attention; masked scores are -inf. No row here is fully masked.
#   C5  attention scale 1/√d_h on Q·Kᵀ, after the per-head norms; output of the tied model = features·Eᵀ, no bias.
#   C6  per-head Q/K/V norms (HybridNorm): one weight (and, for LayerNorm, bias) of size d_h shared by all heads,
#       of the model's norm kind (LN or RMS), ε = norm_eps; applied after the head split.
#   C7  HybridNorm's encoder-decoder adaptation (§4.8, ours): decoder block Y1 = X + SA_QKV(X),
#       Y2 = Y1 + CA_QKV(Y1, enc), U = N(Y2), X' = U + F(U); HybridNorm* block 0 of each stack is Pre-Norm for all its
#       sublayers (with QKV norms); final norm on both stacks.
#   C8  DeepNorm: x ← LN(α·x + G(x)) with the paper/xformers enc-dec α: encoder 0.81·(N⁴M)^{1/16},
#       decoder (3M)^{1/4}.
#   C9  ResiDual: s = 1, α = 1, final-norm ε = 1e-7 and of the model's norm kind; the dual stream starts from the
#       (pad-zeroed) embedding.
#   C10 Sandwich/Peri-LN: the output norm is applied to the branch before the residual add (dropout would sit after
#       it); Peri-LN always has the embedding norm ("embed_norm", after the encoder's pad zeroing) plus final norms.
#   C11 Mix-LN: the first k layers of each stack are Post-LN, k = mixln_post_layers = 1 here (skipgrad's default
#       floor(L/4) would be 0 for L = 2, i.e. plain Pre-LN); always a final norm.
#   C12 loss: fairseq label smoothing, eps spread over the V-1 wrong classes:
#       loss_i = (1 - eps - eps/(V-1))·nll_i + eps/(V-1)·Σ_j -log p_j, mean over non-pad targets.
#   C13 norm ε: cfg.norm_eps = 1e-5 for every LN/RMS (and head norm) except ResiDual's final norm.
#   C14 ReZero: one α per layer ("enc.0.rezero_alpha", shape [1]) scales all its sublayers (the ReZero authors'
#       layer); Admin: one ω per sublayer ("enc.0.self_attn_omega", [d]); neither has a final norm. Their values
#       here are random (α ≈ 0.5, ω ≈ 1), not the α = 0 init or Admin's profiled ω, so that every term counts.
#   C15 Admin's profiling pass (admin.safetensors also holds its result, "profiled.*"): ratio r = 1 at the start of
#       each stack (the decoder restarts), variances over all elements of the batch (pads included, population
#       variance), no dropout.
#   C16 decoder-only (enc_layers 0): no "enc.*" parameter, no cross-attention (nor its norms, ω); the decoder stack
#       as above with its causal + key-padding self-attention; DeepNorm's decoder-only α = (2M)^{1/4} (§5.1 table).
#   C17 positions (positions_<case>.safetensors; the config's "positions"): "learned" adds row p of a trained table
#       "embed_positions.weight" [max_positions + pad_id + 1, d] instead of the sinusoidal row (p as in C2, the pad
#       row zero); "rope" adds nothing and rotates q and k of every self-attention (never cross-attention) after the
#       per-head norms, GPT-NeoX's half split (RoFormer eq. 34 with the pairs (i, i + d_h/2)):
#       q' = q ⊙ cos θ + rotate_half(q) ⊙ sin θ, rotate_half(q) = [-q_{d_h/2:}, q_{:d_h/2}], θ_{n,i} = n·base^(-2i/d_h)
#       for the n-th non-pad token of its row (from 0; pads angle 0); cos θ and sin θ computed in double and rounded
#       to float32, as C2's table (skipgrad stores them as float32 buffers); with "rope_dims" r (partial rotary,
#       GPT-NeoX's rotary_ndims) only the first r dims of each head rotate, θ_{n,i} = n·base^(-2i/r), and the rest
#       pass unchanged; "alibi" adds nothing and adds
#       -m_h·|p_i − p_j| to the score of query i and key j in head h of every self-attention (never cross-attention),
#       p as in C2, m the ALiBi paper's get_slopes(H) (Press et al. 2022, their code: 2^(-8h/H) for H a power of
#       two), rounded to float32 (skipgrad's buffer); a decoder's keys are never after its query, so this is the
#       paper's -m·(i − j), and an encoder's is symmetric; "t5" adds nothing and adds
#       table[bucket(p_j − p_i), h] to the score of query i and key j in head h of every self-attention (never
#       cross-attention), p as in C2, bucket Hugging Face's T5Attention._relative_position_bucket (bidirectional in
#       the encoder, not in the decoder; relative_buckets, relative_max_distance from the config), one table per
#       stack, "enc.relative_bias.weight" and "dec.relative_bias.weight" [relative_buckets, H], shared by its
#       layers; "none" adds nothing and rotates nothing.
#   C18 B2T (not in TOPOLOGIES.md; Takase et al. 2023, their fairseq transformer_layer.py with
#       residual_bottom_to_top): Post-LN whose last sublayer's norm reads (h + F(h)) + x, x the layer's input; no
#       final norm. (Its L^-1/2 rescaling of the weights at init does not enter here: the weights are given.)
#   C19 LayerScale (not in TOPOLOGIES.md; CaiT, Touvron et al. 2021, and timm's LayerScale): Pre-LN with each
#       branch times a vector λ [d] of its own ("enc.0.self_attn_layer_scale"), final norm; λ random (≈ 0.5) here,
#       not CaiT's small init.
#   C20 Sub-LN (not in TOPOLOGIES.md; Magneto, Wang et al. 2022, torchscale's subln): Pre-LN plus a norm of the
#       merged heads before the self-attention's out_proj ("<layer>.self_attn.inner_norm") and of the activation
#       before fc2 ("<layer>.ffn.inner_norm", over d_ff); none in cross-attention; final norm. (Its γ scaling of the
#       init does not enter here: the weights are given.)
#   C21 NormFormer (not in TOPOLOGIES.md; Shleifer et al. 2021, arXiv 2110.09456, written from the paper's
#       equations): Pre-LN whose self-attention scales head h's output by γ_h before the heads merge
#       ("<layer>.self_attn.head_scale" [H]: concat_h(γ_h·o_h), then out_proj), with a norm on that branch's output
#       ("<layer>.self_attn_out_norm") and a norm of the FFN's activation before fc2 ("<layer>.ffn.inner_norm",
#       over d_ff); cross-attention Pre-LN's; final norm. γ random (≈ 1) here. Case "normformer_resids" adds the
#       option normformer_scale_resids (fairseq's --scale-resids): the FFN's skip times λ ("<layer>.ffn_resid_scale"
#       [d], random ≈ 1 here), x = λ ⊙ x + F(LN(x)). Case "normformer_fairseq": HeadScale as fairseq's code
#       (transformer_layer.py, c_attn) instead: out_proj's output [T, B, d] viewed as [T, B, H, d_h], einsum
#       "tbhd,h->tbdh", reshaped to d (which also transposes the channels), then the out norm.
#   C22 T-Fixup (not in TOPOLOGIES.md; Huang et al. 2020, their fairseq fork with --dont-use-layernorm): no norm at
#       all, x = x + f(x) per sublayer, no final norm. The random weights get its init's scales (v/out/fc1/fc2 by
#       0.67·N^-1/4 or (9M)^-1/4, the table by (9N)^-1/4), so that the stream stays in range without a norm.
#   C23 DyT (not in TOPOLOGIES.md; Zhu et al. 2025, "Transformers without Normalization", their DynamicTanh module):
#       norm "dyt" puts tanh(α·x)·w + b in every norm's place ("<norm>.alpha" [1], "<norm>.weight", "<norm>.bias";
#       α random ≈ 0.5 here, its init α0 does not enter). Cases "pre_ln_dyt" and "post_ln_dyt" (appended on
#       2026-12-07; the other files were kept).
# Dropout is 0 everywhere, so where the dropouts sit does not enter the numbers.
#
# Model: vocab 13, d 8, 2 heads (d_h 4), ffn 32, 2+2 layers, pad_id 0, shared embeddings, LayerNorm (plus RMSNorm
# cases for pre_ln and hybrid_norm). d is 8, not 16, to keep the twenty files (weights + gradients in float64)
# about 1.7 MB together. Weights are random (torch.manual_seed), norm gains around 1 and biases around 0 so that a
# swapped or missing norm shows.
#
# Each file holds: every parameter under skipgrad's name (float64), "grad.<name>" the gradient of the loss with
# respect to it, "src_ids" [B,S], "tgt_in_ids" [B,T], "tgt_out_ids" [B,T] (int64), "logits" [B,T,V], "loss" [],
# and the config as string metadata (topology, norm, vocab, d_model, heads, d_ff, enc_layers, dec_layers, pad_id,
# norm_eps, mixln_post_layers, label_smoothing).
import json
import math
import os
import struct

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference")

CONFIG = dict(vocab=13, d_model=8, heads=2, d_ff=32, enc_layers=2, dec_layers=2, pad_id=0, norm_eps=1e-5,
              mixln_post_layers=1, label_smoothing=0.1)
# (file case, topology, norm[, config entries])
CASES = [("post_ln", "post_ln", "layer_norm"), ("pre_ln", "pre_ln", "layer_norm"),
         ("pre_ln_rms", "pre_ln", "rms_norm"), ("resi_dual", "resi_dual", "layer_norm"),
         ("hybrid_norm", "hybrid_norm", "layer_norm"), ("hybrid_norm_rms", "hybrid_norm", "rms_norm"),
         ("hybrid_norm_star", "hybrid_norm_star", "layer_norm"), ("deep_norm", "deep_norm", "layer_norm"),
         ("sandwich_ln", "sandwich_ln", "layer_norm"), ("peri_ln", "peri_ln", "layer_norm"),
         ("mix_ln", "mix_ln", "layer_norm"), ("res_post_norm", "res_post_norm", "layer_norm"),
         ("rezero", "rezero", "layer_norm"), ("admin", "admin", "layer_norm"), ("b2t", "b2t", "layer_norm"),
         ("layer_scale", "layer_scale", "layer_norm"), ("sub_ln", "sub_ln", "layer_norm"),
         ("normformer", "normformer", "layer_norm"),
         ("normformer_resids", "normformer", "layer_norm", dict(normformer_scale_resids=True)),
         ("t_fixup", "t_fixup", "layer_norm"),
         ("normformer_fairseq", "normformer", "layer_norm", dict(normformer_fairseq_head_scale=True)),
         ("pre_ln_dyt", "pre_ln", "dyt"), ("post_ln_dyt", "post_ln", "dyt")]

# A fixed batch, right-padded with pad_id 0 (B=2, S=5, T=4); 2 plays eos/bos.
SRC = [[4, 5, 6, 7, 2], [8, 9, 2, 0, 0]]
TGT_IN = [[2, 10, 11, 12], [2, 5, 0, 0]]
TGT_OUT = [[10, 11, 12, 2], [5, 2, 0, 0]]

# Decoder-only language models (enc_layers 0; tests/reference/lm_<case>.safetensors, the same keys without
# "src_ids"): the decoder's layers lose their cross-attention sublayer and nothing else changes (C16). Three layers,
# a batch of two right-padded sequences (B=2, T=6) and their next tokens.
LM_CONFIG = dict(CONFIG, enc_layers=0, dec_layers=3)
LM_IN = [[2, 10, 11, 12, 4, 5], [2, 5, 6, 0, 0, 0]]
LM_OUT = [[10, 11, 12, 4, 5, 2], [5, 6, 2, 0, 0, 0]]

# Other position encodings (C17; tests/reference/positions_<case>.safetensors): (case, topology, norm, model kind,
# positions). The test builds its models with max_positions 64, which sizes the learned table.
POSITION_CASES = [("lm_rope_pre_ln", "pre_ln", "layer_norm", "lm", "rope"),
                  ("lm_rope_hybrid_norm", "hybrid_norm", "rms_norm", "lm", "rope"),
                  ("lm_learned_post_ln", "post_ln", "layer_norm", "lm", "learned"),
                  ("transformer_rope_resi_dual", "resi_dual", "layer_norm", "transformer", "rope"),
                  ("lm_nope_peri_ln", "peri_ln", "layer_norm", "lm", "none"),
                  ("lm_alibi_post_ln", "post_ln", "layer_norm", "lm", "alibi"),
                  ("transformer_alibi_hybrid_norm", "hybrid_norm", "layer_norm", "transformer", "alibi"),
                  ("lm_rope_partial_pre_ln", "pre_ln", "layer_norm", "lm", "rope", dict(rope_dims=2)),
                  # 8 buckets up to distance 5: the batch's distances (up to 5) reach the log-spaced buckets and the
                  # last one
                  ("lm_t5_pre_ln", "pre_ln", "layer_norm", "lm", "t5", dict(relative_buckets=8,
                                                                             relative_max_distance=5)),
                  ("transformer_t5_post_ln", "post_ln", "layer_norm", "transformer", "t5",
                   dict(relative_buckets=8, relative_max_distance=5))]
POSITION_CONFIG = dict(max_positions=64, rope_theta=10000.0)


# ---------------------------------------------------------------- building blocks (TOPOLOGIES.md §0)

def layer_norm(x, p, eps):  # γ ⊙ (x − mean) / sqrt(var + ε) + β, biased variance over the last dim
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * p["weight"] + p["bias"]


def rms_norm(x, p, eps):  # w ⊙ x / sqrt(mean(x²) + ε)
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * p["weight"]


def dyt(x, p):  # C23: tanh(α x) ⊙ w + b, no statistics of x
    return torch.tanh(p["alpha"] * x) * p["weight"] + p["bias"]


class Ref:
    """The model as functions of a dict of named parameters."""

    def __init__(self, cfg, topology, norm, params):
        self.cfg, self.topo, self.norm_kind, self.P = cfg, topology, norm, params
        self.d, self.h = cfg["d_model"], cfg["heads"]
        self.dh = self.d // self.h
        self.eps = cfg["norm_eps"]
        self.profile = None  # Admin's profiling pass: {"enc": r, "dec": r} while it runs (admin_profiled)

    def sub(self, prefix):
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.P.items() if k.startswith(prefix + ".")}

    def N(self, name, x, eps=None):
        p = self.sub(name)
        e = self.eps if eps is None else eps
        if self.norm_kind == "dyt":
            return dyt(x, p)
        return layer_norm(x, p, e) if self.norm_kind == "layer_norm" else rms_norm(x, p, e)

    def linear(self, name, x):
        return x @ self.P[name + ".weight"].T + self.P[name + ".bias"]

    # fairseq MHA (§0): Q = x W_q + b_q etc., per head softmax(Q Kᵀ/√d_h + mask) V, then W_o; optional per-head
    # norms on q, k, v (§4.2 / C6).
    def mha(self, name, q_in, kv_in, key_pad, causal, qkv_norm, rope=None, alibi=None, t5=None):
        B, Tq, _ = q_in.shape
        Tk = kv_in.shape[1]
        split = lambda t, T: t.reshape(B, T, self.h, self.dh).transpose(1, 2)  # [B, H, T, d_h]
        q = split(self.linear(name + ".q_proj", q_in), Tq)
        k = split(self.linear(name + ".k_proj", kv_in), Tk)
        v = split(self.linear(name + ".v_proj", kv_in), Tk)
        if qkv_norm:
            q, k, v = self.N(name + ".q_norm", q), self.N(name + ".k_norm", k), self.N(name + ".v_norm", v)
        if rope is not None:  # C17: (cos θ, sin θ) [B, T, d_h/2] of the self-attention's positions
            q, k = rotate(q, *rope), rotate(k, *rope)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
        if alibi is not None:  # C17: (m [H], p [B, T]) of the self-attention's tokens
            m, p = alibi
            distance = (p[:, None, :, None] - p[:, None, None, :]).abs().to(scores.dtype)  # [B, 1, T, T]
            scores = scores - m[None, :, None, None] * distance
        if t5 is not None:  # C17: the stack's bias [B, H, T, T]
            scores = scores + t5
        mask = key_pad[:, None, None, :].expand(B, 1, Tq, Tk).clone()
        if causal:
            mask = mask | torch.ones(Tq, Tk, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        o = torch.softmax(scores, -1) @ v
        if name + ".head_scale" in self.P and not self.cfg.get("normformer_fairseq_head_scale"):  # C21: γ_h · o_h
            o = o * self.P[name + ".head_scale"][None, :, None, None]
        o = o.transpose(1, 2).reshape(B, Tq, self.d)
        if name + ".inner_norm.weight" in self.P:  # C20: Sub-LN's norm of the merged heads
            o = self.N(name + ".inner_norm", o)
        return self.linear(name + ".out_proj", o)

    def ffn(self, name, x):  # W_2 ReLU(W_1 x + b_1) + b_2 (C20, C21: W_2 LN(ReLU(W_1 x + b_1)) + b_2)
        h = torch.relu(self.linear(name + ".fc1", x))
        if name + ".inner_norm.weight" in self.P:
            h = self.N(name + ".inner_norm", h)
        return self.linear(name + ".fc2", h)

    # ---------------------------------------------------------------- one layer, per topology

    def layer(self, side, i, x, ctx, dual=None):
        pre = f"{side}.{i}"
        dec = side == "dec"
        cross = dec and self.cfg["enc_layers"] > 0  # C16
        qkv = self.topo.startswith("hybrid_norm")
        SA = lambda u: self.mha(pre + ".self_attn", u, u, ctx["self_pad"], dec, qkv, ctx.get("rope"),
                                ctx.get("alibi"), ctx.get("t5"))
        CA = lambda u: self.mha(pre + ".cross_attn", u, ctx["memory"], ctx["memory_pad"], False, qkv)
        F = lambda u: self.ffn(pre + ".ffn", u)
        N = lambda n, u: self.N(f"{pre}.{n}", u)
        subs = [("self_attn", SA)] + ([("cross_attn", CA)] if cross else []) + [("ffn", F)]
        t = self.topo
        if t == "mix_ln":
            t = "post_ln" if i < self.cfg["mixln_post_layers"] else "pre_ln"
        if t == "hybrid_norm_star":
            t = "pre_ln" if i == 0 else "hybrid_norm"

        if t == "post_ln":  # §1: x = LN(x + f(x))
            for n, f in subs:
                x = N(n + "_norm", x + f(x))
        elif t == "pre_ln":  # §2: x = x + f(LN(x))
            for n, f in subs:
                x = x + f(N(n + "_norm", x))
        elif t == "deep_norm":  # §5.1: x = LN(α·x + f(x))
            alpha = self.deepnorm_alpha(side)
            for n, f in subs:
                x = N(n + "_norm", alpha * x + f(x))
        elif t in ("sandwich_ln", "peri_ln"):  # §5.2/§5.3: x = x + LN_out(f(LN_in(x)))
            for n, f in subs:
                x = x + N(n + "_out_norm", f(N(n + "_norm", x)))
        elif t == "t_fixup":  # C22: x = x + f(x), no norm anywhere
            for n, f in subs:
                x = x + f(x)
        elif t == "res_post_norm":  # §5.4: x = x + N_out(f(x)), no input norm
            for n, f in subs:
                x = x + N(n + "_out_norm", f(x))
        elif t == "rezero":  # §5.7: x = x + α·f(x), one α per layer (C14)
            for n, f in subs:
                x = x + self.P[pre + ".rezero_alpha"] * f(x)
        elif t == "admin":  # §5.7: x = LN(x ⊙ ω + f(x)), one ω per sublayer (C14)
            for n, f in subs:
                omega = f"{pre}.{n}_omega"
                if self.profile is not None:  # ω ← r, then r ← sqrt(Var(x ⊙ ω) + Var(f(x))), over all elements
                    self.P[omega] = torch.full((self.d,), self.profile[side])
                skip, g = x * self.P[omega], f(x)
                if self.profile is not None:
                    self.profile[side] = math.sqrt(skip.var(unbiased=False).item() + g.var(unbiased=False).item())
                x = N(n + "_norm", skip + g)
        elif t == "sub_ln":  # C20: Pre-LN, and a norm before the output projection of SA and F (not CA)
            for n, f in subs:
                x = x + f(N(n + "_norm", x))
        elif t == "normformer":  # C21: x = x + LN_out(SA(LN(x))) with γ_h inside SA; CA, F as Pre-LN (F's mid norm)
            for n, f in subs:
                y = f(N(n + "_norm", x))
                if n == "self_attn":
                    if self.cfg.get("normformer_fairseq_head_scale"):  # fairseq's c_attn, as its code writes it
                        Bq, Tq, d = y.shape  # y [B, T, d] (fairseq's is [T, B, d]: "tbhd,h->tbdh")
                        y = torch.einsum("bthd,h->btdh", y.reshape(Bq, Tq, self.h, self.dh),
                                         self.P[pre + ".self_attn.head_scale"]).reshape(Bq, Tq, d)
                    y = N("self_attn_out_norm", y)
                if n == "ffn" and self.cfg.get("normformer_scale_resids"):  # ResScale: λ ⊙ x on the FFN's skip
                    x = self.P[pre + ".ffn_resid_scale"] * x
                x = x + y
        elif t == "layer_scale":  # C19: x = x + λ ⊙ f(LN(x)), one λ [d] per sublayer
            for n, f in subs:
                x = x + self.P[f"{pre}.{n}_layer_scale"] * f(N(n + "_norm", x))
        elif t == "b2t":  # C18: Post-LN, and the layer's input x added before its last norm: LN_ff(h + F(h) + x)
            bottom = x
            for n, f in subs[:-1]:
                x = N(n + "_norm", x + f(x))
            x = N("ffn_norm", x + F(x) + bottom)
        elif t == "resi_dual":  # §3.3/§3.4: o = f(x_a); x_d += o; x_a = LN(o + x_a)
            for n, f in subs:
                o = f(x)
                dual = dual + o
                x = N(n + "_norm", o + x)
        elif t == "hybrid_norm":  # §4.3 (+ §4.8 for the decoder): attention(s) on the raw stream, then U = N(Y)
            for n, f in subs[:-1]:
                x = x + f(x)
            u = N("ffn_norm", x)
            x = u + F(u)
        else:
            raise ValueError(t)
        return x, dual

    def deepnorm_alpha(self, side):
        N, M = self.cfg["enc_layers"], self.cfg["dec_layers"]
        if N == 0:  # C16
            return (2 * M) ** 0.25
        return 0.81 * (N ** 4 * M) ** (1 / 16) if side == "enc" else (3 * M) ** 0.25

    # ---------------------------------------------------------------- stacks and the model

    def embed(self, ids, zero_pads):  # C2, C3
        d, pad = self.d, self.cfg["pad_id"]
        x = math.sqrt(d) * self.P["embed.weight"][ids]
        kind = self.cfg.get("positions", "sinusoidal")
        if kind == "sinusoidal":
            x = x + sinusoidal_positions(ids, d, pad)
        elif kind == "learned":  # C17
            x = x + self.P["embed_positions.weight"][fairseq_positions(ids, pad)]
        if zero_pads:
            x = x * (ids != pad).to(x.dtype).unsqueeze(-1)
        return x

    def stack(self, side, x, ctx):
        L = self.cfg["enc_layers" if side == "enc" else "dec_layers"]
        if self.topo == "peri_ln":
            x = self.N(side + ".embed_norm", x)
        dual = x if self.topo == "resi_dual" else None  # §3.2: x_d⁰ = x_a⁰ (s = 1)
        for i in range(L):
            x, dual = self.layer(side, i, x, ctx, dual)
        if self.topo in ("post_ln", "deep_norm", "rezero", "admin", "b2t", "t_fixup"):
            return x
        if self.topo == "resi_dual":  # §3.5: α·x_a + LN_final(x_d), ε = 1e-7
            return x + self.N(side + ".final_norm", dual, eps=1e-7)
        return self.N(side + ".final_norm", x)

    def forward(self, src, tgt_in):
        pad = self.cfg["pad_id"]
        kind = self.cfg.get("positions")
        rope_dims = self.cfg.get("rope_dims", 0) or self.dh  # C17: partial rotary rotates the first rope_dims
        rope = (lambda ids: rope_angles(ids, rope_dims, pad, self.cfg["rope_theta"])) \
            if kind == "rope" else (lambda ids: None)
        slopes = torch.tensor(np.float32(alibi_slopes(self.h)).astype(np.float64))
        alibi = (lambda ids: (slopes, fairseq_positions(ids, pad))) if kind == "alibi" else (lambda ids: None)
        t5 = (lambda side, ids: self.t5_bias(side, fairseq_positions(ids, pad))) if kind == "t5" \
            else (lambda side, ids: None)
        if self.cfg["enc_layers"] == 0:  # C16: src is None
            feats = self.stack("dec", self.embed(tgt_in, False),
                               dict(self_pad=tgt_in == pad, rope=rope(tgt_in), alibi=alibi(tgt_in),
                                    t5=t5("dec", tgt_in)))
            return feats @ self.P["embed.weight"].T
        src_pad, tgt_pad = src == pad, tgt_in == pad
        enc = self.stack("enc", self.embed(src, True), dict(self_pad=src_pad, rope=rope(src), alibi=alibi(src),
                                                            t5=t5("enc", src)))
        feats = self.stack("dec", self.embed(tgt_in, False),
                           dict(self_pad=tgt_pad, memory=enc, memory_pad=src_pad, rope=rope(tgt_in),
                                alibi=alibi(tgt_in), t5=t5("dec", tgt_in)))
        return feats @ self.P["embed.weight"].T


    def t5_bias(self, side, p):  # C17: table[bucket(p_j - p_i)] -> [B, H, T, T]
        relative = p[:, None, :] - p[:, :, None]  # [B, Tq, Tk]: memory_position - context_position, as T5's
        bucket = t5_relative_position_bucket(relative, side == "enc", self.cfg["relative_buckets"],
                                             self.cfg["relative_max_distance"])
        return self.P[side + ".relative_bias.weight"][bucket].permute(0, 3, 1, 2)


def t5_relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    # Hugging Face transformers' T5Attention._relative_position_bucket (from T5's Mesh TensorFlow code), as written
    # there: a float32 log, truncated to int64.
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    relative_position_if_large = max_exact + (
        torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)).to(torch.long)
    relative_position_if_large = torch.min(relative_position_if_large,
                                           torch.full_like(relative_position_if_large, num_buckets - 1))
    relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
    return relative_buckets


def admin_profiled(cfg, params, src, tgt_in):
    """Admin's profiling initialisation (§5.7) on a copy of the parameters: each stack's ratio starts at 1 (C15);
    returns the profiled ω under "profiled.<name>" and each stack's last ratio under "profiled_ratio.<side>"."""
    model = Ref(cfg, "admin", "layer_norm", {k: v.detach().clone() for k, v in params.items()})
    model.profile = {"enc": 1.0, "dec": 1.0}
    with torch.no_grad():
        model.forward(src, tgt_in)
    out = {"profiled." + k: v.numpy() for k, v in model.P.items() if k.endswith("_omega")}
    out.update({"profiled_ratio." + side: np.array(r) for side, r in model.profile.items()})
    return out


def sinusoidal_positions(ids, d, pad):  # C2
    half = d // 2
    step = math.log(10000.0) / max(half - 1, 1)
    out = np.zeros(tuple(ids.shape) + (d,))
    for b in range(ids.shape[0]):
        count = 0
        for t in range(ids.shape[1]):
            if int(ids[b, t]) == pad:
                continue
            count += 1
            p = pad + count
            for i in range(half):
                angle = p * math.exp(-i * step)
                out[b, t, i] = float(np.float32(math.sin(angle)))
                out[b, t, half + i] = float(np.float32(math.cos(angle)))
    return torch.from_numpy(out)


def fairseq_positions(ids, pad):  # C2's p: pad + (non-pad tokens so far) for a token, pad for a pad
    real = (ids != pad).to(torch.int64)
    return real * torch.cumsum(real, 1) + pad


def rope_angles(ids, dh, pad, base):  # C17: cos θ, sin θ [B, T, d_h/2], float32-rounded
    half = dh // 2
    cos, sin = np.ones(tuple(ids.shape) + (half,)), np.zeros(tuple(ids.shape) + (half,))
    for b in range(ids.shape[0]):
        n = 0
        for t in range(ids.shape[1]):
            if int(ids[b, t]) == pad:
                continue
            for i in range(half):
                angle = n * base ** (-2.0 * i / dh)
                cos[b, t, i], sin[b, t, i] = float(np.float32(math.cos(angle))), float(np.float32(math.sin(angle)))
            n += 1
    return torch.from_numpy(cos), torch.from_numpy(sin)


# C17: the ALiBi paper's get_slopes (Press et al. 2022, github.com/ofirpress/attention_with_linear_biases)
def alibi_slopes(n):
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][:n - closest]


def rotate(x, cos, sin):  # x [B, H, T, d_h]: x ⊙ cos θ + rotate_half(x) ⊙ sin θ (C17)
    r = 2 * cos.shape[-1]
    if r < x.shape[-1]:  # partial rotary (GPT-NeoX's rotary_ndims): the first r dims rotate, the rest pass
        return torch.cat([rotate(x[..., :r], cos, sin), x[..., r:]], -1)
    half = x.shape[-1] // 2
    c, s = torch.cat([cos, cos], -1)[:, None], torch.cat([sin, sin], -1)[:, None]
    return x * c + torch.cat([-x[..., half:], x[..., :half]], -1) * s


def label_smoothed_loss(logits, target, pad, eps):  # C12
    V = logits.shape[-1]
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.sum(-1)
    e = eps / (V - 1)
    per_token = (1 - eps - e) * nll + e * smooth
    keep = target != pad
    return per_token[keep].sum() / keep.sum()


# ---------------------------------------------------------------- parameter names and shapes (C1)

def parameter_shapes(cfg, topology, norm):
    d, ff, V, dh = cfg["d_model"], cfg["d_ff"], cfg["vocab"], cfg["d_model"] // cfg["heads"]
    shapes = {"embed.weight": [V, d]}
    if cfg.get("positions") == "learned":  # C17
        shapes["embed_positions.weight"] = [cfg["max_positions"] + cfg["pad_id"] + 1, d]
    if cfg.get("positions") == "t5":  # C17: a table per stack
        for side in ("enc", "dec") if cfg["enc_layers"] > 0 else ("dec",):
            shapes[side + ".relative_bias.weight"] = [cfg["relative_buckets"], cfg["heads"]]

    def add_norm(name, size=d):
        shapes[name + ".weight"] = [size]
        if norm in ("layer_norm", "dyt"):
            shapes[name + ".bias"] = [size]
        if norm == "dyt":
            shapes[name + ".alpha"] = [1]

    def add_linear(name, n_out, n_in):
        shapes[name + ".weight"], shapes[name + ".bias"] = [n_out, n_in], [n_out]

    hybrid = topology.startswith("hybrid_norm")
    for side in ("enc", "dec") if cfg["enc_layers"] > 0 else ("dec",):  # C16
        L = cfg["enc_layers" if side == "enc" else "dec_layers"]
        for i in range(L):
            pre = f"{side}.{i}"
            subs = ["self_attn"] + (["cross_attn"] if side == "dec" and cfg["enc_layers"] > 0 else [])
            for a in subs:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add_linear(f"{pre}.{a}.{proj}", d, d)
                if hybrid:
                    for n in ("q_norm", "k_norm", "v_norm"):
                        add_norm(f"{pre}.{a}.{n}", dh)
            add_linear(f"{pre}.ffn.fc1", ff, d)
            add_linear(f"{pre}.ffn.fc2", d, ff)
            if hybrid:
                if topology == "hybrid_norm_star" and i == 0:
                    for a in subs:
                        add_norm(f"{pre}.{a}_norm")
                add_norm(f"{pre}.ffn_norm")
            elif topology == "rezero":
                shapes[f"{pre}.rezero_alpha"] = [1]
            elif topology == "t_fixup":  # C22: no norms
                pass
            else:
                for a in subs + ["ffn"]:
                    if topology != "res_post_norm":
                        add_norm(f"{pre}.{a}_norm")
                    if topology in ("sandwich_ln", "peri_ln", "res_post_norm"):
                        add_norm(f"{pre}.{a}_out_norm")
                    if topology == "admin":
                        shapes[f"{pre}.{a}_omega"] = [d]
                    if topology == "layer_scale":
                        shapes[f"{pre}.{a}_layer_scale"] = [d]
                if topology == "sub_ln":  # C20
                    add_norm(f"{pre}.self_attn.inner_norm")
                    add_norm(f"{pre}.ffn.inner_norm", ff)
                if topology == "normformer":  # C21
                    shapes[f"{pre}.self_attn.head_scale"] = [cfg["heads"]]
                    add_norm(f"{pre}.self_attn_out_norm")
                    add_norm(f"{pre}.ffn.inner_norm", ff)
                    if cfg.get("normformer_scale_resids"):
                        shapes[f"{pre}.ffn_resid_scale"] = [d]
        if topology not in ("post_ln", "deep_norm", "rezero", "admin", "b2t", "t_fixup"):
            add_norm(f"{side}.final_norm")
        if topology == "peri_ln":
            add_norm(f"{side}.embed_norm")
    return shapes


def tfixup_scale(params, cfg):  # C22: its init's scales, so that a stream with no norm stays in range
    N, M = cfg["enc_layers"], cfg["dec_layers"]
    with torch.no_grad():
        for name, t in params.items():
            s = 0.67 * N ** -0.25 if name.startswith("enc.") else (9 * M) ** -0.25
            if name.endswith((".v_proj.weight", ".out_proj.weight", ".fc1.weight", ".fc2.weight")):
                t.mul_(s)
            elif name == "embed.weight":
                t.mul_((9 * (N or M)) ** -0.25)


def random_parameters(shapes, pad):
    params = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name in ("embed.weight", "embed_positions.weight"):
            t = torch.randn(shape) * shape[1] ** -0.5
            t[pad] = 0  # fairseq zeroes the padding row
        elif name.endswith("rezero_alpha"):  # away from its init 0, so that every branch counts
            t = 0.5 + 0.2 * torch.randn(shape)
        elif name.endswith("_layer_scale"):  # away from CaiT's small init, so that every branch counts
            t = 0.5 + 0.2 * torch.randn(shape)
        elif name.endswith("head_scale") or name.endswith("resid_scale"):  # around their init 1
            t = 1 + 0.3 * torch.randn(shape)
        elif name.endswith("_omega"):  # around 1, as profiled ratios are
            t = 1 + 0.3 * torch.randn(shape)
        elif name.endswith("_norm.alpha"):  # DyT's α, around its init 0.5
            t = 0.5 + 0.2 * torch.randn(shape)
        elif name.endswith("_norm.weight"):
            t = 1 + 0.2 * torch.randn(shape)
        elif name.endswith("_norm.bias"):
            t = 0.1 * torch.randn(shape)
        elif name.endswith(".weight"):  # Linear [out, in]
            t = torch.randn(shape) / math.sqrt(shape[1])
        else:  # Linear bias
            t = 0.1 * torch.randn(shape)
        params[name] = t.requires_grad_()
    return params


# ---------------------------------------------------------------- safetensors, by hand

def write_safetensors(path, tensors, metadata):
    dtypes = {np.dtype("float64"): "F64", np.dtype("int64"): "I64"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        a = np.array(tensors[name], order="C")  # (ascontiguousarray would turn a 0-d scalar into [1])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for prefix, cfg, seed0, batch in (("transformer", CONFIG, 1000, (SRC, TGT_IN, TGT_OUT)),
                                      ("lm", LM_CONFIG, 2000, (None, LM_IN, LM_OUT))):
        total += write_cases(prefix, cfg, seed0, *batch)
    for i, (case, topology, norm, kind, positions, *extra) in enumerate(POSITION_CASES):  # C17
        cfg = dict(LM_CONFIG if kind == "lm" else CONFIG, positions=positions, **POSITION_CONFIG, **(extra or [{}])[0])
        batch = (None, LM_IN, LM_OUT) if kind == "lm" else (SRC, TGT_IN, TGT_OUT)
        total += write_cases("positions", cfg, 3000 + i, *batch, cases=[(case, topology, norm)])
    print(f"total {total} bytes")


def write_cases(prefix, cfg, seed0, src, tgt_in, tgt_out, cases=CASES):
    src = None if src is None else torch.tensor(src, dtype=torch.int64)
    tgt_in, tgt_out = torch.tensor(tgt_in, dtype=torch.int64), torch.tensor(tgt_out, dtype=torch.int64)
    total = 0
    base = cfg
    for seed, (case, topology, norm, *extra) in enumerate(cases):
        cfg = dict(base, **(extra or [{}])[0])
        torch.manual_seed(seed0 + seed)
        params = random_parameters(parameter_shapes(cfg, topology, norm), cfg["pad_id"])
        if topology == "t_fixup":
            tfixup_scale(params, cfg)
        model = Ref(cfg, topology, norm, params)
        logits = model.forward(src, tgt_in)
        loss = label_smoothed_loss(logits, tgt_out, cfg["pad_id"], cfg["label_smoothing"])
        names = sorted(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        tensors = {n: params[n].detach().numpy() for n in names}
        tensors.update({"grad." + n: g.numpy() for n, g in zip(names, grads)})
        tensors.update(tgt_in_ids=tgt_in.numpy(), tgt_out_ids=tgt_out.numpy(), logits=logits.detach().numpy(),
                       loss=loss.detach().numpy())
        if src is not None:
            tensors.update(src_ids=src.numpy())
        if topology == "admin":
            tensors.update(admin_profiled(cfg, params, src, tgt_in))
        meta = {k: v if isinstance(v, str) else repr(v) for k, v in cfg.items()}
        meta.update(topology=topology, norm=norm, torch=torch.__version__)
        path = os.path.join(OUT_DIR, f"{prefix}_{case}.safetensors")
        write_safetensors(path, tensors, meta)
        size = os.path.getsize(path)
        total += size
        print(f"{prefix}_{case:18s} {len(names):3d} parameters  loss {loss.item():.6f}  {size} bytes")
    return total


if __name__ == "__main__":
    main()
