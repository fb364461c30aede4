#include "trainer/merge.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>

#include "autograd/dora.h"
#include "autograd/quant.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/full_adapter.h"
#include "trainer/io/model_folder.h"
#include "trainer/io/safetensors.h"
#include "trainer/setting_error.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One adapter pair that contributes to a linear, with the factor its B A is added with.
struct Contribution {
  const AdapterPair* pair = nullptr;
  double factor = 0.0;  // strength * scale
};

// D = sum of factor * B A, [out, in], in f32.
std::vector<float> delta_of(std::span<const Contribution> parts, int64_t out, int64_t in) {
  std::vector<float> d(static_cast<std::size_t>(out * in), 0.0f);
  for (const auto& c : parts) {
    const auto& p = *c.pair;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out),
                static_cast<int>(in), static_cast<int>(p.rank), static_cast<float>(c.factor),
                p.b.data(), static_cast<int>(p.rank), p.a.data(), static_cast<int>(in), 1.0f,
                d.data(), static_cast<int>(in));
  }
  return d;
}

std::vector<float> add(std::span<const float> w, std::span<const float> d) {
  std::vector<float> r(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) r[i] = w[i] + d[i];
  return r;
}

// m * V / ||V|| per row, V = W + factor * B A, in double and rounded once (autograd/dora.h): the
// rows the runtime path multiplies by at inference.
std::vector<float> dora_weight(std::span<const float> w, const AdapterPair& p, double factor,
                               int64_t out, int64_t in) {
  std::vector<float> merged(w.size());
  ag::dora_adapted_rows(w.data(), out, in, p.b.data(), p.a.data(), p.rank, factor,
                        p.magnitude.data(), merged.data());
  return merged;
}

// The adapted weight from base values w [out, in]: W + sum factor * B A, or for a DoRA pair (the
// only contribution to its linear) m * V / ||V|| per row with V = W + factor * B A, the function
// dora_linear computes at run time (autograd/dora.h).
std::vector<float> adapted_weight(std::span<const float> w, std::span<const Contribution> parts,
                                  int64_t out, int64_t in) {
  if (parts.size() == 1 && !parts.front().pair->magnitude.empty())
    return dora_weight(w, *parts.front().pair, parts.front().factor, out, in);
  return add(w, delta_of(parts, out, in));
}

std::vector<float> minus(std::span<const float> a, std::span<const float> b) {
  std::vector<float> r(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

// The values as they read back once stored in `t`.
std::vector<float> stored_as(std::span<const float> v, DType t) {
  std::vector<std::byte> bytes(v.size() * dtype_size(t));
  convert_from_f32(t, v.data(), v.size(), bytes.data());
  std::vector<float> back(v.size());
  convert_to_f32(t, bytes.data(), v.size(), back.data());
  return back;
}

std::string quant_name(const QuantizedMatrix& q) {
  return "q" + std::to_string(q.bits) + "g" + std::to_string(q.group_size);
}

bool all_zero(std::span<const float> v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; });
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * v);
  return buf;
}

void check_merge_options(const MergeOptions& options, bool quantized_base,
                         const fs::path& model_dir) {
  if (options.dequantize && !quantized_base)
    throw SettingError("dequantize",
                       "applies to a quantized base; " + model_dir.string() + " is not quantized");
  if (options.base_float && !quantized_base)
    throw SettingError("base_float",
                       "applies to a quantized base; " + model_dir.string() + " is not quantized");
  if (options.dequantize && options.base_float)
    throw SettingError("dequantize", "excludes base_float (merging into the float base)");
  if (options.float_dtype && !writable_float(*options.float_dtype))
    throw std::runtime_error("merged weights can be F32, F16 or BF16, not " +
                             std::string(dtype_name(*options.float_dtype)));
}

