// Helpers every test uses: where ../shared is, temporary folders, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

namespace lora::test {

// The shared reference folder: $LORA_SHARED, else ../shared beside the repository root.
std::filesystem::path shared_dir();
// True when shared_dir()/relative exists.
bool have_shared(const std::string& relative);
// True when LORA_REQUIRE_REFERENCES is set (CI sets it): a reference test that cannot find its
// data or torch fails instead of skipping, so no reference check silently stops running.
bool references_required();

// A fresh folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// The lora CLI under test: $LORA_BIN, else build/lora.
std::string lora_bin();
// Runs build/lora with the arguments (no shell), capturing stdout and stderr.
CommandResult run_lora(const std::vector<std::string>& args, const std::string& stdin_text = "");
// Runs any program (argv[0] looked up in PATH).
CommandResult run_program(const std::vector<std::string>& argv, const std::string& stdin_text = "");

// Debian's python3 (with python3-torch), or empty when torch is not importable.
std::string torch_python();

std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& text);

}  // namespace lora::test

// Skips the test with a clear message when ../shared/<relative> is missing (fails instead where
// references_required()).
#define LORA_MISSING_REFERENCE(message)                               \
  do {                                                                \
    if (::lora::test::references_required())                          \
      GTEST_FAIL() << message << " (LORA_REQUIRE_REFERENCES is set)"; \
    GTEST_SKIP() << message;                                          \
  } while (0)

#define LORA_REQUIRE_SHARED(relative)                                       \
  do {                                                                      \
    if (!::lora::test::have_shared(relative))                               \
      LORA_MISSING_REFERENCE("shared reference data missing: "              \
                             << (::lora::test::shared_dir() / (relative))   \
                             << " (set LORA_SHARED to the shared folder)"); \
  } while (0)

#define LORA_REQUIRE_TORCH()                                                                \
  do {                                                                                      \
    if (::lora::test::torch_python().empty())                                               \
      LORA_MISSING_REFERENCE(                                                               \
          "python3 with torch not found (scripts/setup.sh --test installs python3-torch)"); \
  } while (0)
