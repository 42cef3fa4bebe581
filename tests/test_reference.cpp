// Every op against PyTorch on the same inputs: forward outputs and the gradients of sum(out * w), in float32 and
// float64, read from tests/reference/ops_reference.json (written by scripts/make_reference.py with torch 1.13;
// CI needs no torch).
//
// Error measure, per tensor (the output and each input gradient):
//   err = max_i |got_i - ref_i| / (|ref_i| + 1e-3 * max_j |ref_j|)
// a relative error whose floor (a thousandth of the tensor's largest magnitude) keeps entries that cancel to
// almost zero from dominating. Tolerances:
//   float32: 1e-5 for elementwise, view, shape and select ops; 1e-4 for matmul, reductions, softmax, norms,
//            embedding, cross entropy and attention (sums whose rounding depends on the order of summation)
//   float64: 1e-10 for all
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "test_util.h"

namespace sgtest {
namespace {
using json = nlohmann::json;

// Ops of the op table with no reference case, and why.
const std::map<std::string, std::string> kExcluded = {
    {"dropout", "different RNG from torch: its statistics are tested in the ops_nn suite, its gradient in gradcheck"},
    {"to_device", "CPU -> CPU is the identity and CI has no second device: the cuda suite tests transfers"},
};

const json& reference() {
  static const json doc = [] {
    const std::string path = std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/ops_reference.json";
    std::ifstream file(path);
    REQUIRE_MESSAGE(file.good(), "cannot open " << path << " (regenerate it with scripts/make_reference.py)");
    return json::parse(file);
  }();
  return doc;
}

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::F32;
  if (name == "float64") return DType::F64;
  FAIL("unknown dtype '" << name << "' in the reference file");
  return DType::F32;
}

Reduction parse_reduction(const std::string& name) {
  if (name == "mean") return Reduction::Mean;
  if (name == "sum") return Reduction::Sum;
  return Reduction::None;
}

Shape inverse_order(const Shape& order) {
  Shape inv(order.size());
  for (size_t i = 0; i < order.size(); i++) inv[(size_t)order[i]] = (int64_t)i;
  return inv;
}

Tensor from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype) {
  if (dtype == DType::F64) return Tensor::from_vector<double>(values, shape);
  return Tensor::from_vector<float>(std::vector<float>(values.begin(), values.end()), shape);
}

// One input of a case, laid out in memory as the case says: contiguous, permuted ("storage_order": memory holds
// the dims in that order) or strided ("step": every step-th element of a wider buffer).
Tensor build_input(const json& in, DType dtype) {
  const Shape shape = in.at("shape").get<Shape>();
  const std::string kind = in.at("kind");
  if (kind == "int64" || kind == "mask")
    return Tensor::from_vector<int64_t>(in.at("data").get<std::vector<int64_t>>(), shape);
  REQUIRE(kind == "float");
  Tensor x = from_doubles(in.at("data").get<std::vector<double>>(), shape, dtype);
  {
    NoGradGuard no_grad;
    if (in.contains("storage_order")) {
      const Shape order = in.at("storage_order").get<Shape>();
      x = x.permute(order).contiguous().permute(inverse_order(order));
      REQUIRE(!x.is_contiguous());
    }
    if (in.contains("step")) {
      const int64_t step = in.at("step"), n = shape.back();
      Shape wide = shape;
      wide.back() = n * step;
      Tensor view = Tensor::zeros(wide, dtype).slice(-1, 0, n * step, step);
      view.copy_(x);
      x = view;
      REQUIRE(!x.is_contiguous());
    }
  }
  if (in.at("requires_grad").get<bool>()) x.requires_grad_();
  return x;
}

// Reference numbers as the dtype holds them: the file writes float32 values in their shortest decimal form,
// which reads back as a double near (not at) the float32 value.
std::vector<double> reference_values(const json& data, DType dtype) {
  std::vector<double> values = data.get<std::vector<double>>();
  if (dtype == DType::F32)
    for (double& v : values) v = (double)(float)v;
  return values;
}

Tensor optional_input(const std::vector<Tensor>& in, size_t i) { return i < in.size() ? in[i] : Tensor(); }

