// adapter_config.json beside a small valid adapter: MLX-LM (adapters.safetensors) when the
// input's first byte is even, PEFT (adapter_model.safetensors) when odd; an adapter that reads
// is written back in both layouts.
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/io/adapter_file.h"
#include "trainer/io/safetensors.h"

namespace {

// One rank-2 pair on layer 0's q_proj (in 4, out 3), in the layout's own names and orientation.
void write_weights(const std::filesystem::path& dir, bool peft) {
  const std::vector<float> a(8, 0.25f), b(6, -0.5f);
  std::vector<lora::TensorData> t;
  if (peft) {
    const std::string p = "base_model.model.model.layers.0.self_attn.q_proj.";
    t.push_back(lora::TensorData::from_f32(p + "lora_A.weight", {2, 4}, a));
    t.push_back(lora::TensorData::from_f32(p + "lora_B.weight", {3, 2}, b));
  } else {
    const std::string p = "model.layers.0.self_attn.q_proj.";
    t.push_back(lora::TensorData::from_f32(p + "lora_a", {4, 2}, a));
    t.push_back(lora::TensorData::from_f32(p + "lora_b", {2, 3}, b));
  }
  lora::write_safetensors(dir / (peft ? "adapter_model.safetensors" : "adapters.safetensors"), t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool peft = data[0] % 2 == 1;
  const auto dir = lora::fuzz::scratch_dir() / (peft ? "peft" : "mlx");
  static const bool written = [] {
    for (bool p : {false, true}) {
      std::filesystem::create_directories(lora::fuzz::scratch_dir() / (p ? "peft" : "mlx"));
      write_weights(lora::fuzz::scratch_dir() / (p ? "peft" : "mlx"), p);
    }
    return true;
  }();
  (void)written;
  lora::fuzz::write_input(std::string(peft ? "peft" : "mlx") + "/adapter_config.json",
                          lora::fuzz::as_text(data + 1, size - 1));
  try {
    const auto file = lora::AdapterFile::read(dir);
    file.summary().dump();
    for (auto format : {lora::AdapterFormat::mlx, lora::AdapterFormat::peft}) {
      const auto out = lora::fuzz::scratch_dir() / "out";
      std::filesystem::remove_all(out);
      file.write(out, format);
    }
  } catch (const std::exception&) {
  }
  return 0;
}
