// Files: one atomic write for every file the library and its programs write (checkpoints, graph dumps, tables,
// vocabularies), a whole-file read, and quoting for /bin/sh.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace skipgrad {

// Writes `text` to a temporary beside `path` (`path` + ".tmp.<pid>.<n>"), fsyncs it, renames it over `path` and
// fsyncs the folder, so `path` is whole or as it was, also after a crash. Through a symlink its last target is
// replaced so (the links stay). A device, a FIFO or a descriptor link (/dev/fd/3) is appended to directly, and
// the process's own stdout or stderr (by any name: the file of descriptor 1 or 2) is written through its C
// stream, in order with what the program prints. A folder or a loop of links is refused. Throws Error naming
// `op` on any failure; a temporary is never left behind.
void write_file_atomic(const std::string& path, const std::string& text);
// The same for a file made of pieces (a checkpoint's header and each tensor's bytes, not copied into one string).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces, std::string_view op);
// Whether write_file_atomic(path, ...) writes to a stream or a device (stdout or stderr by any name, a FIFO, a
// device, a descriptor link) rather than replacing a file: such a path has no folder to put files beside it and
// nothing to read back. Throws Error naming `op` where write_file_atomic would refuse the path (a folder).
bool is_stream_or_device(std::string_view op, const std::string& path);
// Throws Error, naming `op`, unless write_file_atomic(path, ...) could write there: not a folder, the folder takes
// its temporary file, and a file already there is writable. For the start of long work that ends by writing `path`.
void check_writable(std::string_view op, const std::string& path);
// The whole file (or what a pipe gives until its end). Throws Error naming `op` for a folder or a file it cannot
// open or read, with the system's reason.
std::string read_file(const std::string& path, std::string_view op = "read_file");
// s in single quotes for /bin/sh (a quote inside written '\''): one word, nothing expanded.
std::string shell_quote(const std::string& s);

}  // namespace skipgrad
