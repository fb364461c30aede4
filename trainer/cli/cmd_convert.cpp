// PLACEHOLDER: replaced by the real `lora convert`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_convert(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("convert", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora convert` is not built yet"); });
}

}  // namespace lora::cli
