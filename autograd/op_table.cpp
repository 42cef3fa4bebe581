#include "autograd/op_table.h"

#include <unordered_map>

#include "tensor/error.h"

namespace skipgrad {

const std::vector<OpInfo>& op_table() {
  using F = OpFamily;
  static const std::vector<OpInfo> table = {
      // name            arity symbol      family
      {"add",              2, "+",        F::Elementwise},
      {"sub",              2, "-",        F::Elementwise},
      {"mul",              2, "*",        F::Elementwise},
      {"div",              2, "/",        F::Elementwise},
      {"maximum",          2, "max",      F::Elementwise},
      {"minimum",          2, "min",      F::Elementwise},
      {"neg",              1, "-x",       F::Elementwise},
      {"add_scalar",       1, "+c",       F::Elementwise},
      {"mul_scalar",       1, "*c",       F::Elementwise},
      {"rsub_scalar",      1, "c-",       F::Elementwise},
      {"exp",              1, "exp",      F::Elementwise},
      {"log",              1, "log",      F::Elementwise},
      {"sqrt",             1, "sqrt",     F::Elementwise},
      {"rsqrt",            1, "rsqrt",    F::Elementwise},
      {"reciprocal",       1, "1/x",      F::Elementwise},
      {"pow",              1, "x^p",      F::Elementwise},
      {"abs",              1, "|x|",      F::Elementwise},
      {"tanh",             1, "tanh",     F::Elementwise},
      {"sigmoid",          1, "sigmoid",  F::Elementwise},
      {"relu",             1, "relu",     F::Elementwise},
      {"gelu_tanh",        1, "gelu",     F::Elementwise},
      {"gelu_erf",         1, "gelu",     F::Elementwise},
      {"silu",             1, "silu",     F::Elementwise},
      {"matmul",           2, "@",        F::Matmul},
      {"linear",           3, "xWT+b",    F::Matmul},
      {"sum",              1, "sum",      F::Reduction},
      {"mean",             1, "mean",     F::Reduction},
      {"max",              1, "max",      F::Reduction},
      {"cumsum",           1, "cumsum",   F::Reduction},
      {"reshape",          1, "reshape",  F::View},
      {"transpose",        1, "T",        F::View},
      {"permute",          1, "permute",  F::View},
      {"slice",            1, "[:]",      F::View},
      {"expand",           1, "expand",   F::View},
      {"contiguous",       1, "copy",     F::Shape},
      {"to_dtype",         1, "cast",     F::Shape},
      {"to_device",        1, "to",       F::Shape},
      {"concat",          -1, "cat",      F::Shape},
      {"softmax",          1, "softmax",  F::Softmax},
      {"log_softmax",      1, "logsoftmax", F::Softmax},
      {"layer_norm",       3, "LN",       F::Norm},
      {"rms_norm",         2, "RMS",      F::Norm},
      {"l2_norm",          1, "L2",       F::Norm},
      {"embedding",        2, "emb",      F::Embedding},
      {"cross_entropy",    2, "CE",       F::Loss},
      {"dropout",          1, "drop",     F::Dropout},
      {"masked_fill",      2, "fill",     F::Select},
      {"where",            3, "where",    F::Select},
      {"attention",       -1, "attn",     F::Attention},
  };
  return table;
}

const OpInfo& op_info(std::string_view name) {
  static const std::unordered_map<std::string_view, const OpInfo*> by_name = [] {
    std::unordered_map<std::string_view, const OpInfo*> m;
    for (const OpInfo& op : op_table()) m.emplace(op.name, &op);
    return m;
  }();
  auto it = by_name.find(name);
  if (it == by_name.end()) fail("op_info", ": no op named '", name, "' in the op table");
  return *it->second;
}

const char* family_name(OpFamily f) {
  switch (f) {
    case OpFamily::Elementwise: return "elementwise";
    case OpFamily::Matmul: return "matmul";
    case OpFamily::Reduction: return "reduction";
    case OpFamily::View: return "view";
    case OpFamily::Shape: return "shape";
    case OpFamily::Softmax: return "softmax";
    case OpFamily::Norm: return "norm";
    case OpFamily::Embedding: return "embedding";
    case OpFamily::Loss: return "loss";
    case OpFamily::Attention: return "attention";
    case OpFamily::Dropout: return "dropout";
    case OpFamily::Select: return "select";
  }
  return "?";
}

}  // namespace skipgrad
