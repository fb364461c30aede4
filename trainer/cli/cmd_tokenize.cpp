// PLACEHOLDER: replaced by the real `lora tokenize`.
#include <stdexcept>

#include "trainer/cli/commands.h"

namespace lora::cli {

void add_tokenize(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("tokenize", "(not built yet)");
  cmd->callback([] { throw std::runtime_error("`lora tokenize` is not built yet"); });
}

}  // namespace lora::cli
