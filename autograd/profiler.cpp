#include "autograd/profiler.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "tensor/allocator.h"
#include "tensor/error.h"

namespace skipgrad {

namespace detail {
// A thread's profiler. The slot forgets its profiler when the profiler stops or is destroyed (on any thread), and
// the profiler its slot when the thread ends, so neither is left pointing at the other once it is gone. The
// pointer is atomic because a stop on another thread writes it.
struct ProfilerSlot {
  std::atomic<Profiler*> profiler{nullptr};
  ~ProfilerSlot() {
    std::lock_guard<std::mutex> lock(mutex());
    if (Profiler* p = profiler.load()) p->slot_ = nullptr;
    profiler.store(nullptr);  // (a thread_local destroyed after this one would otherwise still see it)
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
};
thread_local ProfilerSlot t_slot;
Profiler* current_profiler() { return t_slot.profiler.load(std::memory_order_relaxed); }
}  // namespace detail

void Profiler::release_slot() {
  std::lock_guard<std::mutex> lock(detail::ProfilerSlot::mutex());
  if (slot_ && slot_->profiler.load() == this) slot_->profiler.store(nullptr);
  slot_ = nullptr;
}

const char* profile_phase_name(ProfilePhase p) {
  switch (p) {
    case ProfilePhase::Forward: return "forward";
    case ProfilePhase::Backward: return "backward";
    case ProfilePhase::Region: return "region";
  }
  return "?";
}

Profiler::Profiler(Device device) : device_(device) {
  if (Profiler* other = detail::current_profiler())
    fail("Profiler", ": a profiler of device ", other->device().str(),
         " already runs on this thread; stop it before starting one of device ", device.str());
  if (!device.is_cpu()) backend_ = &backend_for(device);  // throws, naming the device, when it is not available
  marks_.reserve(4096);
  events_.reserve(4096);
  marks_.push_back(take_mark());
  slot_ = &detail::t_slot;
  slot_->profiler.store(this);
}

Profiler::~Profiler() { release_slot(); }

Profiler::Mark Profiler::take_mark() {
  Mark m;
  if (backend_) m.device = backend_->time_mark();
  m.host = std::chrono::steady_clock::now();
  m.bytes_in_use = (int64_t)allocator_for(device_).stats().bytes_in_use;
  return m;
}

void Profiler::mark(std::string name, const char* op, ProfilePhase phase, int64_t node) {
  if (!running_) return;
  if (node >= 0) forward_event_[node] = events_.size();
  marks_.push_back(take_mark());
  ProfileEvent e;
  e.name = std::move(name);
  e.op = op;
  e.phase = phase;
  events_.push_back(std::move(e));
}

void Profiler::renamed(int64_t node, const std::string& name) {
  auto it = forward_event_.find(node);
  if (running_ && it != forward_event_.end()) events_[it->second].name = name;
}

void Profiler::stop() {
  if (!running_) return;
  release_slot();
  running_ = false;
  // Times from the marks: host clock differences, and the device's (waiting for each mark) or the host's.
  using ms = std::chrono::duration<double, std::milli>;
  const Mark& first = marks_.front();
  for (size_t i = 0; i < events_.size(); i++) {
    const Mark &from = marks_[i], &to = marks_[i + 1];
    ProfileEvent& e = events_[i];
    e.host_start_ms = ms(from.host - first.host).count();
    e.host_ms = ms(to.host - from.host).count();
    e.bytes_in_use = to.bytes_in_use;
    e.bytes_delta = to.bytes_in_use - from.bytes_in_use;
    if (backend_) {  // one elapsed time per interval; each starts where the previous one ended
      e.device_start_ms = i ? events_[i - 1].device_start_ms + events_[i - 1].device_ms : 0;
      e.device_ms = backend_->elapsed_ms(*from.device, *to.device);
    } else {
      e.device_start_ms = e.host_start_ms;
      e.device_ms = e.host_ms;
    }
  }
  start_bytes_ = first.bytes_in_use;
  marks_.clear();  // gives a CUDA profile's events back to the backend
  marks_.shrink_to_fit();
  forward_event_.clear();
}

const std::vector<ProfileEvent>& Profiler::events() const {
  check(!running_, "Profiler", ": still running; call stop() before reading its results");
  return events_;
}

double Profiler::host_total_ms() const {
  const auto& ev = events();
  return ev.empty() ? 0 : ev.back().host_start_ms + ev.back().host_ms;
}
double Profiler::device_total_ms() const {
  const auto& ev = events();
  return ev.empty() ? 0 : ev.back().device_start_ms + ev.back().device_ms;
}

int64_t Profiler::start_bytes_in_use() const {
  events();  // checks that the profiler has stopped
  return start_bytes_;
}
int64_t Profiler::max_bytes_in_use() const {
  int64_t most = start_bytes_;
  for (const ProfileEvent& e : events()) most = std::max(most, e.bytes_in_use);
  return most;
}

}  // namespace skipgrad
