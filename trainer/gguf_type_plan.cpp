#include "trainer/gguf_type_plan.h"

#include <algorithm>
#include <cctype>
#include <tuple>
#include <utility>

namespace lora {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// llama-quantize's use_more_bits: the first and last eighth of the layers and every third one
// between them.
bool use_more_bits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// "blk.12.ffn_down.weight" -> 12; -1 for tensors outside the blocks.
int64_t layer_of(const std::string& name) {
  if (!name.starts_with("blk.")) return -1;
  int64_t layer = 0;
  std::size_t i = 4;
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i)
    layer = layer * 10 + (name[i] - '0');
  return i > 4 ? layer : -1;
}

}  // namespace

std::optional<GgufTypePlan> GgufTypePlan::parse(std::string_view name) {
  GgufTypePlan p;
  p.name_ = lower(name);
  static constexpr std::pair<std::string_view, std::pair<Mix, GgmlType>> kMixes[] = {
      {"q4_k_m", {Mix::q4_k_m, GgmlType::Q4_K}}, {"q5_k_m", {Mix::q5_k_m, GgmlType::Q5_K}},
      {"q4_k_s", {Mix::q4_k_s, GgmlType::Q4_K}}, {"q3_k_s", {Mix::q3_k_s, GgmlType::Q3_K}},
      {"q3_k_m", {Mix::q3_k_m, GgmlType::Q3_K}}, {"q3_k_l", {Mix::q3_k_l, GgmlType::Q3_K}}};
  for (const auto& [mix_name, mix] : kMixes)
    if (p.name_ == mix_name) {
      std::tie(p.mix_, p.base_) = mix;
      return p;
    }
  const auto t = ggml_type_named(name);
  if (!t || !ggml_type_writable(*t)) return std::nullopt;
  p.base_ = *t;
  return p;
}

GgmlType ggml_fallback_type(GgmlType t, int64_t cols) {
  if (cols % ggml_block_elems(t) == 0) return t;
  GgmlType f = t;
  switch (t) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
      f = GgmlType::Q4_0;
      break;
    case GgmlType::Q4_K:
      f = GgmlType::Q5_0;
      break;
    case GgmlType::Q5_K:
      f = GgmlType::Q5_1;
      break;
    case GgmlType::Q6_K:
      f = GgmlType::Q8_0;
      break;
    case GgmlType::IQ4_XS:
      f = GgmlType::IQ4_NL;
      break;
    default:
      break;
  }
  return cols % ggml_block_elems(f) == 0 ? f : GgmlType::F16;
}

GgmlType ggml_written_type(GgmlType t, int64_t cols) {
  switch (t) {
    case GgmlType::IQ1_S:
    case GgmlType::IQ1_M:
    case GgmlType::IQ2_XXS:
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::TQ1_0:
    case GgmlType::TQ2_0:
      return ggml_fallback_type(GgmlType::Q2_K, cols);
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
      return ggml_fallback_type(GgmlType::Q3_K, cols);
    case GgmlType::MXFP4:
      return ggml_fallback_type(GgmlType::IQ4_NL, cols);
    default:
      return t;
  }
}

GgmlType GgufTypePlan::type_of(const std::string& name, int64_t dims, int64_t cols, int64_t layers,
                               bool tied) const {
  if (dims < 2 || !name.ends_with(".weight") || name.find("_norm.weight") != std::string::npos ||
      name == "rope_freqs.weight")
    return GgmlType::F32;
  GgmlType t = base_;
  if (mix_ != Mix::none) {
    if (name == "output.weight" || (tied && name == "token_embd.weight"))
      // llama-quantize gives the output Q8_0 when its rows are not whole 256-blocks.
      t = cols % 256 == 0 ? GgmlType::Q6_K : GgmlType::Q8_0;
    else
      t = block_matrix_type(name, layers);
  }
  return ggml_fallback_type(t, cols);
}

GgmlType GgufTypePlan::block_matrix_type(const std::string& name, int64_t layers) const {
  const int64_t layer = layer_of(name);
  // llama-quantize treats a fused attn_qkv (Phi-3) as it treats attn_v.
  const bool v = name.ends_with(".attn_v.weight") || name.ends_with(".attn_qkv.weight");
  const bool down = name.ends_with(".ffn_down.weight");
  const bool output = name.ends_with(".attn_output.weight");
  switch (mix_) {
    case Mix::q4_k_s:
      if ((v && layer < 4) || (down && layer < layers / 8)) return GgmlType::Q5_K;
      break;
    case Mix::q4_k_m:
    case Mix::q5_k_m:
      if ((v || down) && use_more_bits(layer, layers)) return GgmlType::Q6_K;
      break;
    case Mix::q3_k_m:
      if (v) return layer < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
      if (down) return layer < layers / 16 ? GgmlType::Q5_K : GgmlType::Q4_K;
      if (output) return GgmlType::Q4_K;
      break;
    case Mix::q3_k_l:
      if (v || down || output) return GgmlType::Q5_K;
      break;
    case Mix::q3_k_s:
    case Mix::none:
      break;
  }
  return base_;
}

uint32_t GgufTypePlan::file_type() const {
  switch (mix_) {
    case Mix::q4_k_m:
      return 15;
    case Mix::q5_k_m:
      return 17;
    case Mix::q4_k_s:
      return 14;
    case Mix::q3_k_s:
      return 11;
    case Mix::q3_k_m:
      return 12;
    case Mix::q3_k_l:
      return 13;
    case Mix::none:
      break;
  }
  switch (base_) {  // llama_ftype's MOSTLY_<type>; pure K types as their _S mixes
    case GgmlType::F32:
      return 0;
    case GgmlType::F16:
      return 1;
    case GgmlType::Q4_0:
      return 2;
    case GgmlType::Q4_1:
      return 3;
    case GgmlType::Q8_0:
      return 7;
    case GgmlType::Q5_0:
      return 8;
    case GgmlType::Q5_1:
      return 9;
    case GgmlType::Q2_K:
      return 10;
    case GgmlType::Q3_K:
      return 11;
    case GgmlType::Q4_K:
      return 14;
    case GgmlType::Q5_K:
      return 16;
    case GgmlType::Q6_K:
      return 18;
    case GgmlType::IQ4_NL:
      return 25;
    case GgmlType::IQ4_XS:
      return 30;
    case GgmlType::BF16:
      return 32;
    case GgmlType::IQ2_XXS:  // read-only types: never a plan's base (parse refuses them)
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
    case GgmlType::IQ1_S:
    case GgmlType::IQ1_M:
    case GgmlType::TQ1_0:
    case GgmlType::TQ2_0:
    case GgmlType::MXFP4:
      break;
  }
  return 0;
}

}  // namespace lora
