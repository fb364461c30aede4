// `lora merge --out FILE.gguf` on a GGUF base: the adapters folded into the base's own tensors,
// each requantized to its type (or to `outtype`), everything else (metadata, tokenizer, other
// tensors) copied as it is. Q/k deltas are computed in Hugging Face layout and permuted into
// llama.cpp's row order for Llama bases.
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "autograd/gguf_quant.h"
#include "trainer/merge.h"

namespace lora {

struct GgufMergeReport {
  int64_t merged_tensors = 0;
  // Over all merged tensors, as for folder merges: kept = <W' - W, delta> / <delta, delta> (1 for
  // float types up to rounding), the norm ratio ||W' - W|| / ||delta|| (above 1 when requantizing
  // adds noise) and the largest |W' - W - delta|.
  MergeFidelity total;
  // Changed tensors of a read-only type written in another (ggml_written_type), counted per
  // change: "IQ2_XS -> Q2_K".
  std::map<std::string, int64_t> retyped;
  nlohmann::json to_json() const;
};

// Throws before writing anything when an adapter does not fit the base or `outtype` is a type
// that is read but not written.
GgufMergeReport merge_into_gguf(const std::filesystem::path& base,
                                std::span<const MergeAdapter> adapters,
                                const std::filesystem::path& out,
                                std::optional<GgmlType> outtype = std::nullopt);

}  // namespace lora
