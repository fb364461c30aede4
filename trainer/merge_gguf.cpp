#include "trainer/merge_gguf.h"

#include <cblas.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_type_plan.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/gguf_file.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

struct Delta {
  int64_t rows = 0, cols = 0;
  int64_t heads = 0;          // > 0: a Llama q/k weight, rows in llama.cpp's order in the file
  std::vector<float> values;  // Hugging Face row order
};

// Sum of strength * scale * B A per GGUF tensor, checked against the base's shapes.
std::map<std::string, Delta> deltas_of(const GgufFile& f, const ModelConfig& c,
                                       std::span<const MergeAdapter> adapters) {
  const bool permuted = gguf_permutes_qk(c.model_type);
  std::map<std::string, Delta> out;
  for (const MergeAdapter& m : adapters)
    for (const AdapterPair& p : m.adapter.pairs) {
      const auto proj = pair_proj(p);
      if (!proj)
        throw std::runtime_error(p.a_name + ": module '" + p.module + "' is not a block linear");
      const std::string name = gguf_proj_tensor(*proj, p.layer);
      if (!f.contains_tensor(name))
        throw std::runtime_error(m.adapter.source.string() + ": " + p.a_name + " adapts " + name +
                                 ", which " + f.path().string() + " does not have");
      const auto& t = f.tensor(name);
      if (t.rows() != p.out || t.cols() != p.in)
        throw std::runtime_error(m.adapter.source.string() + ": " + p.a_name + " is [" +
                                 std::to_string(p.out) + ", " + std::to_string(p.in) + "], " +
                                 name + " is " + shape_to_string(t.shape()));
      Delta& d = out[name];
      if (d.values.empty()) {
        d.rows = p.out;
        d.cols = p.in;
        d.heads = !permuted          ? 0
                  : *proj == Proj::q ? c.num_heads
                  : *proj == Proj::k ? c.num_kv_heads
                                     : 0;
        d.values.assign(static_cast<std::size_t>(p.out * p.in), 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(p.out),
                  static_cast<int>(p.in), static_cast<int>(p.rank),
                  static_cast<float>(m.strength * p.scale), p.b.data(), static_cast<int>(p.rank),
                  p.a.data(), static_cast<int>(p.in), 1.0f, d.values.data(),
                  static_cast<int>(p.in));
    }
  return out;
}

}  // namespace

nlohmann::json GgufMergeReport::to_json() const {
  return {{"merged_tensors", merged_tensors},
          {"delta_kept", total.kept()},
          {"norm_ratio", total.norm_ratio()},
          {"max_error", total.max_error},
          {"retyped", retyped}};
}

GgufMergeReport merge_into_gguf(const fs::path& base, std::span<const MergeAdapter> adapters,
                                const fs::path& out, std::optional<GgmlType> outtype) {
  if (outtype && !ggml_type_writable(*outtype))
    throw std::invalid_argument("merge: " + std::string(ggml_type_name(*outtype)) +
                                " is read but not written; choose another output type");
  const GgufFile f = GgufFile::open(base);
  const ModelConfig c = gguf_model_config(f);
  const auto deltas = deltas_of(f, c, adapters);
  // The type each tensor is written in: --outtype where its rows take it, else its own, a
  // read-only type of a changed tensor replaced (ggml_written_type).
  auto type_of = [&](const GgufTensorInfo& t) {
    if (outtype && t.ne.size() == 2 && t.cols() % ggml_block_elems(*outtype) == 0) return *outtype;
    return deltas.contains(t.name) ? ggml_written_type(t.type, t.cols()) : t.type;
  };
  const bool retyped = std::ranges::any_of(
      f.tensors(), [&](const GgufTensorInfo& t) { return type_of(t) != t.type; });
  GgufWriter w(f.alignment());
  for (const auto& key : f.metadata_order())
    // The file type names the base's mix; once a tensor changes type it no longer holds.
    if (key != "general.alignment" && !(retyped && key == "general.file_type"))
      w.set(key, *f.find(key));
  GgufMergeReport report;
  for (const GgufTensorInfo& t : f.tensors()) {
    const auto d = deltas.find(t.name);
    const GgmlType type = type_of(t);
    if (d == deltas.end() && type == t.type) {
      const auto b = f.bytes(t);
      w.add_tensor(t.name, t.type, t.shape(), {b.begin(), b.end()});
      continue;
    }
    std::vector<float> weight = f.read_f32(t.name);
    if (d == deltas.end()) {
      w.add_tensor(t.name, type, t.shape(), ggml_quantize_rows(type, weight, t.rows(), t.cols()));
      continue;
    }
    const Delta& delta = d->second;
    const std::vector<float> before = weight;
    // File row r holds Hugging Face row gguf_qk_row_to_hf(r) for a permuted q/k.
    std::vector<float> file_delta(weight.size());
    for (int64_t r = 0; r < delta.rows; ++r) {
      const int64_t hf = delta.heads > 0 ? gguf_qk_row_to_hf(r, delta.rows / delta.heads) : r;
      std::copy_n(delta.values.data() + hf * delta.cols, delta.cols,
                  file_delta.data() + r * delta.cols);
    }
    for (std::size_t i = 0; i < weight.size(); ++i) weight[i] += file_delta[i];
    if (type != t.type && !ggml_type_writable(t.type) && !(outtype && type == *outtype))
      ++report.retyped[std::string(ggml_type_name(t.type)) + " -> " +
                       std::string(ggml_type_name(type))];
    auto bytes = ggml_quantize_rows(type, weight, t.rows(), t.cols());
    std::vector<float> change(weight.size());
    for (int64_t r = 0; r < t.rows(); ++r)
      ggml_dequantize_row(type, bytes.data() + r * ggml_row_bytes(type, t.cols()), t.cols(),
                          change.data() + r * t.cols());
    for (std::size_t i = 0; i < change.size(); ++i) change[i] -= before[i];
    report.total.add(measure_fidelity(change, file_delta));
    w.add_tensor(t.name, type, t.shape(), std::move(bytes));
    ++report.merged_tensors;
  }
  w.write(out);
  return report;
}

}  // namespace lora
