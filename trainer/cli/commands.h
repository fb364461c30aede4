// The `lora` subcommands. Each lives in its own cmd_*.cpp and adds itself to the app.
#pragma once
#include <CLI/CLI.hpp>

namespace lora::cli {

// Options every subcommand shares.
struct GlobalOptions {
  bool quiet = false;  // only errors and the final result
  bool json = false;   // JSON lines on stdout instead of human text
  int threads = 0;     // 0 = all cores
};

void add_inspect(CLI::App& app, const GlobalOptions& global);
void add_generate(CLI::App& app, const GlobalOptions& global);
void add_tokenize(CLI::App& app, const GlobalOptions& global);
void add_train(CLI::App& app, const GlobalOptions& global);
void add_eval(CLI::App& app, const GlobalOptions& global);
void add_merge(CLI::App& app, const GlobalOptions& global);
void add_export(CLI::App& app, const GlobalOptions& global);
void add_convert(CLI::App& app, const GlobalOptions& global);
void add_serve(CLI::App& app, const GlobalOptions& global);

}  // namespace lora::cli