// One quantized linear `name` of the base: appends what the merged folder stores for it to `out`
// (a byte copy, floats, or the requantized sum) and returns its report line when `parts` adapt it.
std::optional<MergedLinear> merge_quantized(const WeightSet& weights, const json& config,
                                            const std::string& name,
                                            std::span<const Contribution> parts,
                                            const std::optional<WeightSet>& float_weights,
                                            const MergeOptions& options,
                                            std::vector<TensorData>& out) {
  const std::string prefix = weight_prefix(name);
  const auto spec = quantization_of(config, prefix);
  if (!spec) throw std::runtime_error(name + " is stored quantized but config.json gives no bits");
  if (parts.empty() && !options.dequantize) {
    for (const char* part : {".weight", ".scales", ".biases"})
      out.push_back(copy_tensor(weights, prefix + part));
    return std::nullopt;
  }
  const QuantizedMatrix q = read_quantized(weights, prefix, *spec);
  const std::vector<float> base = dequantize(q);
  const DType float_type = options.float_dtype.value_or(q.scale_dtype);
  if (parts.empty()) {
    out.push_back(TensorData::convert(name, float_type, {q.rows, q.cols}, base));
    return std::nullopt;
  }
  const auto delta = minus(adapted_weight(base, parts, q.rows, q.cols), base);
  std::vector<float> stored;
  std::string storage;
  if (options.dequantize) {
    stored = stored_as(add(base, delta), float_type);
    out.push_back(TensorData::convert(name, float_type, {q.rows, q.cols}, stored));
    storage = std::string(dtype_name(float_type));
  } else {
    std::vector<float> source = base;
    if (float_weights) {
      const auto shape = linear_shape(*float_weights, json::object(), name);
      if (!shape || (*shape)[0] != q.rows || (*shape)[1] != q.cols)
        throw std::runtime_error(options.base_float->string() + ": " + name +
                                 " is missing or not [" + std::to_string(q.rows) + ", " +
                                 std::to_string(q.cols) + "] like the quantized base's");
      source = float_weights->read_f32(name);
    }
    const QuantizedMatrix merged = quantize(adapted_weight(source, parts, q.rows, q.cols), q.rows,
                                            q.cols, q.bits, q.group_size, q.scale_dtype);
    stored = dequantize(merged);
    append_quantized(out, prefix, merged);
    storage = quant_name(q);
  }
  return MergedLinear{name, storage, measure_fidelity(minus(stored, base), delta)};
}

// Warnings for the tensors that keep less of their change than options.min_delta_kept, and the
// total.
void summarize(MergeReport& report, const MergeOptions& options) {
  for (const auto& m : report.merged) {
    report.total.add(m.fidelity);
    if (m.fidelity.kept() < options.min_delta_kept)
      report.warnings.push_back(m.tensor + " keeps " + percent(m.fidelity.kept()) +
                                " of its delta (below min_delta_kept " +
                                percent(options.min_delta_kept) + ")");
  }
}

}  // namespace

double MergeFidelity::kept() const {
  return delta_norm > 0 ? dot / (delta_norm * delta_norm) : 1.0;
}

double MergeFidelity::norm_ratio() const { return delta_norm > 0 ? change_norm / delta_norm : 1.0; }

void MergeFidelity::add(const MergeFidelity& o) {
  delta_norm = std::sqrt(delta_norm * delta_norm + o.delta_norm * o.delta_norm);
  change_norm = std::sqrt(change_norm * change_norm + o.change_norm * o.change_norm);
  dot += o.dot;
  max_error = std::max(max_error, o.max_error);
}

MergeFidelity measure_fidelity(std::span<const float> change, std::span<const float> delta) {
  MergeFidelity f;
  double dd = 0, cc = 0;
  for (std::size_t i = 0; i < delta.size(); ++i) {
    dd += double(delta[i]) * delta[i];
    cc += double(change[i]) * change[i];
    f.dot += double(change[i]) * delta[i];
    f.max_error = std::max(f.max_error, std::fabs(double(change[i]) - delta[i]));
  }
  f.delta_norm = std::sqrt(dd);
  f.change_norm = std::sqrt(cc);
  return f;
}

json MergeReport::to_json() const {
  json j;
  j["merged"] = merged.size();
  j["skipped"] = json::array();
  for (const auto& [module, why] : skipped)
    j["skipped"].push_back({{"module", module}, {"why", why}});
  auto fidelity = [](const MergeFidelity& f) {
    return json{{"delta_norm", f.delta_norm},
                {"change_norm", f.change_norm},
                {"delta_kept", f.kept()},
                {"norm_ratio", f.norm_ratio()},
                {"max_error", f.max_error}};
  };
  j["total"] = fidelity(total);
  j["layers"] = json::array();
  for (const auto& m : merged) {
    json l = fidelity(m.fidelity);
    l["tensor"] = m.tensor;
    l["storage"] = m.storage;
    j["layers"].push_back(l);
  }
  j["warnings"] = warnings;
  return j;
}

