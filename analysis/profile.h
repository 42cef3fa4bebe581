// Reading a profile (autograd/profiler.h): its intervals grouped by op, by node name with the layer numbers folded
// and by layer, as data and as aligned text, and as a Chrome trace.
//
//   Profiler prof(Device::cuda());  ...a training step...;  prof.stop();
//   std::printf("%s", profile_table(prof).c_str());    // by op, by node (layers as *), by layer
//   save_profile(prof, "runs/x/profile_step3");  // runs/x/profile_step3.txt and .trace.json (runs/x must exist)
#pragma once
#include <string>
#include <vector>

#include "autograd/profiler.h"

namespace skipgrad {

// One line of a summary: what was grouped (an op, a node name with its layer numbers as '*', a layer), how often,
// and the time its forward and backward took (regions count as forward).
struct ProfileRow {
  std::string key;
  int64_t calls = 0;  // forward intervals (regions: marks); a node's backward is not counted again
  double forward_host_ms = 0, forward_device_ms = 0;
  double backward_host_ms = 0, backward_device_ms = 0;
  int64_t forward_bytes = 0;  // the forwards' bytes_delta summed: what they left allocated (outputs, saved tensors)
  double device_ms() const { return forward_device_ms + backward_device_ms; }
  double host_ms() const { return forward_host_ms + backward_host_ms; }
};

// Per op (regions under their own names), most device time first.
std::vector<ProfileRow> profile_by_op(const Profiler& prof);
// Per node name with its layer numbers replaced by '*' ("enc.*.ffn.fc1.linear": the six encoder layers' fc1
// together), most device time first: the cost of each part of a topology.
std::vector<ProfileRow> profile_by_scope(const Profiler& prof);
// Per layer, in the order the forward reached them: a node's layer_scope ("enc.3"; "dec.0"), else its first part
// ("output_projection", "src_embed"); regions under their names. How the cost spreads over the depth.
std::vector<ProfileRow> profile_by_layer(const Profiler& prof);
// The totals and the three summaries as aligned text, each cut to its `top` rows.
std::string profile_table(const Profiler& prof, size_t top = 25);
// The events in the Trace Event Format (chrome://tracing, Perfetto): a "host" track and, for a CUDA profile, a
// "cuda stream" track, each event an interval named after its node, with its op and phase as args; and a counter
// "memory in use (MiB)" of the profiled device, at each mark.
std::string profile_chrome_trace(const Profiler& prof);
// Writes base + ".txt" (profile_table with `top` rows) and base + ".trace.json", each atomically.
void save_profile(const Profiler& prof, const std::string& base, size_t top = 60);

}  // namespace skipgrad
