#include "trainer/io/model_folder.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/io/atomic_file.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Files that travel with the weights: what transformers and MLX-LM read besides config.json.
bool is_companion_file(const std::string& name) {
  static const std::vector<std::string> kExact = {"generation_config.json",
                                                  "special_tokens_map.json",
                                                  "added_tokens.json",
                                                  "vocab.json",
                                                  "merges.txt",
                                                  "chat_template.json",
                                                  "chat_template.jinja",
                                                  "preprocessor_config.json"};
  for (const auto& e : kExact)
    if (name == e) return true;
  return name.starts_with("tokenizer") && !name.ends_with(".py");
}

std::string shard_name(std::size_t i, std::size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

std::optional<QuantSpec> spec_from(const json& q) {
  if (!q.is_object() || !q.contains("bits") || !q.contains("group_size")) return std::nullopt;
  if (!q["bits"].is_number_integer() || !q["group_size"].is_number_integer()) return std::nullopt;
  return QuantSpec{q["bits"].get<int>(), q["group_size"].get<int>()};
}

}  // namespace

json read_model_config_json(const fs::path& model_dir) {
  const fs::path path = model_dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot be opened");
  try {
    json j = json::parse(in);
    if (!j.is_object()) throw std::runtime_error("not a JSON object");
    return j;
  } catch (const std::exception& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  }
}

std::optional<QuantSpec> quantization_of(const json& config, const std::string& prefix) {
  for (const char* field : {"quantization", "quantization_config"}) {
    auto it = config.find(field);
    if (it == config.end() || !it->is_object()) continue;
    if (!prefix.empty())
      if (auto layer = it->find(prefix); layer != it->end()) {
        if (layer->is_boolean() && !layer->get<bool>()) return std::nullopt;
        if (auto s = spec_from(*layer)) return s;
      }
    if (auto s = spec_from(*it)) return s;
  }
  return std::nullopt;
}

std::string weight_prefix(const std::string& weight_name) {
  return weight_name.ends_with(".weight") ? weight_name.substr(0, weight_name.size() - 7)
                                          : weight_name;
}

bool is_quantized_weight(const WeightSet& weights, const std::string& weight_name) {
  if (!weight_name.ends_with(".weight")) return false;
  const std::string p = weight_prefix(weight_name);
  return weights.contains(p + ".scales") && weights.contains(p + ".biases");
}

bool is_quantization_companion(const WeightSet& weights, const std::string& name) {
  for (const char* suffix : {".scales", ".biases"})
    if (name.ends_with(suffix)) {
      const std::string p = name.substr(0, name.size() - std::strlen(suffix));
      if (weights.contains(p + ".weight") && is_quantized_weight(weights, p + ".weight"))
        return true;
    }
  return false;
}

QuantizedMatrix read_quantized(const WeightSet& weights, const std::string& prefix,
                               QuantSpec spec) {
  const TensorInfo& w = weights.info(prefix + ".weight");
  const TensorInfo& s = weights.info(prefix + ".scales");
  const TensorInfo& b = weights.info(prefix + ".biases");
  const std::string where = weights.file_of(prefix + ".weight").path().string() + ": " + prefix;
  if (w.dtype != DType::U32 || w.shape.size() != 2)
    throw std::runtime_error(where + ".weight is " + std::string(dtype_name(w.dtype)) + " " +
                             shape_to_string(w.shape) + "; a quantized weight is 2-D U32");
  QuantizedMatrix q;
  q.rows = w.shape[0];
  q.bits = spec.bits;
  q.group_size = spec.group_size;
  q.cols = w.shape[1] * 32 / spec.bits;
  if (!quantizable(q.cols, spec.bits, spec.group_size) || q.words_per_row() != w.shape[1])
    throw std::runtime_error(where + ".weight " + shape_to_string(w.shape) + " does not fit " +
                             std::to_string(spec.bits) + "-bit groups of " +
                             std::to_string(spec.group_size));
  const std::vector<int64_t> groups{q.rows, q.groups_per_row()};
  if (s.shape != groups || b.shape != groups)
    throw std::runtime_error(where + ": scales " + shape_to_string(s.shape) + " and biases " +
                             shape_to_string(b.shape) + " should both be " +
                             shape_to_string(groups));
  q.scale_dtype = s.dtype;
  auto bytes = weights.file_of(prefix + ".weight").bytes(prefix + ".weight");
  q.packed.resize(bytes.size() / 4);
  std::memcpy(q.packed.data(), bytes.data(), q.packed.size() * 4);
  q.scales = weights.read_f32(prefix + ".scales");
  q.biases = weights.read_f32(prefix + ".biases");
  return q;
}

