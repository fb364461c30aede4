// PLACEHOLDER: replaced by the real `lora merge`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_merge(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("merge", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora merge` is not built yet"); });
}

}  // namespace lora::cli
