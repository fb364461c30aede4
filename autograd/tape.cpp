#include "autograd/tape.h"

#include <stdexcept>

namespace lora::ag {

void Parameter::zero_grad() {
  if (grad.shape != value.shape) grad = Tensor(value.shape);
  grad.zero();
}

void Parameter::ensure_grad() {
  if (grad.shape != value.shape) grad = Tensor(value.shape);
}

Var Tape::make(Tensor value, bool requires_grad) {
  nodes_.push_back(Node{std::move(value), Tensor{}, requires_grad && record_});
  return &nodes_.back();
}

Tensor& Tape::grad(Var v) {
  if (v->grad.shape != v->value.shape) v->grad = Tensor(v->value.shape);
  return v->grad;
}

void Tape::accumulate_grad(Var v, const float* g) {
  Tensor& dv = grad(v);
  for (std::size_t i = 0; i < dv.data.size(); ++i) dv.data[i] += g[i];
}

void Tape::push_backward(std::function<void()> fn, const char* op, Var output) {
  if (!record_) return;
  backward_.push_back(std::move(fn));
  backward_ops_.push_back(op);
  backward_outputs_.push_back(output);
}

void Tape::backward(Var loss, float seed) {
  if (!record_) throw std::logic_error("backward on a tape that does not record");
  if (loss->value.numel() != 1) throw std::logic_error("backward needs a scalar loss");
  backward_from(loss, Tensor(loss->value.shape, seed));
}

void Tape::backward_from(Var output, const Tensor& output_grad) {
  if (!record_) throw std::logic_error("backward on a tape that does not record");
  if (output_grad.shape != output->value.shape)
    throw std::logic_error("backward seed of shape " + output_grad.shape_str() +
                           " for a node of shape " + output->value.shape_str());
  Tensor& g = grad(output);
  for (std::size_t i = 0; i < g.data.size(); ++i) g.data[i] += output_grad.data[i];
  for (std::size_t i = backward_.size(); i-- > 0;) {
    const OpTimer timer(profile_, backward_ops_[i], OpPhase::Backward);
    backward_[i]();
    // The seed keeps its gradient: the caller gave it and may read it back.
    if (Var done = backward_outputs_[i]; done && done != output) done->grad = Tensor{};
  }
}

void Tape::clear() {
  backward_.clear();
  backward_ops_.clear();
  backward_outputs_.clear();
  nodes_.clear();
}

}  // namespace lora::ag
