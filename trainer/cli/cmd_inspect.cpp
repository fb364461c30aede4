// PLACEHOLDER: replaced by the real `lora inspect`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_inspect(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("inspect", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora inspect` is not built yet"); });
}

}  // namespace lora::cli
