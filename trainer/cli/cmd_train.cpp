// `lora train`: fine-tune a model with LoRA on JSONL data (flags named like mlx-lm's).
#include <cstdio>
#include <memory>
#include <stdexcept>

#include "trainer/cli/commands.h"
#include "trainer/cli/parallel_flags.h"
#include "trainer/cli/train_config_file.h"
#include "trainer/cli/train_flags.h"
#include "trainer/distributed.h"
#include "trainer/io/checkpoint.h"
#include "trainer/progress.h"
#include "trainer/train_options.h"
#include "trainer/trainer.h"

namespace lora::cli {

void add_train(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "train",
      "Fine-tune a model with LoRA on a data folder (train.jsonl, valid.jsonl); writes an MLX-LM "
      "adapter folder with checkpoints, metrics.jsonl and loss_curve.svg");
  auto options = std::make_shared<TrainOptions>();
  auto flags = std::make_shared<TrainFlags>();
  add_train_flags(*cmd, *options, *flags);
  auto parallel = std::make_shared<ParallelFlags>();
  add_parallel_flags(*cmd, *parallel);
  cmd->callback([cmd, options, flags, parallel, &global] {
    if (!flags->config_file.empty()) apply_config_file(*cmd, flags->config_file);
    TrainOptions o = *options;
    int64_t resumed_step = 0;
    if (!o.resume.empty()) {
      // Flags not given now come from the checkpoint, so `lora train --resume DIR` is enough.
      const LoadedCheckpoint ck = load_checkpoint(resolve_checkpoint(o.resume));
      fill_unset_from(*cmd, o, ck.content.config);
      resumed_step = ck.content.progress.step;
    }
    if (flags->print_config) {
      std::printf("%s\n", o.to_json().dump(2).c_str());
      return;
    }
    const auto comm = join_job(parallel->distributed);
    // Rank 0 speaks for the job; the others stay quiet unless they fail.
    Progress progress(
        comm->is_root() ? choose_progress_mode(global.quiet, global.json) : ProgressMode::quiet,
        o.iters, resumed_step);
    const TrainResult r = train_on_ranks(o, progress, *comm, parallel->ordered_reduction);
    if (!comm->is_root()) return;
    if (r.interrupted)
      throw std::runtime_error("stopped by a signal after step " + std::to_string(r.steps) +
                               "; the run is saved in " + r.checkpoint.string() +
                               "\nresume it with: lora train --resume " + r.checkpoint.string());
    if (global.json) {
      nlohmann::ordered_json done = {
          {"type", "done"}, {"steps", r.steps}, {"adapter_path", o.adapter_path}};
      if (r.final_val_loss) done["val_loss"] = *r.final_val_loss;
      if (r.test_loss) done["test_loss"] = *r.test_loss;
      std::printf("%s\n", done.dump().c_str());
    } else {
      std::printf("trained %lld steps; adapter written to %s\n", static_cast<long long>(r.steps),
                  o.adapter_path.c_str());
    }
  });
}

}  // namespace lora::cli
