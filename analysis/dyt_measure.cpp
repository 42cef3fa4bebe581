// DyT's α, input RMS and saturated share per DyT, read from the forward's tape (dyt_measure.h).
#include "analysis/dyt_measure.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "autograd/op_table.h"
#include "autograd/tape.h"
#include "tensor/tensor.h"

namespace skipgrad {

namespace {
// |tanh(u)| >= 0.99 from here on
const double kSaturatedAt = std::atanh(0.99);  // 2.6467
}  // namespace

TokenPadding token_padding(const Tensor& src, const Tensor& tgt, int64_t pad_id) {
  TokenPadding pad;
  for (auto [ids, mask] : {std::pair{&src, &pad.src}, {&tgt, &pad.tgt}})
    if (ids->defined())
      for (int64_t id : ids->to(Device::cpu()).to_vector<int64_t>()) mask->push_back(id == pad_id);
  return pad;
}

std::vector<DytMeasure> measure_dyts(const Tape& tape, const std::string& scope, const TokenPadding& pad) {
  NoGradGuard no_grad;
  std::vector<DytMeasure> out;
  for (const auto& node : tape.nodes()) {
    if (std::string_view(node->op->name) != "dyt" || node->name.rfind(scope, 0) != 0) continue;
    // The op keeps x as rows [R, C] and α (ops_nn.cpp's dyt): saved[0] and saved[1]
    const Tensor& x_rows = node->saved.at(0);
    const double alpha = node->saved.at(1).to(DType::F64).item();
    std::string name = node->name.substr(scope.size());
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".dyt") == 0) name.resize(name.size() - 4);
    const std::vector<int64_t>& mask = name.rfind("enc", 0) == 0 ? pad.src : pad.tgt;
    const int64_t rows = x_rows.shape()[0], cols = x_rows.shape()[1];
    const bool masked = (int64_t)mask.size() == rows;
    const std::vector<double> x = x_rows.to(DType::F64).to(Device::cpu()).contiguous().to_vector<double>();
    double sq = 0;
    int64_t n = 0, saturated = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (masked && mask[r]) continue;
      for (int64_t c = 0; c < cols; ++c) {
        const double v = x[r * cols + c];
        sq += v * v;
        saturated += std::abs(alpha * v) >= kSaturatedAt;
      }
      n += cols;
    }
    DytMeasure m;
    m.norm = name;
    m.alpha = alpha;
    m.input_rms = n > 0 ? std::sqrt(sq / (double)n) : NAN;
    m.saturated = n > 0 ? (double)saturated / (double)n : NAN;
    out.push_back(m);
  }
  return out;
}

std::string dyt_measures_markdown(const std::vector<DytMeasure>& dyts) {
  if (dyts.empty()) return "";
  std::string out = "| DyT | α | RMS(x) | α·RMS(x) | saturated (\\|α x\\| ≥ 2.65) |\n| --- | --- | --- | --- | --- |\n";
  for (const DytMeasure& d : dyts) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "| %s | %.3g | %.3g | %.3g | %.1f %% |\n", d.norm.c_str(), d.alpha, d.input_rms,
                  d.alpha * d.input_rms, 100 * d.saturated);
    out += buf;
  }
  return out;
}

}  // namespace skipgrad
