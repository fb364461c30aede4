#include "trainer/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>

namespace lora {

namespace fs = std::filesystem;

namespace {

std::string unique_suffix() {
  std::random_device rd;
  return std::to_string(::getpid()) + "-" + std::to_string(rd());
}

[[noreturn]] void fail(const std::string& what, const fs::path& p) {
  throw std::runtime_error(what + " " + p.string() + ": " + std::strerror(errno));
}

}  // namespace

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open for fsync", path);
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const fs::path& path, std::span<const std::byte> bytes) {
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  fs::path tmp = dir / ("." + path.filename().string() + ".tmp-" + unique_suffix());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      errno = saved;
      fail("cannot write", tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail("cannot flush", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail("cannot rename into", path);
  }
  fsync_path(dir);
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

void remove_dir_atomic(const fs::path& dir) {
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  const fs::path aside = parent / ("." + dir.filename().string() + ".old-" + unique_suffix());
  std::error_code ec;
  fs::rename(dir, aside, ec);
  if (!ec) fs::remove_all(aside, ec);
}

void write_dir_atomic(const fs::path& dir, const std::function<void(const fs::path& tmp)>& fill) {
  fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  std::string base = dir.filename().string();
  fs::path tmp = parent / ("." + base + ".tmp-" + unique_suffix());
  std::error_code made;
  fs::create_directories(parent, made);
  if (!made) fs::create_directory(tmp, made);
  if (made)
    throw std::runtime_error("cannot write " + dir.string() + ": creating " + tmp.string() +
                             " fails (" + made.message() + ")");
  try {
    fill(tmp);
    for (const auto& e : fs::directory_iterator(tmp))
      if (e.is_regular_file()) fsync_path(e.path());
    fsync_path(tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  // rename(2) cannot replace a non-empty folder: move the old one aside first, then drop it.
  fs::path old = parent / ("." + base + ".old-" + unique_suffix());
  bool had_old = fs::exists(dir);
  if (had_old) fs::rename(dir, old);
  try {
    fs::rename(tmp, dir);
  } catch (...) {
    if (had_old) fs::rename(old, dir);
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fsync_path(parent);
  if (had_old) {
    std::error_code ec;
    fs::remove_all(old, ec);
  }
}

}  // namespace lora