// op name -> how to run it on the case's inputs and params.
using Inputs = const std::vector<Tensor>&;
using Runner = std::function<Tensor(const json& p, Inputs in)>;
const std::map<std::string, Runner>& runners() {
  static const std::map<std::string, Runner> table = [] {
    std::map<std::string, Runner> r;
    r["add"] = [](const json&, Inputs in) { return add(in[0], in[1]); };
    r["sub"] = [](const json&, Inputs in) { return sub(in[0], in[1]); };
    r["mul"] = [](const json&, Inputs in) { return mul(in[0], in[1]); };
    r["div"] = [](const json&, Inputs in) { return div(in[0], in[1]); };
    r["maximum"] = [](const json&, Inputs in) { return maximum(in[0], in[1]); };
    r["minimum"] = [](const json&, Inputs in) { return minimum(in[0], in[1]); };
    r["neg"] = [](const json&, Inputs in) { return neg(in[0]); };
    r["add_scalar"] = [](const json& p, Inputs in) { return add(in[0], p.at("scalar").get<double>()); };
    r["mul_scalar"] = [](const json& p, Inputs in) { return mul(in[0], p.at("scalar").get<double>()); };
    r["rsub_scalar"] = [](const json& p, Inputs in) { return rsub(in[0], p.at("scalar").get<double>()); };
    r["exp"] = [](const json&, Inputs in) { return exp(in[0]); };
    r["log"] = [](const json&, Inputs in) { return log(in[0]); };
    r["sqrt"] = [](const json&, Inputs in) { return sqrt(in[0]); };
    r["rsqrt"] = [](const json&, Inputs in) { return rsqrt(in[0]); };
    r["reciprocal"] = [](const json&, Inputs in) { return reciprocal(in[0]); };
    r["pow"] = [](const json& p, Inputs in) { return pow(in[0], p.at("exponent").get<double>()); };
    r["abs"] = [](const json&, Inputs in) { return abs(in[0]); };
    r["tanh"] = [](const json&, Inputs in) { return tanh(in[0]); };
    r["sigmoid"] = [](const json&, Inputs in) { return sigmoid(in[0]); };
    r["relu"] = [](const json&, Inputs in) { return relu(in[0]); };
    r["gelu_tanh"] = [](const json&, Inputs in) { return gelu(in[0], GeluApprox::Tanh); };
    r["gelu_erf"] = [](const json&, Inputs in) { return gelu(in[0], GeluApprox::Erf); };
    r["silu"] = [](const json&, Inputs in) { return silu(in[0]); };
    r["matmul"] = [](const json& p, Inputs in) {
      return matmul(in[0], in[1], p.value("trans_a", false), p.value("trans_b", false));
    };
    r["linear"] = [](const json&, Inputs in) { return linear(in[0], in[1], optional_input(in, 2)); };
    r["sum"] = [](const json& p, Inputs in) {
      return p.contains("dims") ? sum(in[0], p.at("dims").get<Shape>(), p.at("keepdim")) : sum(in[0]);
    };
    r["mean"] = [](const json& p, Inputs in) {
      return p.contains("dims") ? mean(in[0], p.at("dims").get<Shape>(), p.at("keepdim")) : mean(in[0]);
    };
    r["max"] = [](const json& p, Inputs in) {
      return max(in[0], p.at("dims").get<Shape>(), p.at("keepdim"));
    };
    r["min"] = [](const json& p, Inputs in) {
      return min(in[0], p.at("dims").get<Shape>(), p.at("keepdim"));
    };
    r["reshape"] = [](const json& p, Inputs in) { return reshape(in[0], p.at("shape").get<Shape>()); };
    r["transpose"] = [](const json& p, Inputs in) { return transpose(in[0], p.at("d0"), p.at("d1")); };
    r["permute"] = [](const json& p, Inputs in) { return permute(in[0], p.at("order").get<Shape>()); };
    r["slice"] = [](const json& p, Inputs in) {
      return slice(in[0], p.at("dim"), p.at("start"), p.at("end"), p.at("step"));
    };
    r["expand"] = [](const json& p, Inputs in) { return expand(in[0], p.at("shape").get<Shape>()); };
    r["contiguous"] = [](const json&, Inputs in) { return in[0].contiguous(); };
    r["to_dtype"] = [](const json& p, Inputs in) { return in[0].to(parse_dtype(p.at("dtype"))); };
    r["concat"] = [](const json& p, Inputs in) { return concat(in, p.at("dim")); };
    r["cumsum"] = [](const json& p, Inputs in) { return cumsum(in[0], p.at("dim")); };
    r["softmax"] = [](const json& p, Inputs in) { return softmax(in[0], p.at("dim")); };
    r["log_softmax"] = [](const json& p, Inputs in) { return log_softmax(in[0], p.at("dim")); };
    r["layer_norm"] = [](const json& p, Inputs in) {
      return layer_norm(in[0], optional_input(in, 1), optional_input(in, 2), p.at("eps"));
    };
    r["rms_norm"] = [](const json& p, Inputs in) { return rms_norm(in[0], in[1], p.at("eps")); };
    r["l2_norm"] = [](const json& p, Inputs in) { return l2_norm(in[0], p.at("eps")); };
    r["dyt"] = [](const json&, Inputs in) { return dyt(in[0], in[1], optional_input(in, 2), optional_input(in, 3)); };
    r["embedding"] = [](const json& p, Inputs in) { return embedding(in[0], in[1], p.at("padding_idx")); };
    r["cross_entropy"] = [](const json& p, Inputs in) {
      return cross_entropy(in[0], in[1], p.at("ignore_index"), p.at("label_smoothing"),
                           parse_reduction(p.at("reduction")));
    };
    r["masked_fill"] = [](const json& p, Inputs in) { return masked_fill(in[0], in[1], p.at("value")); };
    r["where"] = [](const json&, Inputs in) { return where(in[0], in[1], in[2]); };
    r["gather"] = [](const json& p, Inputs in) { return gather(in[0], p.at("dim"), in[1]); };
    r["rotary"] = [](const json&, Inputs in) { return rotary(in[0], in[1], in[2]); };
    r["attention"] = [](const json& p, Inputs in) {
      AttentionOptions opt;
      opt.causal = p.at("causal");
      opt.scale = p.at("scale");
      return attention(in[0], in[1], in[2], optional_input(in, 3), opt);
    };
    return r;
  }();
  return table;
}

