// `lora train --config FILE`: TOML or JSON settings (detected from the text), mlx-lm's
// lora_parameters section, every value checked against its flag; then the resolved settings are
// validated as a run would.
#include <CLI/CLI.hpp>
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/cli/train_config_file.h"
#include "trainer/cli/train_flags.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = lora::fuzz::write_input("config", lora::fuzz::as_text(data, size));
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
  return 0;
}
