// PLACEHOLDER: replaced by the real `lora generate`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_generate(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("generate", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora generate` is not built yet"); });
}

}  // namespace lora::cli