double tolerance(const std::string& op, DType dtype) {
  if (dtype == DType::F64) return 1e-10;
  switch (op_info(op).family) {
    case OpFamily::Elementwise:
    case OpFamily::View:
    case OpFamily::Shape:
    case OpFamily::Select: return 1e-5;
    default: return 1e-4;
  }
}

// The error measure stated at the top of the file; `where` describes the worst element.
double relative_error(const std::vector<double>& got, const std::vector<double>& ref, std::string& where) {
  double ref_max = 0;
  for (double r : ref) ref_max = std::max(ref_max, std::abs(r));
  const double floor = std::max(1e-3 * ref_max, 1e-300);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double err = std::abs(got[i] - ref[i]) / (std::abs(ref[i]) + floor);
    if (!(err <= worst)) {  // also catches NaN
      worst = std::isnan(err) ? INFINITY : err;
      std::ostringstream s;
      s.precision(9);
      s << "element " << i << ": got " << got[i] << ", torch " << ref[i];
      where = s.str();
    }
  }
  return worst;
}

struct Worst {
  double err = 0;
  std::string what;
};

// Runs one case; returns false (after CHECK failures with the details) when it does not match.
bool run_case(const json& c, std::map<std::string, Worst>& worst_per_op) {
  const std::string op = c.at("op"), label = c.at("label"), dtype_label = c.at("dtype");
  const DType dtype = parse_dtype(dtype_label);
  const std::string name = op + " [" + label + "] " + dtype_label;
  INFO("case: " << name);
  try {
    const double tol = tolerance(op, dtype);
    std::vector<Tensor> inputs;
    for (const json& in : c.at("inputs")) inputs.push_back(build_input(in, dtype));
    Tensor out = runners().at(op)(c.at("params"), inputs);

    const json& ref_out = c.at("output");
    const DType out_dtype = parse_dtype(ref_out.at("dtype"));
    const Shape out_shape = ref_out.at("shape").get<Shape>();
    CHECK_MESSAGE(out.dtype() == out_dtype, "output is " << out.meta_str() << ", torch's is " << dtype_name(out_dtype));
    REQUIRE_MESSAGE(out.shape() == out_shape,
                    "output is " << out.meta_str() << ", torch's is " << shape_str(out_shape));

    // (tensor name, got, torch) for the output and every input gradient
    std::vector<std::tuple<std::string, std::vector<double>, std::vector<double>>> compared;
    compared.emplace_back("output", out.to_vector<double>(), reference_values(ref_out.at("data"), out_dtype));
    Tensor w = from_doubles(c.at("w").get<std::vector<double>>(), out_shape, out_dtype);
    out.backward(w);
    for (size_t i = 0; i < inputs.size(); i++) {
      const json& in = c.at("inputs")[i];
      if (!in.at("requires_grad").get<bool>()) continue;
      const std::string what = "grad of input " + std::to_string(i);
      Tensor g = inputs[i].grad();
      REQUIRE_MESSAGE(g.defined(), what << " is missing");
      REQUIRE_MESSAGE(g.shape() == inputs[i].shape(), what << " has shape " << g.meta_str());
      compared.emplace_back(what, g.to_vector<double>(), reference_values(in.at("grad"), dtype));
    }

    bool ok = true;
    for (auto& [what, got, ref] : compared) {
      REQUIRE(got.size() == ref.size());
      std::string detail;
      const double err = relative_error(got, ref, detail);
      Worst& worst = worst_per_op[op + " " + dtype_label];
      if (!(err <= worst.err)) worst = {std::isnan(err) ? INFINITY : err, name + ", " + what + ", " + detail};
      if (!(err <= tol)) {
        ok = false;
        FAIL_CHECK(what << ": relative error " << err << " > tolerance " << tol << " at " << detail);
      }
    }
    return ok;
  } catch (const std::exception& e) {
    FAIL_CHECK("threw: " << e.what());
    worst_per_op[op + " " + dtype_label] = {INFINITY, name + " threw: " + e.what()};
    return false;
  }
}

}  // namespace

