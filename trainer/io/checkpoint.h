// Checkpoints: everything a run needs to continue bit for bit, in one folder written atomically.
//
//   <adapter-path>/checkpoints/step-00000040/
//     adapters.safetensors, adapter_config.json   the adapter at this step (usable as it is)
//     state.safetensors                           trainable values and optimizer moments, f32
//     state.json                                  step, data cursor, seed, config, fingerprints
//     metrics.jsonl                               the run's log up to this step
//
// The folder appears complete or not at all (write_dir_atomic), so a crash while saving leaves the
// previous checkpoint as it was. Dropout masks and the data order are pure functions of the seed,
// the step and the cursor, so those are the whole random state.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "data/batch.h"
#include "trainer/io/adapter_io.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"

namespace lora {

// Where a run is, beyond its tensors.
struct TrainProgress {
  int64_t step = 0;            // optimizer steps done
  data::DataCursor cursor;     // the next batch
  int64_t trained_tokens = 0;  // loss-bearing tokens seen so far
  // The report window in progress (token-weighted loss sum and its tokens), so a run resumed
  // between two reports logs the same numbers as one that was never stopped.
  double window_loss = 0.0;
  int64_t window_trained = 0;
};

struct CheckpointContent {
  TrainProgress progress;
  nlohmann::ordered_json config;  // TrainOptions::to_json() of the run
  std::string model_fingerprint;
  std::string data_fingerprint;
  std::string metrics;  // metrics.jsonl lines up to this step
};

// `checkpoints/step-00000040` under the adapter folder.
std::filesystem::path checkpoint_dir(const std::filesystem::path& adapter_dir, int64_t step);

// Writes a checkpoint folder atomically. `before_commit` (tests) runs once the folder's files are
// written into the temporary folder, before it is renamed into place.
void save_checkpoint(const std::filesystem::path& dir, LoraAdapter& adapter, Optimizer& optimizer,
                     const Model& model, AdapterFormat format, const CheckpointContent& content,
                     const std::function<void(const std::filesystem::path&)>& before_commit = {});

struct LoadedCheckpoint {
  std::filesystem::path dir;
  CheckpointContent content;
  int64_t optimizer_steps = 0;
  std::vector<Tensor> values;  // per trainable parameter, in LoraAdapter::parameters() order
  std::vector<Tensor> first_moments, second_moments;
};
// Reads and checks a checkpoint folder; errors name the folder and what is missing or wrong.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& dir);
// Puts a checkpoint's values and moments into an adapter (created with the same config) and its
// optimizer; shapes must match, else an error naming the parameter.
void restore_checkpoint(const LoadedCheckpoint& ckpt, LoraAdapter& adapter, Optimizer& optimizer);

// Complete checkpoints under an adapter folder, oldest first (temporary folders ignored).
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& adapter_dir);
// --resume: a checkpoint folder as it is, or the latest checkpoint of an adapter folder.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& dir_or_checkpoint);
// Removes all but the newest `keep` checkpoints.
void prune_checkpoints(const std::filesystem::path& adapter_dir, int64_t keep);

// What a checkpoint must agree with to be resumed: the model's config and weight shapes.
std::string model_fingerprint(const Model& model);
// A stable 64-bit FNV-1a hash, as 16 hex digits.
std::string fnv1a_hex(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ull);

}  // namespace lora
