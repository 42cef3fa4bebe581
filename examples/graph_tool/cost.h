// skipgrad-graph cost: what a training step of each topology costs, from the profiler (autograd/profiler.h): time
// on the host and the device, split into forward, backward and update, the activation memory, the share of the
// norms, and the ops that take the most time. One Markdown table, one row per topology.
#pragma once
#include <string>
#include <vector>

#include "report.h"

namespace graph_tool {

struct CostOptions {
  ModelOptions model;  // the topology is overridden by the list below
  std::vector<std::string> topologies;
  int warmup = 2;         // untimed steps first (the caching allocator, cuBLAS plans, attention's pointer arrays)
  int steps = 3;          // profiled steps; the one with the median device time is reported
  std::string trace_dir;  // when set: <dir>/cost_<topology>.txt (the whole profile) and .trace.json
};

// The measurements of one topology's profiled step.
struct TopologyCost {
  std::string topology;
  int64_t params = 0;
  double host_ms = 0, device_ms = 0;
  double forward_ms = 0, backward_ms = 0, update_ms = 0;  // device ms by phase (backward: its own regions too)
  double norm_share = 0;          // of the device ms: layer_norm, rms_norm, l2_norm forward and backward
  double activation_mib = 0;      // most in use at a mark minus in use at the start
  std::vector<std::string> top;   // the three ops with the most device time, "linear 41%"
};

TopologyCost measure_cost(const CostOptions& opt, const std::string& topology);
// The Markdown table of the costs (and a line saying what was measured where).
std::string cost_markdown(const CostOptions& opt, const std::vector<TopologyCost>& rows);

}  // namespace graph_tool
