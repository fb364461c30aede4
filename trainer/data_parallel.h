// Data-parallel training: which part of each global batch a rank computes, and the exchange of
// the LoRA gradients that makes every rank take the same optimizer step.
//
// A step's global batch is its grad-accumulation micro-batches (each --batch-size examples),
// whatever the number of ranks. With at least as many micro-batches as ranks, each rank takes
// whole micro-batches (a contiguous run of them), so it computes exactly what one process
// computes for those; with fewer, the ranks that share a micro-batch split its examples.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "autograd/tape.h"
#include "data/batch.h"
#include "trainer/distributed.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "trainer/transformer.h"

namespace lora {

// How a run spreads over processes: the communicator (null: one process) and whether gradients
// are summed in micro-batch order (GradientExchange).
struct ParallelOptions {
  Communicator* comm = nullptr;
  bool ordered_reduction = false;
};

// Micro-batch `micro` of the step, whole (parts == 1) or the part-th of `parts` slices of it.
struct BatchShare {
  int64_t micro = 0;
  int64_t part = 0;
  int64_t parts = 1;
};

// This rank's shares of a step of `micro_batches` micro-batches (every micro-batch is covered by
// exactly one rank, or split among several; a rank may have several).
std::vector<BatchShare> shares_of_rank(int64_t micro_batches, int rank, int ranks);

// Sums the parameters' gradients over the ranks. Plain mode: one all-reduce of the flattened
// gradients, whose summation order is the MPI library's. Ordered mode: every micro-batch's
// gradient goes in its own slot, the slots are all-reduced (each is non-zero on one rank only,
// so those sums are exact), and each rank adds the slots in micro-batch order, as one process
// accumulates them: bit-identical to one process whenever ranks compute whole micro-batches with
// one thread each (more threads add per-thread partial sums into the gradient, which associates
// differently), for micro_batches times the gradient bytes on the wire.
class GradientExchange {
 public:
  GradientExchange(std::span<ag::Parameter* const> params, int64_t micro_batches, bool ordered,
                   Communicator& comm);
  // Before a step: zeroes the gradients (and the slots).
  void begin_step();
  // After this rank's backward of a share of micro-batch `micro`.
  void after_backward(int64_t micro);
  // After the rank's last backward of the step: the parameters' gradients become the global
  // batch's.
  void reduce();
  // Floats one reduce() sends from each rank (before the MPI library's own algorithm).
  int64_t floats_per_step() const;
  double reduce_seconds() const { return reduce_seconds_; }  // in all reduce() calls so far

 private:
  void pack(std::span<float> into) const;
  void unpack_add(std::span<const float> from);
  std::vector<ag::Parameter*> params_;
  int64_t micro_batches_;
  bool ordered_;
  Communicator& comm_;
  int64_t count_ = 0;         // gradient floats
  std::vector<float> slots_;  // plain: [count]; ordered: [micro_batches, count]
  double reduce_seconds_ = 0.0;
};

// What one optimizer step needs to run its micro-batches.
struct StepSetup {
  const Model& model;
  LoraAdapter& adapter;
  const data::BatchPlan& plan;
  int64_t micro_batches = 1;  // --grad-accumulation-steps
  uint64_t seed = 0;          // dropout masks: a pure function of (seed, step, micro-batch)
  ForwardOptions forward;
};
// This rank's half of a step, before the exchange.
struct LocalStep {
  std::vector<double> micro_losses;  // this rank's part of each micro-batch's loss
  int64_t trained_tokens = 0;        // of the whole global batch (the loss normalizer)
  int64_t tokens = 0;                // real input tokens of the whole global batch
};
// Takes the step's micro-batches at `cursor` (moving it on by micro_batches on every rank, so the
// data order is the same for any number of ranks) and runs this rank's shares forward and
// backward, normalized by the global batch's trained tokens. The gradients stay local (and, in
// ordered mode, in the exchange's slots) until exchange_step.
LocalStep accumulate_shares(const StepSetup& setup, int64_t step, data::DataCursor& cursor,
                            GradientExchange& exchange, Communicator& comm);
// Sums the losses and gradients of a step over the ranks: afterwards the parameters hold the
// global batch's gradient on every rank. Returns the global batch's loss (the per-micro-batch
// losses added in micro-batch order, as one process adds them).
double exchange_step(std::vector<double>& micro_losses, GradientExchange& exchange,
                     Communicator& comm);

}  // namespace lora
