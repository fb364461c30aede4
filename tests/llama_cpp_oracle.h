// The real llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binaries, installed under
// scripts/llama_cpp by `scripts/setup.sh --test`) run on a GGUF file, for the tests to compare
// against.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace lora::test {

inline std::filesystem::path llama_cpp_dir() {
  return std::filesystem::path(LORA_SOURCE_DIR) / "scripts" / "llama_cpp";
}

inline bool have_llama_cpp() {
  return std::filesystem::exists(llama_cpp_dir() / "node_modules" / "node-llama-cpp" /
                                 "package.json") &&
         run_program({"node", "--version"}).exit_code == 0;
}

// Runs oracle.mjs with `args`; fails the test (returns null) when it does not answer JSON.
inline nlohmann::json llama_cpp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"node", (llama_cpp_dir() / "oracle.mjs").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_program(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nullptr;
  return nlohmann::json::parse(r.out);
}

inline std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

}  // namespace lora::test

#define LORA_REQUIRE_LLAMA_CPP()                                          \
  do {                                                                    \
    if (!::lora::test::have_llama_cpp())                                  \
      LORA_MISSING_REFERENCE(                                             \
          "llama.cpp oracle not installed (scripts/setup.sh --test runs " \
          "npm ci in scripts/llama_cpp)");                                \
  } while (0)
