// Atomic file writes (temporary, fsync, rename, fsync of the folder), whole-file reads and shell quoting.
#include "tensor/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace skipgrad {

namespace {
namespace fs = std::filesystem;

// errno's text; read it right after the failed call, before anything else can change it.
std::string errno_str(int err) { return std::strerror(err); }

// How write_file_atomic writes `path`.
struct WriteTarget {
  enum Kind { Atomic, InPlace, Stream } kind;
  std::string path;        // Atomic: the file a rename replaces (through symlinks, their last target)
  FILE* stream = nullptr;  // Stream: stdout or stderr
};

// Whether a link path names an open descriptor (/dev/fd/3, /proc/self/fd/3, /proc/1234/fd/3): what it leads to is
// that descriptor's file, which the shell may have opened for appending.
bool is_descriptor_link(const fs::path& p) {
  const std::string s = p.lexically_normal().string();
  return s.rfind("/dev/fd/", 0) == 0 || (s.rfind("/proc/", 0) == 0 && s.find("/fd/") != std::string::npos);
}

WriteTarget write_target(std::string_view op, const std::string& path) {
  check(!path.empty(), op, ": empty output path");
  // The process's own stdout or stderr, by any name (the same file: device and inode): written through its C
  // stream, in order with what the program prints (opened anew, a file would be written from its start over that
  // output; renamed over, replaced). By name too, for a stream that is closed.
  struct stat target_stat;
  if (::stat(path.c_str(), &target_stat) == 0)
    for (int fd : {1, 2}) {
      struct stat fd_stat;
      if (::fstat(fd, &fd_stat) == 0 && fd_stat.st_dev == target_stat.st_dev && fd_stat.st_ino == target_stat.st_ino)
        return {WriteTarget::Stream, path, fd == 1 ? stdout : stderr};
    }
  const std::pair<const char*, FILE*> streams[] = {{"/dev/stdout", stdout}, {"/dev/fd/1", stdout},
                                                   {"/proc/self/fd/1", stdout}, {"/dev/stderr", stderr},
                                                   {"/dev/fd/2", stderr}, {"/proc/self/fd/2", stderr}};
  for (const auto& [name, stream] : streams)
    if (path == name) return {WriteTarget::Stream, path, stream};
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);  // (through symlinks)
  check(ec != std::errc::too_many_symbolic_link_levels, op, ": '", path, "' is a loop of symbolic links");
  check(!fs::is_directory(st), op, ": '", path, "' is a folder: give the path of a file to write");
  if (fs::exists(st) && !fs::is_regular_file(st)) return {WriteTarget::InPlace, path};  // a FIFO or a device
  fs::path target = path;  // a file, or none yet: its symlinks are followed to the file itself (the links stay)
  for (int hops = 0; fs::is_symlink(fs::symlink_status(target, ec)); ++hops) {
    check(hops < 40, op, ": '", path, "' is a loop of symbolic links");
    if (is_descriptor_link(target)) return {WriteTarget::InPlace, path};  // appended to, never renamed over
    const fs::path next = fs::read_symlink(target, ec);
    if (ec) break;
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  return {WriteTarget::Atomic, target.string()};
}

void write_all(std::string_view op, int fd, std::string_view bytes, const std::string& file) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(op, ": writing '", file, "' failed: ", errno_str(w < 0 ? errno : ENOSPC));
    p += w;
    n -= (size_t)w;
  }
}

