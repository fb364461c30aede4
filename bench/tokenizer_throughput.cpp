// Encoding throughput of the tokenizer, one thread, in MB/s of input text.
//   tokenizer_throughput TOKENIZER_DIR FILE... [--whole]
// Each line of each file is one encode() call (one training record), as
// scripts/bench_tokenizer_hf.js does with HF `tokenizers`; --whole encodes each file as one
// string. One untimed warm-up pass, then timed passes until a second has gone by.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR FILE... [--whole]\n", argv[0]);
    return 2;
  }
  try {
    bool whole = false;
    std::vector<std::string> units;
    std::size_t bytes = 0;
    std::vector<std::string> files;
    for (int i = 2; i < argc; ++i) {
      if (std::string(argv[i]) == "--whole")
        whole = true;
      else
        files.push_back(argv[i]);
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      if (!in) throw std::runtime_error("cannot read " + f);
      std::stringstream ss;
      ss << in.rdbuf();
      std::string text = ss.str();
      if (whole) {
        units.push_back(text);
      } else {
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);)
          if (!line.empty()) units.push_back(line);
      }
    }
    for (const auto& u : units) bytes += u.size();

    auto t0 = std::chrono::steady_clock::now();
    auto tok = lora::data::Tokenizer::load(argv[1]);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::size_t tokens = 0;
    for (const auto& u : units) tokens += tok.encode(u).size();  // warm-up
    int passes = 0;
    auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (elapsed < 1.0) {
      for (const auto& u : units) tok.encode(u);
      ++passes;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    double mb_s = static_cast<double>(bytes) * passes / elapsed / 1e6;
    std::printf(
        "{\"impl\": \"loracpp\", \"mode\": \"%s\", \"MB_per_s\": %.2f, \"bytes\": %zu, "
        "\"calls\": %zu, \"tokens\": %zu, \"passes\": %d, \"load_s\": %.3f}\n",
        whole ? "whole" : "lines", mb_s, bytes, units.size(), tokens, passes, load_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_throughput: %s\n", e.what());
    return 1;
  }
  return 0;
}
