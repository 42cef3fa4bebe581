// The list of differentiable ops, as data.
//
// One row per op: its name (as it appears in node names and dumps), its arity (number of tensor inputs, optional
// ones included; -1 for variadic; record() refuses a node with another count) and its family (colours in the graph
// dump, "is this a norm?" in the gradient-path analysis). The tests iterate over this table: they fail when an op
// in it has no float64 gradient check, no PyTorch reference case or no CPU-vs-CUDA case.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace skipgrad {

enum class OpFamily {
  Elementwise,  // arithmetic and activations
  Matmul,
  Reduction,
  View,         // shares storage, moves no data
  Shape,        // concat, copies between layouts
  Softmax,
  Norm,         // layer_norm, rms_norm: the nodes the gradient-path analysis counts
  Embedding,
  Loss,
  Attention,
  Dropout,
  Select,       // masked_fill, where, gather
};

struct OpInfo {
  const char* name;
  int arity;
  OpFamily family;
};

const std::vector<OpInfo>& op_table();
// Throws when no op of that name exists (a programming error in an op, caught by the tests). A hash lookup: every
// recorded node makes one.
const OpInfo& op_info(std::string_view name);
const char* family_name(OpFamily f);

}  // namespace skipgrad
