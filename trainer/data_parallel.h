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
// accumulates them: bit-identical to one process whenever ranks compute whole micro-batches, for
// micro_batches times the gradient bytes on the wire.
class GradientExchange {
 public:
  GradientExchange(std::span<ag::Parameter* const> params, int64_t micro_batches, bool ordered,
                   Communicator& comm);
  // Before a step: zeroes the gradients (and the slots).
  void begin_step();
  // After this rank's backward of a share of micro-batch `micro`.
  void after_backward(int64_t micro);
  // After the rank's last backward of the step: the parameters' gradients become the global
  // batch's. `active[m]` is false for micro-batches no rank computed (nothing to add).
  void reduce(const std::vector<bool>& active);
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

// One optimizer step's data, forward and backward on this rank, and the exchange.
struct StepGradient {
  double loss = 0.0;           // token-weighted mean over the global batch (every rank)
  int64_t trained_tokens = 0;  // of the global batch
  int64_t tokens = 0;          // real input tokens of the global batch
};
struct StepSetup {
  const Model& model;
  LoraAdapter& adapter;
  const data::BatchPlan& plan;
  int64_t micro_batches = 1;  // --grad-accumulation-steps
  uint64_t seed = 0;          // dropout masks: a pure function of (seed, step, micro-batch)
  ForwardOptions forward;
};
// Takes the step's micro-batches at `cursor` (moving it on by micro_batches, on every rank, so
// the data order is the same for any number of ranks), runs this rank's shares, and leaves the
// global batch's gradient (summed over trained tokens, divided by their count) in the adapter's
// parameters on every rank.
StepGradient step_gradient(const StepSetup& setup, int64_t step, data::DataCursor& cursor,
                           GradientExchange& exchange, Communicator& comm);

}  // namespace lora
