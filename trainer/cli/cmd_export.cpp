// PLACEHOLDER: replaced by the real `lora export`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_export(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("export", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora export` is not built yet"); });
}

}  // namespace lora::cli
