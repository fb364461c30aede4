#include "trainer/cli/train_config_file.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace lora::cli {

namespace {

std::string flag_name(std::string_view key) {
  std::string k(key);
  std::replace(k.begin(), k.end(), '_', '-');
  return k;
}

}  // namespace

void apply_config_file(CLI::App& cmd, const std::string& path) {
  if (!std::filesystem::is_regular_file(path))
    throw std::runtime_error(path + ": config file not found");
  std::vector<CLI::ConfigItem> items;
  try {
    items = make_train_config_reader()->from_file(path);
  } catch (const CLI::Error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;
    const std::string key = item.fullname();
    CLI::Option* opt = item.parents.empty() ? cmd.get_option_no_throw("--" + item.name) : nullptr;
    if (opt == nullptr || item.name == "config" || item.name == "print-config")
      throw std::runtime_error(path + ": unknown setting \"" + key + "\" (see lora train --help)");
    if (opt->count() > 0) continue;  // given on the command line
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw std::runtime_error(path + ": setting \"" + key + "\": " + e.what());
    }
  }
}

namespace {

// TOML (CLI11's own reader) or JSON, with keys normalized to flag names: '_' -> '-', and
// mlx-lm's lora_parameters section flattened (its "keys" is --lora-keys).
class TrainConfigReader : public CLI::ConfigTOML {
 public:
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    std::string text((std::istreambuf_iterator<char>(input)), std::istreambuf_iterator<char>());
    auto first = text.find_first_not_of(" \t\r\n");
    std::vector<CLI::ConfigItem> items;
    if (first != std::string::npos && text[first] == '{') {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(text);
      } catch (const nlohmann::json::parse_error& e) {
        throw CLI::ConversionError(std::string("config file: invalid JSON: ") + e.what());
      }
      add_json(j, {}, items);
    } else {
      std::istringstream in(text);
      items = CLI::ConfigTOML::from_config(in);
    }
    std::vector<CLI::ConfigItem> out;
    for (auto& item : items) {
      const bool lora_section = !item.parents.empty() && item.parents.back() == "lora_parameters";
      if (lora_section) {
        if (item.name == "++" || item.name == "--") continue;  // section markers
        item.parents.clear();
        if (item.name == "keys") item.name = "lora-keys";
      }
      item.name = flag_name(item.name);
      out.push_back(std::move(item));
    }
    return out;
  }

 private:
  static void add_json(const nlohmann::json& j, std::vector<std::string> parents,
                       std::vector<CLI::ConfigItem>& items) {
    if (!j.is_object())
      throw CLI::ConversionError("config file: expected a JSON object of settings");
    for (const auto& [key, value] : j.items()) {
      if (value.is_null()) continue;
      if (value.is_object()) {
        auto p = parents;
        p.push_back(key);
        add_json(value, p, items);
        continue;
      }
      CLI::ConfigItem item;
      item.parents = parents;
      item.name = key;
      if (value.is_array()) {
        for (const auto& v : value)
          item.inputs.push_back(v.is_string() ? v.get<std::string>() : v.dump());
      } else {
        item.inputs.push_back(value.is_string() ? value.get<std::string>() : value.dump());
      }
      items.push_back(std::move(item));
    }
  }
};

}  // namespace

std::shared_ptr<CLI::Config> make_train_config_reader() {
  return std::make_shared<TrainConfigReader>();
}

}  // namespace lora::cli
