#include "autograd/profiler.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

#include "tensor/allocator.h"
#include "tensor/error.h"

namespace skipgrad {

namespace detail {
thread_local Profiler* t_profiler = nullptr;
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
  if (detail::t_profiler)
    fail("Profiler", ": a profiler of device ", detail::t_profiler->device().str(),
         " already runs on this thread; stop it before starting one of device ", device.str());
  if (!device.is_cpu()) backend_ = &backend_for(device);  // throws, naming the device, when it is not available
  marks_.reserve(4096);
  events_.reserve(4096);
  marks_.push_back(take_mark());
  detail::t_profiler = this;
}

Profiler::~Profiler() {
  if (detail::t_profiler == this) detail::t_profiler = nullptr;
}

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
  if (detail::t_profiler == this) detail::t_profiler = nullptr;
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

namespace {
bool is_digit(char c) { return std::isdigit((unsigned char)c) != 0; }

// "enc.3.ffn" -> {"enc", "3", "ffn"}
std::vector<std::string_view> dot_parts(std::string_view name) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t end = std::min(name.find('.', start), name.size());
    parts.push_back(name.substr(start, end - start));
    if (end == name.size()) return parts;
    start = end + 1;
  }
}
bool is_layer_number(std::string_view part) { return !part.empty() && std::all_of(part.begin(), part.end(), is_digit); }

// "enc.3.ffn.fc1.linear" -> "enc.*.ffn.fc1.linear": every dot-separated part made of digits only.
std::string layers_as_star(const std::string& name) {
  const std::vector<std::string_view> parts = dot_parts(name);
  std::string out;
  for (size_t i = 0; i < parts.size(); i++) {
    if (i) out += '.';
    out += is_layer_number(parts[i]) ? std::string_view("*") : parts[i];
  }
  return out;
}

// "enc.3.ffn.fc1.linear" -> "enc.3"; "output_projection.linear" -> "output_projection"; "sum" -> "sum".
std::string layer_of(const std::string& name) {
  const std::vector<std::string_view> parts = dot_parts(name);
  for (size_t i = 0; i < parts.size(); i++)
    if (is_layer_number(parts[i])) return std::string(name.data(), parts[i].data() + parts[i].size());
  return std::string(parts[0]);
}

// Rows by key, most device time first; or, with in_order, in the order the keys first occur.
template <class KeyFn>
std::vector<ProfileRow> group(const std::vector<ProfileEvent>& events, KeyFn key, bool in_order = false) {
  std::map<std::string, ProfileRow> rows;
  std::vector<std::string> order;
  for (const ProfileEvent& e : events) {
    std::string k = key(e);
    auto [it, added] = rows.try_emplace(k);
    if (added) order.push_back(k);
    ProfileRow& r = it->second;
    if (e.phase == ProfilePhase::Backward) {
      r.backward_host_ms += e.host_ms;
      r.backward_device_ms += e.device_ms;
    } else {
      r.calls++;
      r.forward_bytes += e.bytes_delta;
      r.forward_host_ms += e.host_ms;
      r.forward_device_ms += e.device_ms;
    }
  }
  std::vector<ProfileRow> out;
  for (const std::string& k : order) {
    ProfileRow& r = rows.at(k);
    r.key = k;
    out.push_back(r);
  }
  if (!in_order) std::stable_sort(out.begin(), out.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.device_ms() > b.device_ms(); });
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Columns: calls, host ms of the forwards and backwards, the same on the device (a CUDA profile), share of the
// device total.
std::string rows_table(const char* title, const std::vector<ProfileRow>& rows, size_t top, double device_total,
                       bool device_differs) {
  size_t width = 24;
  for (size_t i = 0; i < rows.size() && i < top; i++) width = std::max(width, rows[i].key.size());
  std::string s;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s %7s %11s %11s", (int)width, title, "calls", "fwd host ms", "bwd host ms");
  s += line;
  if (device_differs) s += "  fwd dev ms  bwd dev ms";
  s += "  share  fwd MiB\n";
  for (size_t i = 0; i < rows.size() && i < top; i++) {
    const ProfileRow& r = rows[i];
    std::snprintf(line, sizeof line, "%-*s %7lld %11.3f %11.3f", (int)width, r.key.c_str(), (long long)r.calls,
                  r.forward_host_ms, r.backward_host_ms);
    s += line;
    if (device_differs) s += fmt("%12.3f", r.forward_device_ms) + fmt("%12.3f", r.backward_device_ms);
    s += fmt("  %5.1f%%", device_total > 0 ? 100 * r.device_ms() / device_total : 0);
    s += fmt("  %7.1f\n", (double)r.forward_bytes / (1 << 20));
  }
  if (rows.size() > top) s += "(" + std::to_string(rows.size() - top) + " more)\n";
  return s;
}

