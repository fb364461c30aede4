#include "autograd/tape.h"

#include <stdexcept>

namespace lora::ag {

void Parameter::zero_grad() {
  if (grad.shape != value.shape) grad = Tensor(value.shape);
  grad.zero();
}

Var Tape::make(Tensor value, bool requires_grad) {
  nodes_.push_back(Node{std::move(value), Tensor{}, requires_grad && record_});
  return &nodes_.back();
}

Tensor& Tape::grad(Var v) {
  if (v->grad.shape != v->value.shape) v->grad = Tensor(v->value.shape);
  return v->grad;
}

void Tape::push_backward(std::function<void()> fn) {
  if (record_) backward_.push_back(std::move(fn));
}

void Tape::backward(Var loss, float seed) {
  if (!record_) throw std::logic_error("backward on a tape that does not record");
  if (loss->value.numel() != 1) throw std::logic_error("backward needs a scalar loss");
  grad(loss).data[0] = seed;
  for (auto it = backward_.rbegin(); it != backward_.rend(); ++it) (*it)();
}

void Tape::clear() {
  backward_.clear();
  nodes_.clear();
}

}  // namespace lora::ag
