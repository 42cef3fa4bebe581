// The gradient-check sweep: every op in the op table has at least one float64 finite-difference case, and all
// pass. A new op without a case fails here.
#include <map>

#include "test_util.h"

namespace sgtest {

static std::vector<std::function<std::vector<GradCase>()>>& makers() {
  static std::vector<std::function<std::vector<GradCase>()>> m;
  return m;
}
GradCaseRegistrar::GradCaseRegistrar(std::function<std::vector<GradCase>()> make) { makers().push_back(make); }

// Built on first use (after every registrar has run: static initialisation is over when tests run).
const std::vector<GradCase>& grad_cases() {
  static const std::vector<GradCase> cases = [] {
    std::vector<GradCase> all;
    for (auto& m : makers())
      for (GradCase& c : m()) all.push_back(std::move(c));
    return all;
  }();
  return cases;
}

TEST_SUITE("gradcheck") {
  TEST_CASE("every op in the op table has a gradient check") {
    std::map<std::string, int> count;
    for (const GradCase& c : grad_cases()) count[c.op]++;
    for (const OpInfo& op : op_table()) {
      INFO("op '" << std::string(op.name) << "' has no gradcheck case: add one with REGISTER_GRAD_CASES");
      CHECK(count[op.name] > 0);
    }
    for (const auto& entry : count) {  // not a structured binding: clang 14 cannot capture one (INFO does)
      const std::string& name = entry.first;
      INFO("gradcheck case names an op '" << name << "' that is not in the op table");
      CHECK_NOTHROW(op_info(name));
    }
  }

  TEST_CASE("every gradcheck case passes") {
    for (const GradCase& c : grad_cases()) {
      CAPTURE(c.op);
      CAPTURE(c.label);
      GradcheckResult r = gradcheck(c.f, c.inputs, 1e-6, c.atol, c.rtol);
      INFO(r.message);
      CHECK(r.ok);
    }
  }
}

}  // namespace sgtest
