// lora: LoRA fine-tuning for Llama-family models on the CPU.
#include <omp.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <string>

#include "autograd/cpu_features.h"
#include "autograd/heap.h"
#include "autograd/process_start.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"

extern "C" void openblas_set_num_threads(int);

namespace {

std::string version_text() {
  const lora::CpuReport cpu = lora::cpu_report();
  return "lora (loracpp)\n"
         "cpu features detected: " +
         cpu.detected +
         "\n"
         "cpu features in use:   " +
         cpu.in_use + " (LORA_CPU cap: " + cpu.cap +
         ")\n"
         "openblas kernels:      " +
         cpu.blas_core +
         "\n"
         "onednn isa:            " +
         cpu.onednn_isa +
         "\n"
         "glibc tunables:        " +
         cpu.glibc_tunables;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    // OpenBLAS's kernel choice and glibc's huge pages are read when the process starts: the
    // program runs again with them set where they are missing (process_start.h).
    lora::restart_with_start_settings(argv);
    (void)lora::active_cpu_features();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lora: error: %s\n", e.what());
    return 1;
  }
  lora::keep_freed_memory_for_reuse();
  // Past a file size limit, write(2) then fails with EFBIG, which the writers report and clean up
  // after, instead of the process dying mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  lora::cli::GlobalOptions global;
  CLI::App app{
      "lora: fine-tune Llama-family models with LoRA on the CPU.\n"
      "Run `lora COMMAND --help` for the options of a command."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the options of every command");
  app.add_flag("-q,--quiet", global.quiet, "Print only errors and the final result");
  app.add_flag("--json", global.json, "Write JSON lines to stdout (for scripts)");
  app.add_option("-t,--threads", global.threads, "Threads to use (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  app.set_version_flag("--version", version_text, "Print the version and the CPU features in use");
  app.fallthrough();

  lora::cli::add_train(app, global);
  lora::cli::add_eval(app, global);
  lora::cli::add_generate(app, global);
  lora::cli::add_merge(app, global);
  lora::cli::add_export(app, global);
  lora::cli::add_convert(app, global);
  lora::cli::add_inspect(app, global);
  lora::cli::add_tokenize(app, global);
  lora::cli::add_serve(app, global);

  app.parse_complete_callback([&] {
    if (global.threads > 0) {
      omp_set_num_threads(global.threads);
      openblas_set_num_threads(global.threads);
    }
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lora: error: %s\n", lora::cli::error_text(e).c_str());
    return 1;
  }
  return 0;
}
