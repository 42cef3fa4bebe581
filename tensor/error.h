// skipgrad::Error and the argument checks every public call uses.
//
// A failed check throws Error with a message that names the op and shows the offending shapes, dtypes or
// devices, e.g. "matmul: inner dimensions differ: [32,64] @ [32,64]". Never an assert, never an abort.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace skipgrad {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

using Shape = std::vector<int64_t>;

// "[32,64]"
std::string shape_str(const Shape& s);

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  if constexpr (std::is_same_v<T, Shape>) os << shape_str(v);
  else os << v;
  append(os, rest...);
}
}  // namespace detail

// Build a message from pieces: fail("matmul", ": inner dimensions differ: ", a, " @ ", b).
template <class... Parts>
[[noreturn]] void fail(const std::string& op, const Parts&... parts) {
  std::ostringstream os;
  os << op;
  detail::append(os, parts...);
  throw Error(os.str());
}

template <class... Parts>
void check(bool ok, const std::string& op, const Parts&... parts) {
  if (!ok) fail(op, parts...);
}

}  // namespace skipgrad
