#include "autograd/tape.h"

#include <algorithm>
#include <stdexcept>

#include "autograd/parallel.h"

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
  // The first gradient is copied (zeroing a fresh tensor and adding would pass over it twice);
  // an activation-sized sum is split over the threads.
  if (v->grad.shape != v->value.shape) {
    const int64_t count = shape_numel(v->value.shape);
    v->grad = Tensor(v->value.shape, std::vector<float>(g, g + count));
    return;
  }
  float* d = v->grad.ptr();
  const auto count = static_cast<int64_t>(v->grad.data.size());
  constexpr int64_t kBlock = int64_t(1) << 14;
  parallel_for((count + kBlock - 1) / kBlock, count >= (int64_t(1) << 16), [&](int64_t b) {
    const int64_t end = std::min(count, (b + 1) * kBlock);
#pragma omp simd
    for (int64_t i = b * kBlock; i < end; ++i) d[i] += g[i];
  });
}

void Tape::accumulate_grad(Var v, Tensor&& g) {
  if (g.shape != v->value.shape)
    throw std::logic_error("accumulate_grad: a gradient of shape " + g.shape_str() +
                           " for a node of shape " + v->value.shape_str());
  if (v->grad.data.empty())
    v->grad = std::move(g);
  else
    accumulate_grad(v, g.ptr());
}

void Tape::push_backward(std::function<void()> fn, const char* op, Var output,
                         std::initializer_list<Var> reads) {
  if (!record_) return;
  steps_.push_back(Step{std::move(fn), op, output, std::vector<Var>(reads)});
}

void Tape::backward(Var loss, float seed) {
  if (!record_) throw std::logic_error("backward on a tape that does not record");
  if (loss->value.numel() != 1) throw std::logic_error("backward needs a scalar loss");
  backward_from(loss, Tensor(loss->value.shape, seed));
}

void Tape::backward_from(Var output, Tensor output_grad) {
  if (!record_) throw std::logic_error("backward on a tape that does not record");
  if (output_grad.shape != output->value.shape)
    throw std::logic_error("backward seed of shape " + output_grad.shape_str() +
                           " for a node of shape " + output->value.shape_str());
  accumulate_grad(output, std::move(output_grad));
  if (release_values_) release_unread_values(output);
  for (std::size_t i = steps_.size(); i-- > 0;) {
    running_ = i;
    {
      const OpTimer timer(profile_, steps_[i].op, OpPhase::Backward);
      steps_[i].fn();
    }
    // The seed keeps its gradient: the caller gave it and may read it back.
    if (Var done = steps_[i].output; done && done != output) done->grad = Tensor{};
    if (release_values_) release_after(i);
  }
  last_reader_.clear();
  produced_.clear();
}

void Tape::release_unread_values(Var seed) {
  produced_.clear();
  last_reader_.clear();
  for (const Step& s : steps_)
    if (s.output && s.output != seed) produced_.insert(s.output);
  // Backward runs the steps from the last to the first: a value's last reader is its first step.
  for (std::size_t i = steps_.size(); i-- > 0;)
    for (Var r : steps_[i].reads) last_reader_[r] = i;
  for (Var v : produced_)
    if (!last_reader_.contains(v)) v->value.release_data();
}

void Tape::release_after(std::size_t step) {
  for (Var r : steps_[step].reads)
    if (releasable(r) && last_reader_.at(r) == step) r->value.release_data();
}

bool Tape::releasable(Var v) const { return release_values_ && produced_.contains(v); }

bool Tape::value_dies_here(Var v) const {
  if (!releasable(v) || v->value.data.empty()) return false;
  const auto it = last_reader_.find(v);
  return it != last_reader_.end() && it->second == running_;
}

Tensor Tape::take_value(Var v) {
  if (!value_dies_here(v))
    throw std::logic_error("take_value: the value of a " + v->value.shape_str() +
                           " node is still read after this closure");
  return v->value.take_data();
}

bool Tape::value_reusable_as_grad(Var v) const {
  return value_dies_here(v) && v->grad.data.empty();
}

float* Tape::reuse_value_as_grad(Var v) {
  if (!value_reusable_as_grad(v))
    throw std::logic_error("reuse_value_as_grad: the value of a " + v->value.shape_str() +
                           " node is still read, or its gradient already exists");
  v->grad = take_value(v);
  return v->grad.ptr();
}

void Tape::clear() {
  steps_.clear();
  last_reader_.clear();
  produced_.clear();
  nodes_.clear();
}

}  // namespace lora::ag