std::string MergeReport::to_text() const {
  std::ostringstream s;
  s << "merged " << merged.size() << " linears, skipped " << skipped.size() << "\n";
  for (const auto& [module, why] : skipped) s << "  skipped " << module << ": " << why << "\n";
  char line[256];
  std::snprintf(line, sizeof(line), "  %-48s %-7s %10s %10s %12s\n", "tensor", "storage", "kept",
                "norm", "max error");
  s << line;
  for (const auto& m : merged) {
    std::snprintf(line, sizeof(line), "  %-48s %-7s %10s %10.4f %12.3e\n", m.tensor.c_str(),
                  m.storage.c_str(), percent(m.fidelity.kept()).c_str(), m.fidelity.norm_ratio(),
                  m.fidelity.max_error);
    s << line;
  }
  std::snprintf(line, sizeof(line), "  %-48s %-7s %10s %10.4f %12.3e\n", "total", "",
                percent(total.kept()).c_str(), total.norm_ratio(), total.max_error);
  s << line;
  return s.str();
}

MergeReport merge_adapters(const fs::path& model_dir, std::span<const MergeAdapter> adapters,
                           const fs::path& out_dir, const MergeOptions& options) {
  check_distinct_output(out_dir, model_dir);
  if (adapters.empty()) throw std::runtime_error("merge needs at least one adapter");
  const json config = read_model_config_json(model_dir);
  // gemma3 (vision + text) checkpoints keep the text model's fields in text_config.
  const json& text = config.contains("text_config") ? config["text_config"] : config;
  if (!text.contains("num_hidden_layers") || !text["num_hidden_layers"].is_number_integer())
    throw std::runtime_error((model_dir / "config.json").string() +
                             ": num_hidden_layers is missing or not an integer");
  const int64_t n_layers = text["num_hidden_layers"].get<int64_t>();
  const WeightSet weights = WeightSet::open_dir(model_dir);
  const std::string prefix = text_model_prefix(weights);
  const bool quantized_base = quantization_of(config).has_value();
  check_merge_options(options, quantized_base, model_dir);

  auto weight_name = [&prefix](int64_t layer, Proj p) {
    return layer_module_name(layer, p, prefix) + ".weight";
  };
  MergeReport report;
  std::map<std::string, std::vector<Contribution>> contributions;
  for (const auto& m : adapters) {
    check_adapter_against_base(
        m.adapter, n_layers,
        [&](int64_t layer, Proj p) { return linear_shape(weights, config, weight_name(layer, p)); },
        "the base model " + model_dir.string());
    for (const auto& pair : m.adapter.pairs) {
      const double factor = m.strength * pair.scale;
      // A DoRA pair changes the weight through its magnitude even where B A is zero; strength
      // scales its B A as PEFT's scale does (strength 0 leaves m W / ||W||).
      if (factor == 0.0 && pair.magnitude.empty())
        report.skipped.emplace_back(pair.module_key(), "strength * scale is 0");
      else if ((all_zero(pair.b) || all_zero(pair.a)) && pair.magnitude.empty())
        report.skipped.emplace_back(pair.module_key(), "B A is zero (an untrained adapter)");
      else
        contributions[weight_name(pair.layer, *pair_proj(pair))].push_back({&pair, factor});
    }
  }
  for (const auto& [name, parts] : contributions)
    for (const auto& c : parts)
      if (!c.pair->magnitude.empty() && parts.size() > 1)
        throw std::runtime_error(name +
                                 ": a DoRA adapter cannot be merged together with other "
                                 "adapters on the same linear; merge them one at a time");

  std::optional<WeightSet> float_weights;
  if (options.base_float) float_weights = WeightSet::open_dir(*options.base_float);

  std::vector<TensorData> out;
  for (const auto& name : weights.names()) {
    if (is_quantization_companion(weights, name)) continue;  // written with their weight
    const auto found = contributions.find(name);
    const bool adapted = found != contributions.end();
    if (is_quantized_weight(weights, name)) {
      const std::span<const Contribution> parts =
          adapted ? std::span<const Contribution>(found->second) : std::span<const Contribution>();
      if (auto merged = merge_quantized(weights, config, name, parts, float_weights, options, out))
        report.merged.push_back(std::move(*merged));
      continue;
    }
    if (!adapted) {
      out.push_back(copy_tensor(weights, name));
      continue;
    }
    const TensorInfo& info = weights.info(name);
    const DType dtype = writable_float(info.dtype) ? info.dtype : DType::F32;
    const std::vector<float> base = weights.read_f32(name);
    const auto target = adapted_weight(base, found->second, info.shape[0], info.shape[1]);
    const auto delta = minus(target, base);
    const std::vector<float> stored = stored_as(target, dtype);
    out.push_back(TensorData::convert(name, dtype, info.shape, stored));
    report.merged.push_back(
        {name, std::string(dtype_name(dtype)), measure_fidelity(minus(stored, base), delta)});
  }

  summarize(report, options);
  if (report.merged.empty() && report.skipped.empty())
    throw std::runtime_error("the adapters touch no linear of " + model_dir.string());

  json out_config = config;
  ModelFolderOptions folder;
  folder.max_shard_bytes = options.max_shard_bytes;
  if (options.dequantize) {
    out_config.erase("quantization");
    out_config.erase("quantization_config");
    if (options.float_dtype) out_config["torch_dtype"] = torch_dtype_name(*options.float_dtype);
  } else if (quantized_base) {
    folder.format_metadata = "mlx";
  }
  write_model_folder(out_dir, model_dir, out_config, std::move(out), folder);
  return report;
}

