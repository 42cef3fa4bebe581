// libFuzzer target: the graph JSON reader (Graph::from_json), and the DOT dump and path analysis of what it reads.
// Any input must parse or throw skipgrad::Error.
// A graph that parses must write JSON that parses again (writer and reader agree), to the same text once normalised.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "analysis/graph.h"
#include "analysis/paths.h"

using namespace skipgrad;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Graph g;
  try {
    g = Graph::from_json(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const Error&) {
    return 0;
  }
  // What the writer emits must read back (a throw here is a finding), and from then on the text is a fixed point.
  // (Not from the first write: input text such as -0 or a negative norm is normalised to 0 or null on the way.)
  const std::string text = Graph::from_json(g.to_json()).to_json();
  if (Graph::from_json(text).to_json() != text) std::abort();
  (void)g.to_dot();
  DotOptions boxed;
  boxed.max_depth = 1;
  boxed.filter = g.nodes.empty() ? "" : g.nodes.back().name;  // a name always matches its own node
  (void)g.to_dot(boxed);
  (void)g.users();
  if (!g.nodes.empty()) (void)analyze_paths(g, (int64_t)g.nodes.size() - 1);
  return 0;
}
