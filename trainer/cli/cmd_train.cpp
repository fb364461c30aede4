// PLACEHOLDER: replaced by the real `lora train`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_train(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("train", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora train` is not built yet"); });
}

}  // namespace lora::cli
