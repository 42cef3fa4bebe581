// The topology registry: name -> factory. Adding a topology = one new file in nn/topologies/ that defines
// `std::unique_ptr<Topology> make_topology_<name>()` (a `LayerTopology<YourLayer>` when the layer is all there
// is, nn/topology.h), plus one line in SKIPGRAD_TOPOLOGIES below.
#include "nn/topology.h"

namespace skipgrad::nn {

#define SKIPGRAD_TOPOLOGIES(X) \
  X(post_ln)                   \
  X(pre_ln)                    \
  X(resi_dual)                 \
  X(hybrid_norm)               \
  X(hybrid_norm_star)          \
  X(deep_norm)                 \
  X(sandwich_ln)               \
  X(peri_ln)                   \
  X(mix_ln)                    \
  X(res_post_norm)             \
  X(rezero)                    \
  X(admin)

#define SKIPGRAD_DECLARE_TOPOLOGY(name) std::unique_ptr<Topology> make_topology_##name();
SKIPGRAD_TOPOLOGIES(SKIPGRAD_DECLARE_TOPOLOGY)

namespace {
struct Entry {
  const char* name;
  std::unique_ptr<Topology> (*make)();
};
#define SKIPGRAD_TOPOLOGY_ENTRY(name) Entry{#name, &make_topology_##name},
const Entry kTopologies[] = {SKIPGRAD_TOPOLOGIES(SKIPGRAD_TOPOLOGY_ENTRY)};
}  // namespace

std::vector<std::string> topology_names() {
  std::vector<std::string> names;
  for (const Entry& e : kTopologies) names.emplace_back(e.name);
  return names;
}

std::unique_ptr<Topology> make_topology(const std::string& name) {
  for (const Entry& e : kTopologies)
    if (name == e.name) return e.make();
  std::string known;
  for (const Entry& e : kTopologies) known += std::string(known.empty() ? "" : ", ") + e.name;
  fail("make_topology", ": unknown topology '", name, "'; known: ", known);
}

}  // namespace skipgrad::nn