TEST_SUITE("reference") {
  TEST_CASE("every op in the op table has PyTorch reference cases in float32 and float64") {
    const json& doc = reference();
    std::set<std::string> covered;
    for (const json& c : doc.at("cases")) {
      const std::string op = c.at("op");
      INFO("reference case for op '" << op << "'");
      CHECK_NOTHROW(op_info(op));
      CHECK_MESSAGE(runners().count(op) == 1, "no runner for op '" << op << "' in test_reference.cpp");
      covered.insert(op + " " + c.at("dtype").get<std::string>());
    }
    for (const OpInfo& op : op_table()) {
      const std::string name = op.name;
      if (kExcluded.count(name)) {
        CHECK_MESSAGE(doc.at("excluded").contains(name), "'" << name << "' is excluded here but not in the script");
        continue;
      }
      INFO("op '" << name << "' has no PyTorch reference case: add one to scripts/make_reference.py and rerun it");
      CHECK(covered.count(name + " float32") == 1);
      CHECK(covered.count(name + " float64") == 1);
    }
  }

  TEST_CASE("forward and gradients match PyTorch") {
    const json& doc = reference();
    INFO("reference produced by torch " << doc.at("torch_version").get<std::string>());
    std::map<std::string, Worst> worst_per_op;
    int failed = 0, total = 0;
    for (const json& c : doc.at("cases")) {
      total++;
      if (!run_case(c, worst_per_op)) failed++;
    }
    const bool verbose = std::getenv("SKIPGRAD_REFERENCE_VERBOSE") != nullptr;
    if (failed > 0 || verbose) {
      std::ostringstream table;
      table << failed << " of " << total << " reference cases failed; worst relative error per op:\n";
      for (const auto& [op, worst] : worst_per_op)
        table << "  " << op << ": " << worst.err << "  (" << worst.what << ")\n";
      if (failed > 0) FAIL_CHECK(table.str());
      else MESSAGE(table.str());
    }
    CHECK(total > 0);
  }
}

}  // namespace sgtest