void append_quantized(std::vector<TensorData>& out, const std::string& prefix,
                      const QuantizedMatrix& q) {
  TensorData w;
  w.name = prefix + ".weight";
  w.dtype = DType::U32;
  w.shape = {q.rows, q.words_per_row()};
  w.bytes.resize(q.packed.size() * 4);
  std::memcpy(w.bytes.data(), q.packed.data(), w.bytes.size());
  out.push_back(std::move(w));
  const std::vector<int64_t> groups{q.rows, q.groups_per_row()};
  out.push_back(TensorData::convert(prefix + ".scales", q.scale_dtype, groups, q.scales));
  out.push_back(TensorData::convert(prefix + ".biases", q.scale_dtype, groups, q.biases));
}

std::optional<std::array<int64_t, 2>> linear_shape(const WeightSet& weights, const json& config,
                                                   const std::string& weight_name) {
  if (!weights.contains(weight_name)) return std::nullopt;
  const TensorInfo& t = weights.info(weight_name);
  if (t.shape.size() != 2) return std::nullopt;
  if (is_quantized_weight(weights, weight_name)) {
    auto spec = quantization_of(config, weight_prefix(weight_name));
    if (!spec)
      throw std::runtime_error(weight_name +
                               " is stored quantized but config.json has no "
                               "\"quantization\" {\"bits\", \"group_size\"}");
    return std::array<int64_t, 2>{t.shape[0], t.shape[1] * 32 / spec->bits};
  }
  return std::array<int64_t, 2>{t.shape[0], t.shape[1]};
}

TensorData copy_tensor(const WeightSet& weights, const std::string& name) {
  const TensorInfo& info = weights.info(name);
  auto bytes = weights.file_of(name).bytes(name);
  TensorData t;
  t.name = name;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.bytes.assign(bytes.begin(), bytes.end());
  return t;
}

bool writable_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

const char* torch_dtype_name(DType t) {
  return t == DType::F32 ? "float32" : t == DType::F16 ? "float16" : "bfloat16";
}

void check_distinct_output(const fs::path& out_dir, const fs::path& source_dir) {
  std::error_code ec;
  if (fs::exists(out_dir) && fs::equivalent(out_dir, source_dir, ec))
    throw std::runtime_error(out_dir.string() +
                             ": the output folder is the model folder itself; "
                             "choose another output folder");
}

void write_model_folder(const fs::path& out_dir, const fs::path& source_dir, const json& config,
                        std::vector<TensorData> tensors, const ModelFolderOptions& options) {
  check_distinct_output(out_dir, source_dir);
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorData& a, const TensorData& b) { return a.name < b.name; });
  // Greedy shards in name order, each under the limit unless one tensor alone exceeds it.
  std::vector<std::vector<TensorData>> shards(1);
  uint64_t shard_bytes = 0;
  uint64_t total = 0;
  for (auto& t : tensors) {
    const uint64_t size = t.bytes.size();
    if (!shards.back().empty() && shard_bytes + size > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += size;
    total += size;
    shards.back().push_back(std::move(t));
  }
  const std::map<std::string, std::string> metadata{{"format", options.format_metadata}};
  write_dir_atomic(out_dir, [&](const fs::path& tmp) {
    if (shards.size() == 1) {
      write_safetensors(tmp / "model.safetensors", shards.front(), metadata);
    } else {
      json weight_map = json::object();
      for (std::size_t i = 0; i < shards.size(); ++i) {
        const std::string file = shard_name(i, shards.size());
        for (const auto& t : shards[i]) weight_map[t.name] = file;
        write_safetensors(tmp / file, shards[i], metadata);
      }
      json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      write_file_atomic(tmp / "model.safetensors.index.json", index.dump(2) + "\n");
    }
    write_file_atomic(tmp / "config.json", config.dump(2) + "\n");
    for (const auto& entry : fs::directory_iterator(source_dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && is_companion_file(name))
        fs::copy_file(entry.path(), tmp / name);
    }
  });
}

}  // namespace lora
