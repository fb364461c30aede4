// PLACEHOLDER: replaced by the real `lora eval`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_eval(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("eval", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora eval` is not built yet"); });
}

}  // namespace lora::cli
