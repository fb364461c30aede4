// A dense, row-major f32 tensor that owns its storage: the value type for activations,
// gradients and trainable parameters.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace lora {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape_, float fill = 0.0f);
  Tensor(std::vector<int64_t> shape_, std::vector<float> values);  // values.size() must equal numel

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  int rank() const { return static_cast<int>(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  std::span<float> span() { return data; }
  std::span<const float> span() const { return data; }
  void zero();
  // Frees the storage of a value nothing will read again and keeps the shape (numel() is then 0).
  void release_data() { data = std::vector<float>(); }
  // Moves the values out into a tensor of this shape, which keeps its shape (numel() is then 0).
  Tensor take_data() {
    Tensor out(shape, std::move(data));
    release_data();
    return out;
  }
  std::string shape_str() const;  // "[2, 3]"
};

int64_t shape_numel(std::span<const int64_t> shape);
std::string shape_to_string(std::span<const int64_t> shape);

}  // namespace lora
