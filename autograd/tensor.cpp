#include "autograd/tensor.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <stdexcept>

namespace lora {

int64_t shape_numel(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_to_string(shape));
    n *= d;
  }
  return n;
}

std::string shape_to_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

std::vector<float> filled(int64_t n, float fill) {
  // Zeros (nearly every tensor) go through memset, whose wide stores beat the fill loop's one float
  // per store where the tensor fits in cache (past the caches both wait on memory).
  if (std::bit_cast<uint32_t>(fill) == 0) return std::vector<float>(static_cast<std::size_t>(n));
  return std::vector<float>(static_cast<std::size_t>(n), fill);
}

}  // namespace

Tensor::Tensor(std::vector<int64_t> shape_, float fill)
    : shape(std::move(shape_)), data(filled(shape_numel(shape), fill)) {}

Tensor::Tensor(std::vector<int64_t> shape_, std::vector<float> values)
    : shape(std::move(shape_)), data(std::move(values)) {
  if (static_cast<int64_t>(data.size()) != shape_numel(shape))
    throw std::invalid_argument("tensor of shape " + shape_to_string(shape) + " given " +
                                std::to_string(data.size()) + " values");
}

void Tensor::zero() { std::fill(data.begin(), data.end(), 0.0f); }

std::string Tensor::shape_str() const { return shape_to_string(shape); }

}  // namespace lora
