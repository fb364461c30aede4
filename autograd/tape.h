// Reverse-mode autograd: a tape of nodes (values and their gradients) and the backward closures
// that ops push while running forward. Backward replays the closures in reverse.
//
// Trainable weights are not tape nodes: they are `Parameter`s owned by the model (the LoRA A/B
// matrices), and ops that use them accumulate straight into Parameter::grad. The frozen base has
// no Parameter at all, so it can never receive a weight gradient.
#pragma once
#include <deque>
#include <functional>
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
  // `op` names the closure in the per-op time split (a string literal: it is kept, not copied).
  // `output` is the node the op produced: once the closure has run, every contribution to its
  // gradient has been used (consumers run earlier in reverse order), so backward releases that
  // gradient; holding all of them to the end doubled the activation memory at the end of a step.
  void push_backward(std::function<void()> fn, const char* op = "other", Var output = nullptr);
  // Seeds d(loss)/d(loss) = seed for a scalar node and runs every closure in reverse order.
  void backward(Var loss, float seed = 1.0f);
  // Seeds the gradient of any node (same shape as its value) and runs every closure in reverse:
  // the vector-Jacobian product through the whole tape (used by gradient checkpointing).
  void backward_from(Var output, const Tensor& output_grad);
  // Drops all nodes and closures (memory is released).
  void clear();
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

 private:
  bool record_;
  std::deque<Node> nodes_;  // deque: handles stay valid as nodes are added
  std::vector<std::function<void()>> backward_;
  std::vector<const char*> backward_ops_;  // parallel to backward_
  std::vector<Var> backward_outputs_;      // parallel to backward_; may hold nullptr
  OpProfile* profile_ = nullptr;
  OpPhase forward_phase_ = OpPhase::Forward;
  ComputeDType compute_ = ComputeDType::F32;
};

}  // namespace lora::ag
