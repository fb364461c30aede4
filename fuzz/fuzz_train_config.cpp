// `lora train --config FILE`: TOML, JSON or YAML settings, mlx-lm's
// lora_parameters section, every value checked against its flag; then the resolved settings are
// validated as a run would.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/cli/train_config_file.h"
#include "trainer/cli/train_flags.h"

namespace {

// One settings file through the reader the CLI uses, then the run's own validation.
void read_settings(const std::filesystem::path& path) {
  try {
    CLI::App app;
    auto* cmd = app.add_subcommand("train");
    lora::TrainOptions options;
    lora::cli::TrainFlags flags;
    lora::cli::add_train_flags(*cmd, options, flags);
    app.parse(std::vector<std::string>{"train"});
    lora::cli::apply_config_file(*cmd, path.string());
    options.validate();
    options.to_json().dump();
  } catch (const std::exception&) {
  }
}

}  // namespace

// Each input is read twice: as TOML or JSON (chosen from the text, as for a file without a known
// extension) and as YAML (chosen by the extension), so one corpus covers all three readers.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto text = lora::fuzz::as_text(data, size);
  read_settings(lora::fuzz::write_input("config", text));
  read_settings(lora::fuzz::write_input("config.yaml", text));
  return 0;
}
