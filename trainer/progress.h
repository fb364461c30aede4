// What a training run tells whoever watches it: every step, each report or evaluation record,
// and messages for a person. The library only calls these; the `lora` CLI's display
// (trainer/cli/progress_display.h) prints them.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace lora {

class Progress {
 public:
  virtual ~Progress() = default;
  // After every optimizer step.
  virtual void step(int64_t step, float loss, float lr, int64_t tokens) = 0;
  // A report or evaluation record ({"type", "step", "loss", ...}), as metrics.jsonl gets it.
  virtual void record(const nlohmann::ordered_json& record) = 0;
  // A message for a person (a warning, what is being trained, a fallback taken).
  virtual void note(const std::string& text) = 0;
  // The run is over (or stopping): nothing more follows.
  virtual void finish() = 0;
};

}  // namespace lora
