// Reverse-mode autograd: a tape of nodes (values and their gradients) and the backward closures
// that ops push while running forward. Backward replays the closures in reverse.
//
// Trainable weights are not tape nodes: they are `Parameter`s owned by the model (the LoRA A/B
// matrices), and ops that use them accumulate straight into Parameter::grad. The frozen base has
// no Parameter at all, so it can never receive a weight gradient.
#pragma once
#include <deque>
#include <functional>
#include <initializer_list>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "autograd/frozen_weight.h"
#include "autograd/profile.h"
#include "autograd/tensor.h"

namespace lora::ag {

struct Node {
  Tensor value;
  Tensor grad;  // empty until backward first touches it
  bool requires_grad = false;
};
// A non-owning handle to a node that lives as long as its tape.
using Var = Node*;

struct Parameter {
  Tensor value;
  Tensor grad;  // same shape as value; accumulated by backward, zeroed by the optimizer step
  void zero_grad();
  // Gives grad the value's shape (zero-filled) if it does not have it yet; keeps it otherwise.
  void ensure_grad();
};

class Tape {
 public:
  // A tape that does not record keeps no backward closures (inference, and the forward half of
  // gradient checkpointing); ops still compute their values.
  explicit Tape(bool record = true) : record_(record) {}
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  bool recording() const { return record_; }
  Var make(Tensor value, bool requires_grad);
  Var constant(Tensor value) { return make(std::move(value), false); }
  // The gradient buffer of a node, zero-filled with the value's shape on first use.
  Tensor& grad(Var v);
  // grad(v) += g, g holding as many values as v.
  void accumulate_grad(Var v, const float* g);
  // The same for a gradient the caller gives up: it becomes v's gradient when v has none yet.
  void accumulate_grad(Var v, Tensor&& g);
  // `op` names the closure in the per-op time split (a string literal: it is kept, not copied).
  // `output` is the node the op produced: once the closure has run, every contribution to its
  // gradient has been used (consumers run earlier in reverse order), so backward releases that
  // gradient; holding all of them to the end doubled the activation memory at the end of a step.
  // `reads` are the nodes whose values the closure reads (shapes do not count); with
  // release_values on, backward frees a value once its last reader has run.
  void push_backward(std::function<void()> fn, const char* op = "other", Var output = nullptr,
                     std::initializer_list<Var> reads = {});
  // Seeds d(loss)/d(loss) = seed for a scalar node and runs every closure in reverse order.
  void backward(Var loss, float seed = 1.0f);
  // Seeds the gradient of any node (same shape as its value) and runs every closure in reverse:
  // the vector-Jacobian product through the whole tape (used by gradient checkpointing).
  void backward_from(Var output, Tensor output_grad);
  // Drops all nodes and closures (memory is released).
  void clear();

  // With release_values on, backward frees the value of every node an op produced (the seed
  // excepted) as soon as no closure left to run reads it: values nothing reads go when backward
  // starts, the others after their last reader. Their shapes stay. Off by default, since callers
  // may read values after backward; gradient checkpointing's replay and the trainer turn it on.
  void set_release_values(bool on) { release_values_ = on; }
  // Inside a backward closure: whether v's value is read by nothing after the running closure
  // (release_values is on, v is an op's output and the running closure is its last reader).
  bool value_dies_here(Var v) const;
  // Moves out the value of a v that value_dies_here (v keeps its shape).
  Tensor take_value(Var v);
  // value_dies_here, and v's gradient is still untouched: the closure may compute the gradient
  // over the value.
  bool value_reusable_as_grad(Var v) const;
  // Turns v's value storage into its gradient (the old values still in it, for the caller to read
  // and overwrite) and returns it; v must be value_reusable_as_grad. Saves one activation-sized
  // buffer per op that can do this (swiglu, linear) while the replayed block is in flight.
  float* reuse_value_as_grad(Var v);
  std::size_t size() const { return nodes_.size(); }

  // Per-op timing (off when null): ops time their forward into `profile` under `forward_phase`
  // (Recompute for the replay tape of gradient checkpointing); backward closures are timed here.
  void set_profile(OpProfile* profile, OpPhase forward_phase = OpPhase::Forward) {
    profile_ = profile;
    forward_phase_ = forward_phase;
  }
  OpProfile* profile() const { return profile_; }
  OpPhase forward_phase() const { return forward_phase_; }

  // The precision of the frozen base's products recorded on this tape (forward and backward).
  void set_compute_dtype(ComputeDType c) { compute_ = c; }
  ComputeDType compute_dtype() const { return compute_; }
  // The activations of its decode products (a few tokens through frozen_gemv).
  void set_gemv_activations(GemvActivations a) { gemv_activations_ = a; }
  GemvActivations gemv_activations() const { return gemv_activations_; }

 private:
  struct Step {
    std::function<void()> fn;
    const char* op;
    Var output;  // may be nullptr
    std::vector<Var> reads;
  };
  // Frees values as release_values describes; `last_reader_` maps each value still to be read to
  // the index of the last step that reads it.
  void release_unread_values(Var seed);
  void release_after(std::size_t step);
  bool releasable(Var v) const;

  bool record_;
  bool release_values_ = false;
  std::deque<Node> nodes_;  // deque: handles stay valid as nodes are added
  std::vector<Step> steps_;
  std::unordered_map<const Node*, std::size_t> last_reader_;
  std::unordered_set<Node*> produced_;  // the op outputs, minus the seed, during backward
  std::size_t running_ = 0;             // the step backward is running
  OpProfile* profile_ = nullptr;
  OpPhase forward_phase_ = OpPhase::Forward;
  ComputeDType compute_ = ComputeDType::F32;
  GemvActivations gemv_activations_ = GemvActivations::F32;
};

}  // namespace lora::ag
