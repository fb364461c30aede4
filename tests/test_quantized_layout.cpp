// The one reader of MLX-quantized linears: the layout follows from the tensor shapes plus the bits
// (config.json) or the width (the model's dimensions), both routes agree, the values read back
// bit for bit, and every inconsistency is an error naming the tensor.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/quant.h"
#include "support/test_support.h"
#include "trainer/io/model_folder.h"

namespace lora {
namespace {

constexpr int64_t kRows = 6, kCols = 128;

// `q` as the quantized linear "lin" (weight, scales, biases), alone in a model folder.
WeightSet write_linear(const std::filesystem::path& dir, const QuantizedMatrix& q) {
  std::filesystem::create_directories(dir);
  std::vector<TensorData> tensors;
  append_quantized(tensors, "lin", q);
  write_safetensors(dir / "model.safetensors", tensors);
  return WeightSet::open_dir(dir);
}

QuantizedMatrix sample(int bits, int group) {
  std::vector<float> w(kRows * kCols);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 37 % 101) - 50) / 64.0f;
  return quantize(w, kRows, kCols, bits, group, DType::BF16);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(QuantizedLayout, BitsOrWidthGiveTheSameLayoutAndTheValuesReadBack) {
  test::TempDir tmp("qlayout");
  for (const auto& [bits, group] : std::vector<std::pair<int, int>>{{4, 64}, {3, 32}, {8, 128}}) {
    const QuantizedMatrix q = sample(bits, group);
    const WeightSet ws = write_linear(tmp / ("b" + std::to_string(bits)), q);
    const QuantLayout by_bits = quantized_layout(ws, "lin", bits);
    const QuantLayout by_width = quantized_layout_for_width(ws, "lin", kCols);
    for (const QuantLayout& l : {by_bits, by_width}) {
      EXPECT_EQ(l.rows, kRows);
      EXPECT_EQ(l.cols, kCols);
      EXPECT_EQ(l.bits, bits);
      EXPECT_EQ(l.group_size, group);
      EXPECT_EQ(l.scale_dtype, DType::BF16);
    }
    const QuantizedMatrix back = read_quantized(ws, "lin", QuantSpec{bits, group});
    EXPECT_EQ(back.packed, q.packed);
    EXPECT_EQ(back.scales, q.scales);
    EXPECT_EQ(back.biases, q.biases);
  }
}

TEST(QuantizedLayout, InconsistenciesNameTheTensor) {
  test::TempDir tmp("qlayout");
  const WeightSet ws = write_linear(tmp / "ok", sample(4, 64));
  // config.json's group size disagrees with the scales.
  std::string e = error_of([&] { read_quantized(ws, "lin", QuantSpec{4, 32}); });
  EXPECT_NE(e.find("'lin.scales'"), std::string::npos) << e;
  EXPECT_NE(e.find("groups of 64"), std::string::npos) << e;
  // 5-bit values do not fill 16 packed words.
  e = error_of([&] { quantized_layout(ws, "lin", 5); });
  EXPECT_NE(e.find("'lin.weight'"), std::string::npos) << e;
  // The model says the matrix is 96 wide: 16 words do not hold 96 values of whole bits.
  e = error_of([&] { quantized_layout_for_width(ws, "lin", 96); });
  EXPECT_NE(e.find("96 wide"), std::string::npos) << e;

  // Biases of another shape than the scales, and a missing companion.
  const QuantizedMatrix q = sample(4, 64);
  std::vector<TensorData> tensors;
  append_quantized(tensors, "lin", q);
  tensors[2] = TensorData::from_f32("lin.biases", {kRows, 1}, std::vector<float>(kRows, 0.0f));
  std::filesystem::create_directories(tmp / "biases");
  write_safetensors(tmp / "biases/model.safetensors", tensors);
  e = error_of([&] { quantized_layout(WeightSet::open_dir(tmp / "biases"), "lin", 4); });
  EXPECT_NE(e.find("'lin.biases'"), std::string::npos) << e;
  tensors.pop_back();
  std::filesystem::create_directories(tmp / "missing");
  write_safetensors(tmp / "missing/model.safetensors", tensors);
  e = error_of([&] { quantized_layout(WeightSet::open_dir(tmp / "missing"), "lin", 4); });
  EXPECT_NE(e.find("'lin.biases' is missing"), std::string::npos) << e;
}

}  // namespace
}  // namespace lora
