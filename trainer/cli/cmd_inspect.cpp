// `lora inspect FILE|DIR`: what a safetensors file or a model folder holds.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/cli/commands.h"
#include "trainer/gguf_model.h"
#include "trainer/io/model_folder.h"
#include "trainer/io/safetensors.h"
#include "trainer/model_config.h"

namespace lora::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

ordered_json tensor_list(const std::vector<const TensorInfo*>& tensors, uint64_t& total) {
  ordered_json list = ordered_json::array();
  for (const auto* t : tensors) {
    list.push_back({{"name", t->name},
                    {"dtype", std::string(dtype_name(t->dtype))},
                    {"shape", t->shape},
                    {"bytes", t->end - t->begin}});
    total += t->end - t->begin;
  }
  return list;
}

ordered_json config_summary(const ModelConfig& c) {
  ordered_json s = {{"model_type", c.model_type},
                    {"hidden_size", c.hidden_size},
                    {"intermediate_size", c.intermediate_size},
                    {"num_layers", c.num_layers},
                    {"num_heads", c.num_heads},
                    {"num_kv_heads", c.num_kv_heads},
                    {"head_dim", c.head_dim},
                    {"vocab_size", c.vocab_size},
                    {"rope_theta", c.rope_theta},
                    {"rope_scaling", c.rope_scaling ? "llama3" : "none"},
                    {"rms_norm_eps", c.rms_norm_eps},
                    {"tie_word_embeddings", c.tie_word_embeddings},
                    {"attention_bias", c.attention_bias},
                    {"qk_norm", c.qk_norm}};
  if (c.quant_bits)
    s["quantization"] = {{"bits", *c.quant_bits}, {"group_size", *c.quant_group_size}};
  return s;
}

// MLX-quantized modules: bits from config.json (or its per-module entry), the rest from the
// shapes.
ordered_json quantized_modules(const WeightSet& ws, const ModelConfig& c) {
  ordered_json out = ordered_json::array();
  for (const auto& name : ws.names()) {
    if (!is_quantized_weight(ws, name)) continue;
    const std::string module = weight_prefix(name);
    const auto spec = quantization_of(c.raw, module);
    ordered_json entry = {{"module", module}, {"bits", spec ? spec->bits : 0}};
    if (spec) {
      const QuantLayout l = quantized_layout(ws, module, spec->bits);
      entry["group_size"] = l.group_size;
      entry["shape"] = {l.rows, l.cols};
    }
    out.push_back(entry);
  }
  return out;
}

// A GGUF metadata value as text: scalars as they are, arrays as their size and type (the
// tokenizer's run to hundreds of thousands of entries) unless short.
std::string gguf_value_text(const GgufValue& v) {
  if (v.type == GgufType::String) return v.text;
  if (v.type == GgufType::Bool) return v.integer ? "true" : "false";
  if (v.is_integer()) return std::to_string(v.integer);
  if (v.is_real()) return ordered_json(v.real).dump();
  if (v.array_size() > 8)
    return "[" + std::to_string(v.array_size()) + " " +
           std::string(gguf_type_name(v.element_type)) + "]";
  ordered_json a = ordered_json::array();
  for (const auto& x : v.strings) a.push_back(x);
  for (int64_t x : v.integers) a.push_back(x);
  for (double x : v.reals) a.push_back(x);
  return a.dump();
}

ordered_json inspect_gguf(const fs::path& path) {
  const GgufFile f = GgufFile::open(path);
  ordered_json out = {{"path", path.string()}, {"gguf_version", f.version()}};
  const auto arch = f.string_or("general.architecture");
  if (f.string_or("general.type").value_or("model") == "model" && arch && model_type_of_gguf(*arch))
    out["config"] = config_summary(gguf_model_config(f));
  ordered_json meta = ordered_json::object();
  for (const auto& key : f.metadata_order()) meta[key] = gguf_value_text(*f.find(key));
  out["metadata"] = meta;
  ordered_json list = ordered_json::array();
  uint64_t total = 0;
  for (const auto& t : f.tensors()) {
    list.push_back({{"name", t.name},
                    {"dtype", std::string(ggml_type_name(t.type))},
                    {"shape", t.shape()},
                    {"bytes", t.bytes}});
    total += t.bytes;
  }
  out["tensors"] = list;
  out["total_bytes"] = total;
  return out;
}

