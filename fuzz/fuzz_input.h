// What every fuzz target shares: the input as a file in a folder of this process's own (most
// parsers of outside input read files, as the trainer does), and the entry point libFuzzer and
// the corpus runner (corpus_main.cpp) call.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

namespace lora::fuzz {

// A folder for this process's inputs, created on first use, reused (one input at a time) and
// removed when the process exits normally.
class ScratchDir {
 public:
  ScratchDir() {
    // A memory-backed folder where there is one: a write to disk can wait seconds on writeback
    // while other processes write, and libFuzzer's per-input timeout counts wall-clock time.
    std::error_code ec;
    const bool shm =
        std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0;
    const std::filesystem::path root = shm ? "/dev/shm" : std::filesystem::temp_directory_path();
    path_ = root / ("lora-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline const std::filesystem::path& scratch_dir() {
  static const ScratchDir dir;
  return dir.path();
}

// Writes `bytes` to scratch_dir()/name (replacing it) and returns the path.
inline std::filesystem::path write_input(const std::string& name, std::string_view bytes) {
  const auto path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

inline std::string_view as_text(const uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace lora::fuzz
