// The profiler: where a step's time goes, per op and per graph node, on the host and on the device.
//
//   Profiler prof(Device::cuda());      // profiles this thread's ops until stop() (or its destruction)
//   auto L = loss(model.forward(x), y); L.backward(); opt.step(); opt.zero_grad();
//   prof.stop();                        // waits for the device, turns the marks into times
//   prof.events();                      // every interval: name, op, phase, host and device ms, memory
// Its summaries (by op, by node, by layer), the table and the Chrome trace: analysis/profile.h.
//
// How it measures. An op computes first and records its node last (record(), autograd/tape.h), so the profiler takes a
// mark there and charges the interval since the previous mark to that op: on the host clock, and, when the profiled
// device is CUDA, between two CUDA events queued on the backend's stream: the GPU time of the kernels the op queued,
// plus any time the GPU sat idle waiting for the host to queue them (the sum over a step is the step's device time; a
// host-bound step shows device times close to the host's). In the backward each node's backward is an interval ending
// at a mark, with the ops it calls (a weight gradient's matmul, a sum) inside it. Host work that is no op (module glue
// between ops, building a batch) is charged to the next op, unless it marks itself: profile_mark("name") charges the
// interval since the previous mark to a region of that name. backward() (its entry and the leaves' .grad at its end),
// the optimizers' step and zero_grad and clip_grad_norm mark themselves. Ops run under no_grad (evaluation) are
// profiled as well.
// While no profiler runs, the hooks cost a thread-local test.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"
#include "tensor/tensor.h"

namespace skipgrad {

enum class ProfilePhase { Forward, Backward, Region };
const char* profile_phase_name(ProfilePhase p);  // "forward", "backward", "region"

struct ProfileEvent {
  std::string name;  // the node's name ("enc.3.ffn.fc1.linear"), or the region's ("adam.step")
  std::string op;    // the op ("linear"), or "region"
  ProfilePhase phase = ProfilePhase::Forward;
  // Milliseconds since the profiler started; the device's equal the host's when the profiled device is the CPU.
  double host_start_ms = 0, host_ms = 0;
  double device_start_ms = 0, device_ms = 0;
  // The profiled device's allocator (tensor/allocator.h): bytes in use at the interval's end, and their change over
  // the interval (a forward's: its output and what it saved for the backward, less the temporaries it freed).
  int64_t bytes_in_use = 0, bytes_delta = 0;
};

namespace detail {
struct ProfilerSlot;
}

class Profiler {
 public:
  // Starts profiling the calling thread; device: whose timeline to read besides the host's (cpu: the host's only).
  // One profiler per thread at a time (a second is an Error naming both devices).
  explicit Profiler(Device device = Device::cpu());
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Stops profiling (waits for the device's marks); the results below are read after it. Idempotent. Stopping or
  // destroying it on another thread than the profiled one is allowed once that thread records no more ops.
  void stop();
  bool running() const { return running_; }
  Device device() const { return device_; }

  const std::vector<ProfileEvent>& events() const;
  double host_total_ms() const;    // first mark to last
  double device_total_ms() const;
  // The profiled device's bytes in use when the profiler started, and the most at any mark since.
  int64_t start_bytes_in_use() const;
  int64_t max_bytes_in_use() const;
  // For the hooks (record(), backward, profile_mark): charges the interval since the previous mark; node: the
  // graph node's id for a recorded op's forward, so that a later rename (Tensor::named) reaches its event.
  void mark(std::string name, const char* op, ProfilePhase phase, int64_t node = -1);
  void renamed(int64_t node, const std::string& name);

 private:
  struct Mark {
    std::chrono::steady_clock::time_point host;
    std::unique_ptr<Backend::TimeMark> device;  // null for a CPU profile
    int64_t bytes_in_use = 0;
  };
  Mark take_mark();
  void release_slot();  // the profiled thread no longer points here
  friend struct detail::ProfilerSlot;

  Device device_;
  Backend* backend_ = nullptr;  // the device's; null for a CPU profile
  bool running_ = true;
  std::vector<Mark> marks_;     // marks_[0] at the start, marks_[i + 1] ends events_[i]
  std::vector<ProfileEvent> events_;
  int64_t start_bytes_ = 0;
  std::unordered_map<int64_t, size_t> forward_event_;  // node id -> its forward's index in events_
  detail::ProfilerSlot* slot_ = nullptr;  // the profiled thread's, while it runs and that thread lives
};

namespace detail {
Profiler* current_profiler();  // the calling thread's running profiler, or null
}
// Whether a profiler runs on this thread.
inline bool profiling() { return detail::current_profiler() != nullptr; }
// Charges the interval since the previous mark to a region `name`; nothing when no profiler runs.
inline void profile_mark(std::string_view name) {
  if (Profiler* p = detail::current_profiler()) p->mark(std::string(name), "region", ProfilePhase::Region);
}

}  // namespace skipgrad
