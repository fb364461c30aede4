// An old or foreign spelling of a flag that keeps working without showing in --help.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace lora::cli {

// `alias` passes its values on to the option `target` (already added to `cmd`), which does the
// checking and storing; the alias is hidden from --help.
inline void add_hidden_alias(CLI::App& cmd, const std::string& alias, const std::string& target) {
  CLI::Option* to = cmd.get_option(target);
  cmd.add_option_function<std::vector<std::string>>(alias,
                                                    [to](const std::vector<std::string>& values) {
                                                      to->add_result(values);
                                                      to->run_callback();
                                                    })
      ->expected(to->get_expected_min(), to->get_expected_max())
      ->delimiter(to->get_delimiter())
      ->group("");
}

}  // namespace lora::cli
