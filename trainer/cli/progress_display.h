// The training display of `lora train`: a one-line progress bar on a terminal (step, loss,
// learning rate, tokens/s, ETA), plain log lines otherwise, JSON lines with --json, and nothing
// but the result with --quiet.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/progress.h"

namespace lora::cli {

enum class ProgressMode { bar, lines, json, quiet };

// The mode for stdout: json/quiet when asked, a bar when stdout is a terminal, else lines.
ProgressMode choose_progress_mode(bool quiet, bool json);

class ProgressDisplay final : public Progress {
 public:
  ProgressDisplay(ProgressMode mode, int64_t total_steps, int64_t first_step = 0,
                  std::FILE* out = stdout);
  // Redraws the bar (bar mode only).
  void step(int64_t step, float loss, float lr, int64_t tokens) override;
  // Printed in lines/json modes and above the bar in bar mode.
  void record(const nlohmann::ordered_json& record) override;
  // Not in json or quiet mode.
  void note(const std::string& text) override;
  // Clears the bar line before other output.
  void finish() override;

 private:
  double tokens_per_second() const;
  double eta_seconds(int64_t step) const;
  void clear_bar();
  ProgressMode mode_;
  int64_t total_, first_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  int64_t tokens_ = 0;
  bool bar_shown_ = false;
};

std::string format_duration(double seconds);  // "1:02:03" / "2:03"

}  // namespace lora::cli
