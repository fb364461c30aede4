// The run's log: metrics.jsonl (one JSON object per report or evaluation) and loss_curve.svg, a
// picture of the training and validation loss a person can open in a browser.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lora {

class MetricsLog {
 public:
  // Starts the log in `dir` from `history` (metrics.jsonl text of a resumed run, or empty),
  // replacing any metrics.jsonl there (lines past a resumed checkpoint belong to no run now).
  // An empty `dir` keeps the log in memory only (the data-parallel ranks that write no files).
  MetricsLog(std::filesystem::path dir, std::string history);
  // Appends one line ({"type": "train"|"val"|"test", "step": ..., "loss": ..., ...}) and redraws
  // the SVG.
  void append(const nlohmann::ordered_json& record);
  const std::string& text() const { return text_; }

 private:
  std::filesystem::path dir_;
  std::string text_;
};

// An SVG line chart of loss against step: one polyline per series ("train", "val").
std::string loss_curve_svg(const std::string& metrics_jsonl);

}  // namespace lora
