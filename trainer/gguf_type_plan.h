// Which ggml type each tensor of a converted GGUF gets. A plain type ("q8_0", "q4_k", "f16")
// applies to every matrix, as llama.cpp's converter (`--outtype`) and `llama-quantize --pure` do;
// the mixes "Q4_K_M", "Q5_K_M", "Q4_K_S", "Q3_K_S", "Q3_K_M" and "Q3_K_L" follow llama-quantize's
// choices for dense models (llama.cpp src/llama-quant.cpp): the output matrix (the embedding when
// tied) Q6_K; attn_v and ffn_down Q6_K on the layers use_more_bits picks (the first and last
// eighth and every third between) for Q4_K_M and Q5_K_M, Q5_K on the first layers for Q4_K_S;
// for Q3_K_M attn_v Q5_K on layers 0-1 and Q4_K after, ffn_down Q5_K on the first sixteenth and
// Q4_K after, attn_output Q4_K; for Q3_K_L those three Q5_K; the rest the base K type. Vectors
// (norms, biases) stay F32. A matrix whose rows are not whole blocks falls back as llama.cpp's
// does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL, then F16).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "autograd/gguf_quant.h"

namespace lora {

class GgufTypePlan {
 public:
  // "f32", "F16", "bf16", "q8_0", ..., "q6_k", "iq4_nl", "iq4_xs", "q4_k_m", "q5_k_m", "q4_k_s",
  // "q3_k_s", "q3_k_m", "q3_k_l"; nullopt otherwise.
  static std::optional<GgufTypePlan> parse(std::string_view name);

  // The type of tensor `name` (GGUF naming: "blk.3.attn_v.weight", "output.weight") with `dims`
  // dimensions and rows of `cols` elements; `layers` blocks, `tied` when there is no output.weight.
  GgmlType type_of(const std::string& name, int64_t dims, int64_t cols, int64_t layers,
                   bool tied) const;
  // general.file_type (llama.cpp's llama_ftype) of the whole file.
  uint32_t file_type() const;
  std::string name() const { return name_; }

 private:
  enum class Mix { none, q4_k_m, q5_k_m, q4_k_s, q3_k_s, q3_k_m, q3_k_l };
  // The mix's type for a matrix inside the blocks (or the embedding when untied).
  GgmlType block_matrix_type(const std::string& name, int64_t layers) const;
  GgmlType base_ = GgmlType::F16;
  Mix mix_ = Mix::none;
  std::string name_;
};

// llama.cpp's fallback for a matrix whose rows are not whole blocks of `t`.
GgmlType ggml_fallback_type(GgmlType t, int64_t cols);
// The type a changed matrix of type `t` is written in: `t` itself where we write it; for the
// read-only types (gguf_quant.h) the nearest we write at no fewer bits, Q2_K for the 1- and 2-bit
// types, Q3_K for IQ3_XXS and IQ3_S, IQ4_NL for MXFP4, falling back as ggml_fallback_type says.
GgmlType ggml_written_type(GgmlType t, int64_t cols);

}  // namespace lora
