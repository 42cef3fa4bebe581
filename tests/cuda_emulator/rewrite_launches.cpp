// rewrite_launches IN.cu OUT.cpp: the CUDA emulator's one source transformation. Host C++ has no triple-chevron
// launch, so every
//     kernel<T, Op><<<grid, block, shared, stream>>>(args...)
// becomes
//     ::skipgrad_emu::launch("kernel<T, Op>", ::skipgrad_emu::LaunchConfig(grid, block, shared, stream),
//                            [&](auto... a) { kernel<T, Op>(a...); }, args...)
// on the same lines (a #line directive names the .cu file, so compiler messages point at it). Everything else
// is copied as it is; cuda_runtime.h of the emulator gives the rest of the CUDA dialect a host meaning.
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

[[noreturn]] void die(const std::string& file, size_t pos, const std::string& what) {
  std::cerr << "rewrite_launches: " << file << " at byte " << pos << ": " << what << "\n";
  std::exit(1);
}

bool in_line_comment(const std::string& s, size_t pos) {
  const size_t line_start = s.rfind('\n', pos) == std::string::npos ? 0 : s.rfind('\n', pos) + 1;
  return s.substr(line_start, pos - line_start).find("//") != std::string::npos;
}

// Start of the kernel expression that ends right before `end`: an identifier (with ::) and an optional
// balanced template argument list.
size_t kernel_start(const std::string& s, size_t end, const std::string& file) {
  size_t j = end;
  while (j > 0 && std::isspace((unsigned char)s[j - 1])) j--;
  if (j > 0 && s[j - 1] == '>') {
    int depth = 0;
    do {
      if (j == 0) die(file, end, "unbalanced template arguments before <<<");
      j--;
      if (s[j] == '>') depth++;
      if (s[j] == '<') depth--;
    } while (depth > 0);
  }
  while (j > 0 && (std::isalnum((unsigned char)s[j - 1]) || s[j - 1] == '_' || s[j - 1] == ':')) j--;
  return j;
}

// Index of the ')' that closes the '(' at `open`.
size_t closing_paren(const std::string& s, size_t open, const std::string& file) {
  int depth = 0;
  for (size_t i = open; i < s.size(); i++) {
    if (s[i] == '(') depth++;
    if (s[i] == ')' && --depth == 0) return i;
  }
  die(file, open, "unbalanced parentheses in a launch's arguments");
}

// x with each run of white space made one space (a kernel's name for messages).
std::string one_line(const std::string& x) {
  std::string out;
  for (char c : x) {
    if (!std::isspace((unsigned char)c)) out += c;
    else if (!out.empty() && out.back() != ' ') out += ' ';
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: rewrite_launches IN.cu OUT.cpp\n";
    return 2;
  }
  const std::string in = argv[1], out_path = argv[2];
  std::ifstream f(in, std::ios::binary);
  if (!f) die(in, 0, "cannot read");
  std::stringstream buf;
  buf << f.rdbuf();
  const std::string s = buf.str();

  std::string out = "#line 1 \"" + in + "\"\n";
  size_t copied = 0;
  for (size_t p = s.find("<<<"); p != std::string::npos; p = s.find("<<<", p + 3)) {
    if (in_line_comment(s, p)) continue;
    const size_t k0 = kernel_start(s, p, in);
    const size_t cfg_end = s.find(">>>", p);
    if (cfg_end == std::string::npos) die(in, p, "<<< without >>>");
    size_t open = cfg_end + 3;
    while (open < s.size() && std::isspace((unsigned char)s[open])) open++;
    if (open >= s.size() || s[open] != '(') die(in, p, "expected '(' after >>>");
    const size_t close = closing_paren(s, open, in);
    const std::string kernel = s.substr(k0, p - k0), cfg = s.substr(p + 3, cfg_end - p - 3),
                      args = s.substr(open + 1, close - open - 1);
    out += s.substr(copied, k0 - copied);
    out += "::skipgrad_emu::launch(\"" + one_line(kernel) + "\", ::skipgrad_emu::LaunchConfig(" + cfg +
           "), [&](auto... skipgrad_emu_args) { " + kernel + "(skipgrad_emu_args...); }";
    if (args.find_first_not_of(" \t\r\n") != std::string::npos) out += ", " + args;
    out += ")";
    copied = close + 1;
    p = close;
  }
  out += s.substr(copied);
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::binary);
    o << out;
    if (!o) die(out_path, 0, "cannot write");
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) die(out_path, 0, "cannot rename into place");
  return 0;
}
