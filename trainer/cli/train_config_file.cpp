#include "trainer/cli/train_config_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lora::cli {

namespace {

using nlohmann::json;

json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(yaml_to_json(item));
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return out;
    }
    case YAML::NodeType::Scalar:
      return node.Scalar();  // numbers and booleans stay text: the flags convert them
    default:
      return nullptr;  // null, ~ or an empty value: the setting keeps its default
  }
}

// TOML through CLI11's reader: [section] keys become nested objects.
json toml_to_json(const std::string& text) {
  std::istringstream in(text);
  json out = json::object();
  for (const auto& item : CLI::ConfigTOML().from_config(in)) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    json* at = &out;
    for (const auto& p : item.parents) at = &(*at)[p];
    (*at)[item.name] = item.inputs.size() == 1 ? json(item.inputs.front()) : json(item.inputs);
  }
  return out;
}

json read_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string ext = std::filesystem::path(path).extension().string();
  const auto first = text.find_first_not_of(" \t\r\n");
  if (ext == ".yaml" || ext == ".yml") {
    try {
      json j = yaml_to_json(YAML::Load(text));
      return j.is_null() ? json::object() : j;
    } catch (const YAML::Exception& e) {
      throw std::runtime_error("invalid YAML: " + std::string(e.what()));
    }
  }
  if (ext == ".json" || (first != std::string::npos && text[first] == '{')) {
    try {
      return json::parse(text);
    } catch (const json::parse_error& e) {
      throw std::runtime_error(std::string("invalid JSON: ") + e.what());
    }
  }
  try {
    return toml_to_json(text);
  } catch (const CLI::Error& e) {
    throw std::runtime_error(std::string("invalid TOML: ") + e.what());
  }
}

double number(const json& v, const std::string& key) {
  try {
    return v.is_number() ? v.get<double>() : std::stod(v.get<std::string>());
  } catch (const std::exception&) {
    throw std::runtime_error(key + ": not a number: " + v.dump());
  }
}

std::string text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// mlx-lm's lora_parameters {keys, rank, scale, dropout}: the flags --lora-keys, --rank, ...
void flatten_lora_parameters(json& j) {
  auto it = j.find("lora_parameters");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) throw std::runtime_error("lora_parameters: expected a mapping");
  const json params = *it;
  j.erase(it);
  for (const auto& [key, value] : params.items()) {
    if (value.is_null()) continue;
    if (key != "keys" && key != "rank" && key != "scale" && key != "dropout")
      throw std::runtime_error("lora_parameters." + key +
                               ": not supported (keys, rank, scale and dropout are)");
    j[key == "keys" ? "lora_keys" : key] = value;
  }
}

// mlx-lm's lr_schedule {name, arguments, warmup, warmup_init}: `arguments` are those of the MLX
// schedule (its first is the peak learning rate) and warmup_init is a learning rate; here the
// decay runs from the end of warmup to --iters and ends at 0, and warmup_init is a fraction of
// the peak.
void map_lr_schedule(json& j, std::vector<std::string>& warnings) {
  auto it = j.find("lr_schedule");
  if (it == j.end() || !it->is_object()) return;
  const json s = *it;
  j.erase(it);
  const std::string name = s.contains("name") ? text(s["name"]) : "";
  const json args = s.value("arguments", json::array());
  if (!args.is_array()) throw std::runtime_error("lr_schedule.arguments: expected a list");
  // Where each schedule keeps its decay steps and its final value among the arguments.
  std::size_t steps_at = 0, end_at = 0;
  if (name == "cosine_decay") {
    j["lr_schedule"] = "cosine";
    steps_at = 1, end_at = 2;
  } else if (name == "linear_schedule") {
    j["lr_schedule"] = "linear";
    steps_at = 2, end_at = 1;
  } else {
    throw std::runtime_error("lr_schedule.name: \"" + name +
                             "\" is not supported (cosine_decay and linear_schedule are)");
  }
  for (const auto& [key, value] : s.items())
    if (key != "name" && key != "arguments" && key != "warmup" && key != "warmup_init")
      throw std::runtime_error("lr_schedule." + key + ": not supported");
  if (args.empty())
    throw std::runtime_error(
        "lr_schedule.arguments: missing (the first is the "
        "learning rate)");
  const double peak = number(args[0], "lr_schedule.arguments[0]");
  j["learning_rate"] = peak;
  const int64_t warmup =
      s.contains("warmup") ? int64_t(number(s["warmup"], "lr_schedule.warmup")) : 0;
  j["warmup"] = warmup;
  if (s.contains("warmup_init") && peak > 0)
    j["warmup_init"] = number(s["warmup_init"], "lr_schedule.warmup_init") / peak;
  if (end_at < args.size() && number(args[end_at], "lr_schedule.arguments") != 0)
    warnings.push_back("lr_schedule: the decay ends at 0 here, not at " + text(args[end_at]));
  if (steps_at < args.size()) {
    const int64_t steps = int64_t(number(args[steps_at], "lr_schedule.arguments"));
    const int64_t iters = j.contains("iters") ? int64_t(number(j["iters"], "iters")) : -1;
    if (iters >= 0 && steps != iters - warmup)
      warnings.push_back("lr_schedule: the decay runs over the " + std::to_string(iters - warmup) +
                         " steps from the end of warmup to iters here, not over " +
                         std::to_string(steps));
  }
}

