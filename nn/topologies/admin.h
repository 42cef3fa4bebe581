// Admin (Liu et al. 2020, "Understanding the Difficulty of Training Transformers"): Post-LN with a learnable
// per-dimension weight ω on every residual, x ← LN( x ⊙ ω + D(f(x)) ), ω set by one profiling pass.
// nn/topologies/admin.cpp has the layer; this is the profiling initialisation a training run calls once.
#pragma once
#include "nn/transformer.h"

namespace skipgrad::nn {

// Admin's adaptive initialisation (Transformer-Clinic `--init-type adaptive`, TOPOLOGIES.md §5.7): one forward of
// (src_ids, tgt_in_ids) in eval mode without grad, sublayer by sublayer in order, each stack with its own ratio r
// starting at 1: ω ← r (every element), then r ← sqrt( Var(x ⊙ ω) + Var(D(f(x))) ), the variances over all
// elements of the batch. Throws when the model's topology is not "admin". Returns the ratio per stack after its
// last sublayer, {encoder, decoder}. A decoder-only model takes src_ids undefined; its encoder ratio is the 1 it
// starts at.
std::pair<double, double> admin_profile_init(Transformer& model, const Tensor& src_ids, const Tensor& tgt_in_ids);

}  // namespace skipgrad::nn
