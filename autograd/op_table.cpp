#include "autograd/op_table.h"

#include <unordered_map>

#include "tensor/error.h"

namespace skipgrad {

const std::vector<OpInfo>& op_table() {
  using F = OpFamily;
  static const std::vector<OpInfo> table = {
      // name            arity family
      {"add",               2, F::Elementwise},
      {"sub",               2, F::Elementwise},
      {"mul",               2, F::Elementwise},
      {"div",               2, F::Elementwise},
      {"maximum",           2, F::Elementwise},
      {"minimum",           2, F::Elementwise},
      {"neg",               1, F::Elementwise},
      {"add_scalar",        1, F::Elementwise},
      {"mul_scalar",        1, F::Elementwise},
      {"rsub_scalar",       1, F::Elementwise},
      {"exp",               1, F::Elementwise},
      {"log",               1, F::Elementwise},
      {"sqrt",              1, F::Elementwise},
      {"rsqrt",             1, F::Elementwise},
      {"reciprocal",        1, F::Elementwise},
      {"pow",               1, F::Elementwise},
      {"abs",               1, F::Elementwise},
      {"tanh",              1, F::Elementwise},
      {"sigmoid",           1, F::Elementwise},
      {"relu",              1, F::Elementwise},
      {"gelu_tanh",         1, F::Elementwise},
      {"gelu_erf",          1, F::Elementwise},
      {"silu",              1, F::Elementwise},
      {"matmul",            2, F::Matmul},
      {"linear",            3, F::Matmul},
      {"sum",               1, F::Reduction},
      {"mean",              1, F::Reduction},
      {"max",               1, F::Reduction},
      {"min",               1, F::Reduction},
      {"cumsum",            1, F::Reduction},
      {"reshape",           1, F::View},
      {"transpose",         1, F::View},
      {"permute",           1, F::View},
      {"slice",             1, F::View},
      {"expand",            1, F::View},
      {"contiguous",        1, F::Shape},
      {"to_dtype",          1, F::Shape},
      {"to_device",         1, F::Shape},
      {"concat",          -1, F::Shape},
      {"softmax",           1, F::Softmax},
      {"log_softmax",       1, F::Softmax},
      {"layer_norm",        3, F::Norm},
      {"rms_norm",          2, F::Norm},
      {"l2_norm",           1, F::Norm},
      {"dyt",               4, F::Norm},
      {"embedding",         2, F::Embedding},
      {"cross_entropy",     2, F::Loss},
      {"dropout",           1, F::Dropout},
      {"masked_fill",       2, F::Select},
      {"where",             3, F::Select},
      {"gather",            2, F::Select},
      {"attention",       -1, F::Attention},
      {"rotary",            3, F::Attention},
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