ordered_json inspect(const fs::path& path) {
  if (is_gguf_file(path)) return inspect_gguf(path);
  ordered_json out = {{"path", path.string()}};
  uint64_t total = 0;
  if (fs::is_directory(path)) {
    std::optional<ModelConfig> config;
    if (fs::exists(path / "config.json")) {
      config = ModelConfig::load(path);
      out["config"] = config_summary(*config);
    }
    const WeightSet ws = WeightSet::open_dir(path);
    ordered_json files = ordered_json::array();
    for (const auto& f : ws.files()) {
      ordered_json meta(f.metadata());
      files.push_back({{"file", f.path().filename().string()}, {"metadata", meta}});
    }
    out["files"] = files;
    std::vector<const TensorInfo*> infos;
    for (const auto& name : ws.names()) infos.push_back(&ws.info(name));
    out["tensors"] = tensor_list(infos, total);
    if (config) out["quantized"] = quantized_modules(ws, *config);
  } else {
    const auto f = SafetensorsFile::open(path);
    out["metadata"] = ordered_json(f.metadata());
    std::vector<const TensorInfo*> infos;
    for (const auto& t : f.tensors()) infos.push_back(&t);
    out["tensors"] = tensor_list(infos, total);
  }
  out["total_bytes"] = total;
  return out;
}

void print_human(const ordered_json& r) {
  std::printf("%s\n", r["path"].get<std::string>().c_str());
  if (r.contains("config")) {
    std::printf("config:\n");
    for (const auto& [k, v] : r["config"].items())
      std::printf("  %-20s %s\n", k.c_str(), v.dump().c_str());
  }
  auto print_meta = [](const ordered_json& meta, const char* indent) {
    for (const auto& [k, v] : meta.items())
      std::printf("%s%s = %s\n", indent, k.c_str(), v.get<std::string>().c_str());
  };
  if (r.contains("files"))
    for (const auto& f : r["files"]) {
      std::printf("file %s\n", f["file"].get<std::string>().c_str());
      print_meta(f["metadata"], "  metadata ");
    }
  if (r.contains("metadata")) print_meta(r["metadata"], "metadata ");
  std::printf("%zu tensors, %llu bytes\n", r["tensors"].size(),
              static_cast<unsigned long long>(r["total_bytes"].get<uint64_t>()));
  for (const auto& t : r["tensors"])
    std::printf("  %-60s %-5s %-16s %llu\n", t["name"].get<std::string>().c_str(),
                t["dtype"].get<std::string>().c_str(),
                shape_to_string(t["shape"].get<std::vector<int64_t>>()).c_str(),
                static_cast<unsigned long long>(t["bytes"].get<uint64_t>()));
  if (r.contains("quantized")) {
    if (r["quantized"].empty())
      std::printf("quantized: none\n");
    else
      std::printf("quantized (MLX affine): %zu modules\n", r["quantized"].size());
    for (const auto& q : r["quantized"])
      std::printf("  %-60s %d bits, group %s\n", q["module"].get<std::string>().c_str(),
                  q["bits"].get<int>(),
                  q.contains("group_size") ? q["group_size"].dump().c_str() : "?");
  }
}

}  // namespace

void add_inspect(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "inspect",
      "Show the tensors (dtype, shape, bytes) and metadata of a safetensors or GGUF file, or "
      "of a model folder with its config and quantized layers");
  auto path = std::make_shared<std::string>();
  cmd->add_option("path", *path, "A .safetensors or .gguf file, or a model folder")->required();
  cmd->callback([path, &global] {
    const fs::path p(*path);
    if (!fs::exists(p)) throw std::runtime_error(p.string() + ": no such file or folder");
    refuse_pickle(p);
    const ordered_json r = inspect(p);
    if (global.json)
      std::printf("%s\n", r.dump().c_str());
    else
      print_human(r);
  });
}

}  // namespace lora::cli