// The temporary, fsync'ed, renamed over target; then the folder fsync'ed, which makes the rename durable.
void write_via_rename(std::string_view op, const std::string& target, const std::vector<std::string_view>& pieces) {
  static std::atomic<uint64_t> counter{0};
  // A file replaced keeps its permissions (a checkpoint made private stays so): the temporary is created with them,
  // so it is never readable by more users than the file (umask may only take bits away; fchmod restores them). A
  // new file gets 0644 less umask.
  struct stat old_stat;
  const bool replacing = ::stat(target.c_str(), &old_stat) == 0;
  const mode_t mode = replacing ? old_stat.st_mode & 07777 : 0644;
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; attempt++) {  // a temporary of the same name left by a killed run: the next name
    tmp = target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
    if (fd < 0 && !(errno == EEXIST && attempt < 100)) fail(op, ": cannot create '", tmp, "': ", errno_str(errno));
  }
  try {
    if (replacing && ::fchmod(fd, mode) != 0)
      fail(op, ": cannot give '", tmp, "' the permissions of '", target, "': ", errno_str(errno));
    for (std::string_view piece : pieces) write_all(op, fd, piece, tmp);
    if (::fsync(fd) != 0) fail(op, ": fsync of '", tmp, "' failed: ", errno_str(errno));
    const int closed = ::close(fd), close_errno = errno;
    fd = -1;
    if (closed != 0) fail(op, ": closing '", tmp, "' failed: ", errno_str(close_errno));
    if (::rename(tmp.c_str(), target.c_str()) != 0)
      fail(op, ": renaming '", tmp, "' to '", target, "' failed: ", errno_str(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  const fs::path parent = fs::path(target).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail(op, ": cannot open folder '", dir, "' to sync it: ", errno_str(errno));
  const int rc = ::fsync(dfd), sync_errno = errno;
  ::close(dfd);
  // (a file system that cannot sync a folder says EINVAL or ENOTSUP: the file is in place, as durable as it gets)
  if (rc != 0 && sync_errno != EINVAL && sync_errno != ENOTSUP)
    fail(op, ": fsync of folder '", dir, "' failed: ", errno_str(sync_errno));
}
}  // namespace

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces, std::string_view op) {
  const WriteTarget t = write_target(op, path);
  if (t.kind == WriteTarget::Stream) {
    bool ok = std::fflush(t.stream) == 0;
    for (std::string_view piece : pieces)
      ok = ok && std::fwrite(piece.data(), 1, piece.size(), t.stream) == piece.size();
    check(ok && std::fflush(t.stream) == 0, op, ": writing to '", path, "' failed");
    return;
  }
  if (t.kind == WriteTarget::InPlace) {  // appended: a descriptor the shell opened with >> keeps what it holds
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) fail(op, ": cannot open '", path, "' for writing: ", errno_str(errno));
    try {
      for (std::string_view piece : pieces) write_all(op, fd, piece, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    return;
  }
  write_via_rename(op, t.path, pieces);
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, std::vector<std::string_view>{text}, "write_file_atomic");
}

bool is_stream_or_device(std::string_view op, const std::string& path) {
  return write_target(op, path).kind != WriteTarget::Atomic;
}

void check_writable(std::string_view op, const std::string& path) {
  const WriteTarget t = write_target(op, path);
  if (t.kind != WriteTarget::Atomic) return;  // opening a pipe to test it would wait for its reader
  const std::string tmp = t.path + ".tmp." + std::to_string(::getpid());
  check((bool)std::ofstream(tmp, std::ios::binary | std::ios::trunc), op, ": cannot create '", tmp,
        "': is the folder of '", path, "' there and writable?");
  std::remove(tmp.c_str());
  // a file there already, which the program may also open itself (metrics.jsonl is appended to): writable too
  check(::access(t.path.c_str(), F_OK) != 0 || ::access(t.path.c_str(), W_OK) == 0, op, ": '", path,
        "' is not writable");
}

std::string read_file(const std::string& path, std::string_view op) {
  std::error_code ec;
  check(!fs::is_directory(path, ec), op, ": '", path, "' is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(op, ": cannot open '", path, "': ", errno_str(errno));
  std::string bytes;
  // A regular file: one read of its size, no second copy (checkpoints are large); then on to its end, should it
  // have grown. A pipe, a device or a /proc file (whose size says 0) is read to its end.
  const bool regular = fs::is_regular_file(path, ec);
  const uintmax_t size = regular ? fs::file_size(path, ec) : 0;
  if (regular && !ec && size > 0) {
    bytes.resize(size);
    in.read(bytes.data(), (std::streamsize)size);
    bytes.resize((size_t)in.gcount());  // shorter if it shrank meanwhile
  }
  if (in.good() && in.peek() != std::char_traits<char>::eof()) {
    std::ostringstream rest;
    rest << in.rdbuf();
    bytes += rest.str();
  }
  check(!in.bad(), op, ": reading '", path, "' failed: ", errno_str(errno));
  return bytes;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace skipgrad
