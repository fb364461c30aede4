// A training run's set-up: everything loaded and checked from TrainOptions before the adapter
// folder is touched (model, data, adapter, optimizer, the resumed checkpoint's state), held
// together for the steps, reports and checkpoints that follow.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/dataset_encode.h"
#include "data/jsonl_stream.h"
#include "trainer/data_parallel.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/checkpoint.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/progress.h"
#include "trainer/train_options.h"

namespace lora {

// The splits of a run, streamed from their files (an index in memory, the records read again for
// each batch); valid and test only when the run uses them.
struct TrainData {
  std::filesystem::path train_file;
  std::shared_ptr<const data::StreamedExamples> train;
  std::shared_ptr<const data::StreamedExamples> valid, test;  // null when unused
};

// Reads and encodes the splits named by `options` (--data folder or --train/--valid files) with
// the model folder's tokenizer; notes truncated examples on `progress`.
TrainData load_train_data(const TrainOptions& options, const std::filesystem::path& model_dir,
                          Progress& progress);

// The model, data, checkpoint and fingerprints a run starts from, all checked against each other.
struct RunInputs {
  std::optional<LoadedCheckpoint> resumed;  // --resume
  Model model;
  TrainData data;
  ComputeDType compute = ComputeDType::F32;
  std::string model_fingerprint, data_fingerprint;
};
RunInputs load_run_inputs(const TrainOptions& options, Progress& progress);

// A run's state between steps. Built in place and never moved: the optimizer and the batch plans
// point into the adapter and the data.
struct TrainRun {
  // Validates `options`, loads and checks everything, and restores a resumed checkpoint's adapter,
  // optimizer and progress. Throws std::runtime_error for bad input; writes nothing. Every rank
  // of a data-parallel run builds the same TrainRun.
  TrainRun(const TrainOptions& options, Progress& progress, const ParallelOptions& parallel = {});
  TrainRun(const TrainRun&) = delete;
  TrainRun& operator=(const TrainRun&) = delete;

  const TrainOptions& options;
  RunInputs inputs;
  LoraAdapter adapter;
  Optimizer optimizer;
  std::vector<ag::Parameter*> params;  // adapter.parameters(), the optimizer's order
  TrainProgress state;  // the step done and the data cursor (what a checkpoint saves)
  data::BatchPlan train_plan;
  std::optional<data::BatchPlan> valid_plan;
  ScheduleConfig schedule;
  AdapterFormat format;
  SingleProcess one_process;  // the communicator when the run has one process
  Communicator& comm;
  GradientExchange exchange;  // of params across comm

  const Model& model() const { return inputs.model; }
  // The learning rate of optimizer step `step` (1-based).
  float learning_rate(int64_t step) const;
  // What a step's micro-batches run with.
  StepSetup step_setup();
};

}  // namespace lora