// optimizer_config {adamw: {weight_decay: ...}, ...}: the chosen optimizer's weight_decay is
// --weight-decay; other values would change the run and are refused.
void map_optimizer_config(json& j, std::vector<std::string>& warnings) {
  auto it = j.find("optimizer_config");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) throw std::runtime_error("optimizer_config: expected a mapping");
  const json config = *it;
  j.erase(it);
  const std::string chosen = j.contains("optimizer") ? text(j["optimizer"]) : "adam";
  for (const auto& [name, params] : config.items()) {
    if (params.is_null() || params.empty()) continue;
    if (name != chosen) {
      warnings.push_back("optimizer_config." + name + ": ignored (the optimizer is " + chosen +
                         ")");
      continue;
    }
    for (const auto& [key, value] : params.items()) {
      if (key == "weight_decay" && chosen == "adamw") {
        j["weight_decay"] = value;
        continue;
      }
      throw std::runtime_error("optimizer_config." + name + "." + key + ": not supported" +
                               (chosen == "adamw" ? " (weight_decay is)" : ""));
    }
  }
}

// Settings that say what mlx-lm runs: accepted where they name what this trainer does
// (fine_tune_type is a setting here too: lora, dora or full).
void check_run_kind(json& j, std::vector<std::string>& warnings) {
  auto require = [&](const char* key, const char* supported, const char* why) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_null() && text(*it) != supported)
      throw std::runtime_error(std::string(key) + ": \"" + text(*it) + "\" is not supported (" +
                               why + ")");
    j.erase(it);
  };
  require("training_mode", "normal", "this trainer minimizes the next-token loss");
  if (j.contains("hf_dataset") && !j["hf_dataset"].is_null())
    throw std::runtime_error("hf_dataset: not supported (give a local data folder)");
  j.erase("hf_dataset");
  // Experiment trackers: they do not change the adapter; metrics.jsonl holds the same numbers.
  for (const char* key : {"report_to", "project_name", "wandb"}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    if (!it->is_null())
      warnings.push_back(std::string(key) + ": ignored (the losses are in metrics.jsonl)");
    j.erase(it);
  }
}

std::string flag_name(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

}  // namespace

json settings_from_config(json config, std::vector<std::string>& warnings) {
  if (!config.is_object()) throw std::runtime_error("expected a mapping of settings");
  // Spelling with '-' or '_' alike.
  json j = json::object();
  for (auto& [key, value] : config.items()) {
    std::string k = key;
    std::replace(k.begin(), k.end(), '-', '_');
    j[k] = std::move(value);
  }
  check_run_kind(j, warnings);
  flatten_lora_parameters(j);
  map_lr_schedule(j, warnings);
  map_optimizer_config(j, warnings);
  return j;
}

std::vector<std::string> apply_config_file(CLI::App& cmd, const std::string& path) {
  if (!std::filesystem::is_regular_file(path))
    throw std::runtime_error(path + ": config file not found");
  std::vector<std::string> warnings;
  json settings;
  try {
    settings = settings_from_config(read_config(path), warnings);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  for (auto& w : warnings) w = path + ": " + w;
  for (const auto& [key, value] : settings.items()) {
    if (value.is_null()) continue;
    const std::string name = flag_name(key);
    CLI::Option* opt = value.is_object() ? nullptr : cmd.get_option_no_throw("--" + name);
    if (opt == nullptr || name == "config" || name == "print-config")
      throw std::runtime_error(path + ": unknown setting \"" + key + "\" (see lora train --help)");
    if (opt->count() > 0) continue;  // given on the command line
    std::vector<std::string> inputs;
    if (value.is_array())
      for (const auto& v : value) inputs.push_back(text(v));
    else
      inputs.push_back(text(value));
    try {
      opt->add_result(inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw std::runtime_error(path + ": setting \"" + key + "\": " + e.what());
    }
  }
  return warnings;
}

}  // namespace lora::cli
