#include "trainer/io/adapter_gguf.h"

#include <cstring>
#include <stdexcept>

#include "trainer/gguf_arch.h"
#include "trainer/gguf_model.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/gguf_file.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace

ModelConfig adapter_base_config(const fs::path& model) {
  if (!is_gguf_file(model)) return ModelConfig::load(model);
  return gguf_model_config(GgufFile::open(model));
}

void write_gguf_adapter(const AdapterFile& adapter, const ModelConfig& base, const fs::path& out) {
  if (adapter.pairs.empty()) throw std::invalid_argument("the adapter holds no LoRA pair");
  const auto arch_of = gguf_architecture_of(base.model_type);
  if (!arch_of)
    throw std::invalid_argument("no GGUF architecture for model_type '" + base.model_type + "'");
  const std::string& arch = *arch_of;
  const bool permuted = gguf_permutes_qk(arch);
  const double alpha =
      adapter.pairs.front().scale * static_cast<double>(adapter.pairs.front().rank);
  GgufWriter w;
  w.set_string("general.architecture", arch);
  w.set_string("general.type", "adapter");
  w.set_string("adapter.type", "lora");
  w.set_f32("adapter.lora.alpha", static_cast<float>(alpha));
  for (const AdapterPair& pair : adapter.pairs) {
    const auto proj = pair_proj(pair);
    if (!proj)
      throw std::invalid_argument(pair.a_name + ": module '" + pair.module +
                                  "' has no llama.cpp tensor name");
    if (pair.layer >= base.num_layers)
      throw std::invalid_argument(pair.a_name + ": layer " + std::to_string(pair.layer) +
                                  " is past the base's " + std::to_string(base.num_layers));
    const std::string name = gguf_proj_tensor(*proj, pair.layer);
    std::vector<float> b = pair.b;
    // llama.cpp applies alpha / rank; the rest of this pair's scale goes into B.
    const double fold = pair.scale * static_cast<double>(pair.rank) / alpha;
    if (fold != 1.0)
      for (float& v : b) v = static_cast<float>(v * fold);
    const int64_t heads = *proj == Proj::q   ? base.num_heads
                          : *proj == Proj::k ? base.num_kv_heads
                                             : 0;
    if (permuted && heads > 0) {
      // Row r of the file's B is row gguf_qk_row_to_hf(r) of ours, as the base's q/k rows are.
      std::vector<float> perm(b.size());
      const int64_t head_dim = pair.out / heads;
      for (int64_t r = 0; r < pair.out; ++r)
        std::memcpy(perm.data() + r * pair.rank,
                    b.data() + gguf_qk_row_to_hf(r, head_dim) * pair.rank,
                    static_cast<std::size_t>(pair.rank) * sizeof(float));
      b = std::move(perm);
    }
    w.add_tensor(name + ".lora_a", GgmlType::F32, {pair.rank, pair.in}, f32_bytes(pair.a));
    w.add_tensor(name + ".lora_b", GgmlType::F32, {pair.out, pair.rank}, f32_bytes(b));
  }
  w.write(out);
}

}  // namespace lora