MergeReport merge_full_finetune(const fs::path& model_dir, const fs::path& adapter_path,
                                const fs::path& out_dir, const MergeOptions& options) {
  check_distinct_output(out_dir, model_dir);
  if (!is_full_adapter(adapter_path))
    throw std::runtime_error(adapter_path.string() + ": not a full fine-tuning (its " +
                             kAdapterConfigName + " does not say fine_tune_type \"full\")");
  const json config = read_model_config_json(model_dir);
  if (quantization_of(config))
    throw SettingError("model", model_dir.string() +
                                    " is quantized; a full fine-tuning replaces float weights "
                                    "and merges into the float model it was trained on");
  check_merge_options(options, false, model_dir);
  const WeightSet weights = WeightSet::open_dir(model_dir);
  const std::string prefix = text_model_prefix(weights);
  const fs::path file_path =
      fs::is_directory(adapter_path) ? adapter_path / kMlxWeights : adapter_path;
  const SafetensorsFile trained = SafetensorsFile::open(file_path);
  // The file names tensors as mlx-lm does ("model.layers..."); the base may keep its text model
  // under another prefix.
  std::map<std::string, const TensorInfo*> replacing;
  for (const TensorInfo& t : trained.tensors()) {
    const std::string name = t.name.starts_with("model.") ? prefix + t.name.substr(6) : t.name;
    if (!weights.contains(name))
      throw std::runtime_error(file_path.string() + ": tensor " + t.name + " has no " + name +
                               " in the base model " + model_dir.string());
    if (weights.info(name).shape != t.shape)
      throw std::runtime_error(file_path.string() + ": tensor " + t.name + " is " +
                               shape_to_string(t.shape) + " but the base's " + name + " is " +
                               shape_to_string(weights.info(name).shape));
    replacing[name] = &t;
  }
  MergeReport report;
  std::vector<TensorData> out;
  for (const auto& name : weights.names()) {
    const auto found = replacing.find(name);
    if (found == replacing.end()) {
      out.push_back(copy_tensor(weights, name));
      continue;
    }
    const TensorInfo& info = weights.info(name);
    const DType dtype = writable_float(info.dtype) ? info.dtype : DType::F32;
    const std::vector<float> base = weights.read_f32(name);
    const std::vector<float> target = trained.read_f32(found->second->name);
    const std::vector<float> stored = stored_as(target, dtype);
    out.push_back(TensorData::convert(name, dtype, info.shape, stored));
    report.merged.push_back({name, std::string(dtype_name(dtype)),
                             measure_fidelity(minus(stored, base), minus(target, base))});
  }
  summarize(report, options);
  ModelFolderOptions folder;
  folder.max_shard_bytes = options.max_shard_bytes;
  write_model_folder(out_dir, model_dir, config, std::move(out), folder);
  return report;
}

}  // namespace lora
