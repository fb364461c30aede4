#include "trainer/io/model_card.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

namespace lora {

namespace {

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& s : items) text += (text.empty() ? "" : ", ") + s;
  return text;
}

// A YAML scalar: plain when it is a simple name ("Qwen/Qwen2.5-0.5B", as PEFT writes it), else
// quoted the JSON way (valid YAML).
std::string yaml_string(const std::string& s) {
  const bool plain = !s.empty() && std::isalnum(static_cast<unsigned char>(s.front())) &&
                     std::all_of(s.begin(), s.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '-' ||
                              c == '_' || c == '.';
                     });
  return plain ? s : nlohmann::json(s).dump();
}

std::string usage(const AdapterFile& adapter, AdapterFormat format) {
  const std::string base = adapter.base_model.empty() ? "BASE_MODEL" : adapter.base_model;
  if (format == AdapterFormat::mlx)
    return "```sh\nmlx_lm.generate --model " + base +
           " --adapter-path ADAPTER_DIR --prompt \"...\"\n```\n";
  return "```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n\n"
         "base = AutoModelForCausalLM.from_pretrained(" +
         nlohmann::json(base).dump() +
         ")\nmodel = PeftModel.from_pretrained(base, \"ADAPTER_DIR\")\n```\n";
}

}  // namespace

std::string shareable_path(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (!p.is_absolute()) return path;
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

std::string model_card(const AdapterFile& adapter, AdapterFormat format) {
  const bool peft = format == AdapterFormat::peft;
  std::string card = "---\n";
  if (!adapter.base_model.empty()) card += "base_model: " + yaml_string(adapter.base_model) + "\n";
  card += std::string("library_name: ") + (peft ? "peft" : "mlx") + "\n";
  card += "pipeline_tag: text-generation\ntags:\n";
  if (!adapter.base_model.empty())
    card += "- " + yaml_string("base_model:adapter:" + adapter.base_model) + "\n";
  card += std::string(adapter.dora ? "- dora\n" : "") + "- lora\n- loracpp\n---\n\n";

  const std::string kind = adapter.dora ? "DoRA (weight-decomposed LoRA)" : "LoRA";
  const std::string method = adapter.rslora ? kind + ", rank-stabilized (rsLoRA)" : kind;
  card += "# " + method + " adapter" +
          (adapter.base_model.empty() ? "" : " for " + adapter.base_model) + "\n\n";
  card += "| | |\n|---|---|\n";
  card += "| method | " + method + " |\n";
  std::set<int64_t> ranks;
  for (const auto& p : adapter.pairs) ranks.insert(p.rank);
  std::vector<std::string> rank_text;
  for (int64_t r : ranks) rank_text.push_back(std::to_string(r));
  card += "| rank | " + joined(rank_text) + " |\n";
  if (adapter.peft_alpha) card += "| lora_alpha | " + number_text(*adapter.peft_alpha) + " |\n";
  if (auto s = adapter.common_scale()) card += "| scale | " + number_text(*s) + " |\n";
  card += "| dropout | " + number_text(adapter.dropout) + " |\n";
  card += "| target modules | " + joined(adapter.module_names()) + " |\n";
  card += "| layers | " + layer_ranges(adapter.layers()) +
          (adapter.base_num_layers ? " of " + std::to_string(*adapter.base_num_layers) : "") +
          " |\n";
  if (adapter.training) {
    const TrainingRun& run = *adapter.training;
    if (!run.data.empty()) card += "| data | " + shareable_path(run.data) + " |\n";
    card += "| steps | " + std::to_string(run.steps) + " |\n";
    if (run.train_loss) card += "| final training loss | " + number_text(*run.train_loss) + " |\n";
    if (run.valid_loss)
      card += "| final validation loss | " + number_text(*run.valid_loss) + " |\n";
    if (run.test_loss) card += "| test loss | " + number_text(*run.test_loss) + " |\n";
  }
  card += "\n## How to use\n\n" + usage(adapter, format);
  card += "\n### Framework versions\n\n- loracpp (" +
          std::string(peft ? "PEFT adapter layout" : "MLX-LM adapter layout") + ")\n";
  return card;
}

}  // namespace lora
