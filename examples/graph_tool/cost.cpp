#include "cost.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "analysis/profile.h"
#include "autograd/autocast.h"
#include "autograd/op_table.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "tensor/random.h"

namespace graph_tool {

using namespace skipgrad;

TopologyCost measure_cost(const CostOptions& opt, const std::string& topology) {
  check(opt.steps >= 1, "cost", ": --steps must be at least 1, got ", opt.steps);
  check(opt.warmup >= 0, "cost", ": --warmup must be at least 0, got ", opt.warmup);
  ModelOptions mo = opt.model.with_topology(topology);
  const bool autocast_bf16 = parse_autocast(mo.autocast);
  const Device device = Device::parse(mo.device);
  nn::TransformerConfig cfg = mo.config();
  manual_seed(mo.seed);
  nn::Transformer model(cfg);
  model.to(device);
  const MeasureBatch b = random_batch(cfg, mo.batch, mo.len, mo.seed).to(device);
  model.init_from_batch(b.src, b.tgt_in);  // Admin's ω profiling pass, as training runs it (untimed)
  nn::Adam adam(model.named_parameters());
  // as in training: gradient norms are an analysis feature that reads every node's gradient norm back
  TrackGradNormsGuard norm_tracking_off(false);
  auto step = [&] {
    Tensor loss;
    {
      AutocastBF16 autocast(autocast_bf16);
      loss = nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, cfg.pad_id, 0.1).loss;
    }
    loss.backward();
    adam.step();
    adam.zero_grad();
    return loss;
  };
  for (int i = 0; i < opt.warmup; i++) step().item();
  std::vector<std::unique_ptr<Profiler>> profiles;
  for (int i = 0; i < opt.steps; i++) {
    profiles.push_back(std::make_unique<Profiler>(device));
    step();
    profiles.back()->stop();
  }
  std::sort(profiles.begin(), profiles.end(),
            [](const auto& a, const auto& b) { return a->device_total_ms() < b->device_total_ms(); });
  const Profiler& prof = *profiles[(profiles.size() - 1) / 2];  // the median step (the lower one for an even count)

  TopologyCost c;
  c.topology = topology;
  c.params = model.num_parameters();
  c.host_ms = prof.host_total_ms();
  c.device_ms = prof.device_total_ms();
  double norm_ms = 0;
  for (const ProfileEvent& e : prof.events()) {
    if (e.phase == ProfilePhase::Forward) c.forward_ms += e.device_ms;
    else if (e.phase == ProfilePhase::Backward || e.name.rfind("backward.", 0) == 0) c.backward_ms += e.device_ms;
    else c.update_ms += e.device_ms;
    if (e.phase != ProfilePhase::Region && op_info(e.op).family == OpFamily::Norm) norm_ms += e.device_ms;
  }
  c.norm_share = c.device_ms > 0 ? norm_ms / c.device_ms : 0;
  c.activation_mib = (double)(prof.max_bytes_in_use() - prof.start_bytes_in_use()) / (1 << 20);
  for (const ProfileRow& r : profile_by_op(prof)) {
    if (c.top.size() == 3) break;
    char buf[96];
    const double share = c.device_ms > 0 ? 100 * r.device_ms() / c.device_ms : 0;
    std::snprintf(buf, sizeof buf, "%s %.0f%%", r.key.c_str(), share);
    c.top.push_back(buf);
  }
  if (!opt.trace_dir.empty()) {
    std::filesystem::create_directories(opt.trace_dir);
    save_profile(prof, opt.trace_dir + "/cost_" + topology);
  }
  return c;
}

std::string cost_markdown(const CostOptions& opt, const std::vector<TopologyCost>& rows) {
  const ModelOptions& m = opt.model;
  char head[768];
  std::snprintf(head, sizeof head,
                "A training step (forward, label-smoothed loss, backward, Adam) per topology: the median by device "
                "time of %d profiled steps (the lower middle one of an even count) after %d warm-up steps; "
                "%s, d=%lld, %lld heads, FFN %lld, %s norms, qk norm %s (%s), "
                "vocabulary %lld, %lld x %lld tokens%s, device %s, autocast %s. Times are the profiled "
                "device's (a CPU's are its host's); activation MiB = the most memory in use at a mark minus what was "
                "in use at the start (parameters, gradients and Adam's moments).\n\n",
                opt.steps, opt.warmup, m.layers_text().c_str(), (long long)m.d_model,
                (long long)m.heads, (long long)m.d_ff, m.norm_text().c_str(), m.qk_norm.c_str(),
                m.qk_norm_kind.c_str(), (long long)m.vocab, (long long)m.batch, (long long)m.len,
                m.decoder_only ? "" : " a side", m.device.c_str(),
                m.autocast.c_str());
  std::string s = head;
  s += "| topology | parameters | step ms | host ms | forward | backward | update | norms | activation MiB | "
       "most time |\n|---|---|---|---|---|---|---|---|---|---|\n";
  for (const TopologyCost& c : rows) {
    char line[512];
    std::string top;
    for (size_t i = 0; i < c.top.size(); i++) top += (i ? ", " : "") + c.top[i];
    std::snprintf(line, sizeof line, "| %s | %lld | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.1f | %s |\n",
                  c.topology.c_str(), (long long)c.params, c.device_ms, c.host_ms, c.forward_ms, c.backward_ms,
                  c.update_ms, 100 * c.norm_share, c.activation_mib, top.c_str());
    s += line;
  }
  return s;
}

}  // namespace graph_tool
