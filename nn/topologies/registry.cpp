// The topology registry: name -> factory. Adding a topology to the library = one new file in nn/topologies/ that
// defines `std::unique_ptr<Topology> make_topology_<name>()` (a `LayerTopology<YourLayer>` when the layer is all
// there is, nn/topology.h), plus one line in SKIPGRAD_TOPOLOGIES below. A program can add its own without touching
// the library: a TopologyRegistration (nn/topology.h) puts its factory after the built-in ones while it lives.
#include <mutex>

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
  X(admin)                     \
  X(b2t)                       \
  X(layer_scale)               \
  X(sub_ln)                    \
  X(normformer)                \
  X(t_fixup)

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

namespace {
// The topologies programs registered, in registration order (TopologyRegistration). A function's static, so that a
// registration in another file's static initialiser finds it constructed.
struct UserTopology {
  std::string name;
  TopologyFactory make;
};
struct UserTopologies {
  std::mutex mutex;
  std::vector<UserTopology> list;
};
UserTopologies& user_topologies() {
  // Never destroyed: a registration held by a global whose constructor ran before the first registration (a
  // unique_ptr, an optional) is destroyed after every function's static, and must still find the registry.
  static UserTopologies* registry = new UserTopologies;
  return *registry;
}
}  // namespace

std::vector<std::string> topology_names() {
  std::vector<std::string> names;
  for (const Entry& e : kTopologies) names.emplace_back(e.name);
  UserTopologies& user = user_topologies();
  std::lock_guard<std::mutex> lock(user.mutex);
  for (const UserTopology& u : user.list) names.push_back(u.name);
  return names;
}

std::unique_ptr<Topology> make_topology(const std::string& name) {
  std::unique_ptr<Topology> made;
  for (const Entry& e : kTopologies)
    if (name == e.name) {
      made = e.make();
      break;
    }
  if (!made) {
    TopologyFactory make;
    {
      UserTopologies& user = user_topologies();
      std::lock_guard<std::mutex> lock(user.mutex);
      for (const UserTopology& u : user.list)
        if (name == u.name) make = u.make;
    }
    if (!make) {
      std::string known;
      for (const std::string& n : topology_names()) known += (known.empty() ? "" : ", ") + n;
      fail("make_topology", ": unknown topology '", name, "'; known: ", known);
    }
    try {
      made = make();  // outside the lock: a factory may itself ask the registry
    } catch (const std::exception& e) {
      fail("make_topology", ": the factory registered for '", name, "' failed: ", e.what());
    }
    check(made != nullptr, "make_topology", ": the factory registered for '", name, "' returned no topology");
  }
  // The name is the topology's identity in configs, checkpoints and dumps: the object must answer to it.
  check(made->name() == name, "make_topology", ": the factory registered for '", name, "' made a topology named '",
        made->name(), "'; name() must return the registered name");
  return made;
}

TopologyRegistration::TopologyRegistration(std::string name, TopologyFactory make) : name_(std::move(name)) {
  const char* who = "TopologyRegistration";
  check(!name_.empty() && name_.size() <= 64, who, ": a topology name must be 1 to 64 characters, got '", name_, "'");
  for (char c : name_)
    check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_', who, ": topology name '", name_,
          "' may hold only a-z, 0-9 and _ (it is written into configs, file names and command lines)");
  check(static_cast<bool>(make), who, ": no factory given for topology '", name_, "'");
  for (const Entry& e : kTopologies)
    check(name_ != e.name, who, ": '", name_, "' is a built-in topology; pick another name");
  UserTopologies& user = user_topologies();
  std::lock_guard<std::mutex> lock(user.mutex);
  for (const UserTopology& u : user.list)
    check(name_ != u.name, who, ": topology '", name_, "' is registered already");
  user.list.push_back({name_, std::move(make)});
}

TopologyRegistration::~TopologyRegistration() {
  UserTopologies& user = user_topologies();
  std::lock_guard<std::mutex> lock(user.mutex);
  for (auto it = user.list.begin(); it != user.list.end(); ++it)
    if (it->name == name_) {
      user.list.erase(it);
      break;
    }
}

}  // namespace skipgrad::nn