// JSON string contents: quotes, backslashes and control characters escaped.
std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if ((unsigned char)c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", (unsigned)(unsigned char)c);
      out += b;
    }
    else out += c;
  }
  return out;
}
}  // namespace

std::vector<ProfileRow> Profiler::by_op() const {
  return group(events(), [](const ProfileEvent& e) { return e.phase == ProfilePhase::Region ? e.name : e.op; });
}

std::vector<ProfileRow> Profiler::by_scope() const {
  return group(events(), [](const ProfileEvent& e) { return layers_as_star(e.name); });
}

std::vector<ProfileRow> Profiler::by_layer() const {
  auto key = [](const ProfileEvent& e) { return e.phase == ProfilePhase::Region ? e.name : layer_of(e.name); };
  return group(events(), key, /*in_order=*/true);
}

std::string Profiler::table(size_t top) const {
  const bool device_differs = backend_ != nullptr;
  const double device_total = device_total_ms();
  std::string s = "profile (" + std::string(device_differs ? device_.str() : "cpu") + "): " +
                  std::to_string(events().size()) + " intervals, host " + fmt("%.3f", host_total_ms()) + " ms";
  if (device_differs) s += ", device " + fmt("%.3f", device_total) + " ms";
  s += "\n(an interval ends where an op records its node, a node's backward returns, or a region is marked;";
  if (device_differs) s += " device time includes the GPU's idle waits for the host;";
  s += " share: of the device total; fwd MiB: what the forwards left allocated)\n";
  s += "memory in use on " + device_.str() + ": " + fmt("%.1f", (double)start_bytes_ / (1 << 20)) +
       " MiB at the start, at most " + fmt("%.1f", (double)max_bytes_in_use() / (1 << 20)) + " MiB at a mark\n";
  s += rows_table("op", by_op(), top, device_total, device_differs);
  s += "\n";
  s += rows_table("node (layers as *)", by_scope(), top, device_total, device_differs);
  s += "\n";
  s += rows_table("layer (forward order)", by_layer(), top, device_total, device_differs);
  return s;
}

std::string Profiler::chrome_trace() const {
  // Trace Event Format: complete events ("ph": "X") with microsecond timestamps; pid 0, tid 0 the host, tid 1 the
  // device's stream.
  std::string s = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  s += "{\"ph\": \"M\", \"pid\": 0, \"tid\": 0, \"name\": \"thread_name\", \"args\": {\"name\": \"host\"}}";
  if (backend_)
    s += ",\n{\"ph\": \"M\", \"pid\": 0, \"tid\": 1, \"name\": \"thread_name\", \"args\": {\"name\": \"" +
         device_.str() + " stream\"}}";
  auto event = [&](const ProfileEvent& e, int tid, double start_ms, double dur_ms) {
    s += ",\n{\"ph\": \"X\", \"pid\": 0, \"tid\": " + std::to_string(tid) + ", \"name\": \"" + json_escape(e.name) +
         "\", \"cat\": \"" + profile_phase_name(e.phase) + "\", \"ts\": " + fmt("%.3f", start_ms * 1e3) +
         ", \"dur\": " + fmt("%.3f", dur_ms * 1e3) + ", \"args\": {\"op\": \"" + json_escape(e.op) + "\"}}";
  };
  auto memory = [&](double at_ms, int64_t bytes) {
    s += ",\n{\"ph\": \"C\", \"pid\": 0, \"name\": \"memory in use (MiB)\", \"ts\": " + fmt("%.3f", at_ms * 1e3) +
         ", \"args\": {\"" + device_.str() + "\": " + fmt("%.3f", (double)bytes / (1 << 20)) + "}}";
  };
  memory(0, start_bytes_);
  for (const ProfileEvent& e : events()) {
    event(e, 0, e.host_start_ms, e.host_ms);
    if (backend_) event(e, 1, e.device_start_ms, e.device_ms);
    memory(e.host_start_ms + e.host_ms, e.bytes_in_use);
  }
  s += "\n]}\n";
  return s;
}

}  // namespace skipgrad
