// How long a chat template takes to parse and to render one conversation, for each model
// template in the shared folder. Training-data preparation renders every prefix of every
// conversation, so a render must cost microseconds.
//   build/bench/chat_template_render [--shared DIR] [--reps 2000]    prints one JSON object
// DIR defaults to $LORA_SHARED, else ../shared (run from the repository root).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A six-turn conversation with a system prompt, of the size chat datasets hold.
nlohmann::ordered_json conversation() {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back({{"role", "system"}, {"content", "You are a concise, helpful assistant."}});
  for (int turn = 0; turn < 3; ++turn) {
    messages.push_back(
        {{"role", "user"},
         {"content", "Question " + std::to_string(turn) +
                         ": how do I reverse a list in Python without copying it?"}});
    messages.push_back(
        {{"role", "assistant"},
         {"content",
          "Use `items.reverse()`, which reverses in place and returns None. "
          "`reversed(items)` gives an iterator if you only need to walk it backwards."}});
  }
  return messages;
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path shared =
      std::getenv("LORA_SHARED") ? std::getenv("LORA_SHARED") : "../shared";
  int reps = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shared")) shared = argv[i + 1];
    if (!std::strcmp(argv[i], "--reps")) reps = std::max(1, std::atoi(argv[i + 1]));
  }
  const auto messages = conversation();
  std::printf("{\"reps\": %d, \"messages\": %zu, \"templates\": {", reps, messages.size());
  bool first = true;
  for (const char* name : {"qwen3", "llama3", "llama3_1", "gemma3", "llama2-tinyllama"}) {
    const auto dir = shared / "tokenizers" / name;
    if (!std::filesystem::exists(dir / "tokenizer_config.json")) continue;
    const auto config = lora::data::TokenizerConfig::load(dir);
    if (!config.chat_template) continue;

    auto t0 = Clock::now();
    for (int r = 0; r < 100; ++r) lora::data::ChatTemplate::parse(*config.chat_template, name);
    const double parse_us = seconds_since(t0) / 100 * 1e6;

    const auto tmpl = lora::data::ChatTemplate::parse(*config.chat_template, name);
    std::size_t bytes = 0;
    t0 = Clock::now();
    for (int r = 0; r < reps; ++r) bytes += render_chat(tmpl, config, messages, false).size();
    const double render_us = seconds_since(t0) / reps * 1e6;

    std::printf("%s\"%s\": {\"parse_us\": %.1f, \"render_us\": %.2f, \"output_bytes\": %zu}",
                first ? "" : ", ", name, parse_us, render_us, bytes / std::size_t(reps));
    first = false;
  }
  std::printf("}}\n");
  return 0;
}
