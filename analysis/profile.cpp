// Reading a profile: its intervals grouped, as text and as a Chrome trace (analysis/profile.h).
#include "analysis/profile.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

#include "analysis/graph.h"

namespace skipgrad {

namespace {
// "enc.3.ffn.fc1.linear" -> "enc.*.ffn.fc1.linear": every dot-separated part made of digits only.
std::string layers_as_star(const std::string& name) {
  const std::vector<std::string> parts = name_parts(name);
  std::string out;
  for (size_t i = 0; i < parts.size(); i++) {
    const std::string& part = parts[i];
    const bool number =
        !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit((unsigned char)c); });
    if (i) out += '.';
    if (number) out += '*';
    else out += part;
  }
  return out;
}

// "enc.3.ffn.fc1.linear" -> "enc.3" (layer_scope); "output_projection.linear" -> "output_projection"; "sum" -> "sum".
std::string layer_of(const std::string& name) {
  std::string layer = layer_scope(name);
  return layer.empty() ? name.substr(0, name.find('.')) : layer;
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
  if (rows.size() > top) s += fmt("(%.0f more)\n", (double)(rows.size() - top));
  return s;
}

}  // namespace

std::vector<ProfileRow> profile_by_op(const Profiler& prof) {
  return group(prof.events(), [](const ProfileEvent& e) { return e.phase == ProfilePhase::Region ? e.name : e.op; });
}

std::vector<ProfileRow> profile_by_scope(const Profiler& prof) {
  return group(prof.events(), [](const ProfileEvent& e) { return layers_as_star(e.name); });
}

std::vector<ProfileRow> profile_by_layer(const Profiler& prof) {
  auto key = [](const ProfileEvent& e) { return e.phase == ProfilePhase::Region ? e.name : layer_of(e.name); };
  return group(prof.events(), key, /*in_order=*/true);
}

std::string profile_table(const Profiler& prof, size_t top) {
  const bool device_differs = !prof.device().is_cpu();
  const double device_total = prof.device_total_ms();
  const Device device = prof.device();
  std::string s = "profile (" + device.str() + "): " + std::to_string(prof.events().size()) + " intervals, host " +
                  fmt("%.3f", prof.host_total_ms()) + " ms";
  if (device_differs) s += ", device " + fmt("%.3f", device_total) + " ms";
  s += "\n(an interval ends where an op records its node, a node's backward returns, or a region is marked;";
  if (device_differs) s += " device time includes the GPU's idle waits for the host;";
  s += " share: of the device total; fwd MiB: what the forwards left allocated)\n";
  s += "memory in use on " + device.str() + ": " + fmt("%.1f", (double)prof.start_bytes_in_use() / (1 << 20)) +
       " MiB at the start, at most " + fmt("%.1f", (double)prof.max_bytes_in_use() / (1 << 20)) + " MiB at a mark\n";
  s += rows_table("op", profile_by_op(prof), top, device_total, device_differs);
  s += "\n";
  s += rows_table("node (layers as *)", profile_by_scope(prof), top, device_total, device_differs);
  s += "\n";
  s += rows_table("layer (forward order)", profile_by_layer(prof), top, device_total, device_differs);
  return s;
}

std::string profile_chrome_trace(const Profiler& prof) {
  const bool device_track = !prof.device().is_cpu();
  const std::string device = prof.device().str();
  // Trace Event Format: complete events ("ph": "X") with microsecond timestamps; pid 0, tid 0 the host, tid 1 the
  // device's stream.
  std::string s = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  s += "{\"ph\": \"M\", \"pid\": 0, \"tid\": 0, \"name\": \"thread_name\", \"args\": {\"name\": \"host\"}}";
  if (device_track)
    s += ",\n{\"ph\": \"M\", \"pid\": 0, \"tid\": 1, \"name\": \"thread_name\", \"args\": {\"name\": \"" +
         device + " stream\"}}";
  auto event = [&](const ProfileEvent& e, int tid, double start_ms, double dur_ms) {
    s += ",\n{\"ph\": \"X\", \"pid\": 0, \"tid\": " + std::to_string(tid) + ", \"name\": ";
    append_json_string(s, e.name);
    s += ", \"cat\": \"" + std::string(profile_phase_name(e.phase)) + "\", \"ts\": " + fmt("%.3f", start_ms * 1e3) +
         ", \"dur\": " + fmt("%.3f", dur_ms * 1e3) + ", \"args\": {\"op\": ";
    append_json_string(s, e.op);
    s += "}}";
  };
  auto memory = [&](double at_ms, int64_t bytes) {
    s += ",\n{\"ph\": \"C\", \"pid\": 0, \"name\": \"memory in use (MiB)\", \"ts\": " + fmt("%.3f", at_ms * 1e3) +
         ", \"args\": {\"" + device + "\": " + fmt("%.3f", (double)bytes / (1 << 20)) + "}}";
  };
  memory(0, prof.start_bytes_in_use());
  for (const ProfileEvent& e : prof.events()) {
    event(e, 0, e.host_start_ms, e.host_ms);
    if (device_track) event(e, 1, e.device_start_ms, e.device_ms);
    memory(e.host_start_ms + e.host_ms, e.bytes_in_use);
  }
  s += "\n]}\n";
  return s;
}


void save_profile(const Profiler& prof, const std::string& base, size_t top) {
  write_file_atomic(base + ".txt", profile_table(prof, top));
  write_file_atomic(base + ".trace.json", profile_chrome_trace(prof));
}

}  // namespace skipgrad
