#include "trainer/io/adapter_file.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/io/atomic_file.h"
#include "trainer/io/finite_values.h"
#include "trainer/io/model_card.h"
#include "trainer/io/peft_patterns.h"
#include "trainer/io/safetensors.h"
#include "trainer/model.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kConfig = kAdapterConfigName;
constexpr const char* kCard = "README.md";

// Scales held as floats (training) against the same scale in double (alpha / r).
bool same_scale(double a, double b) { return std::fabs(a - b) <= 1e-6 * std::fabs(b); }

// What a tensor name says: which linear of which block, and whether it is A or B in which layout.
struct LoraKey {
  int64_t layer = 0;
  std::string module;
  enum class Part { A, B, magnitude } part = Part::A;
  bool peft_layout = true;  // lora_A.weight [r, in] vs MLX-LM lora_a [in, r]
};

std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::optional<int64_t> parse_index(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// Accepts `[prefix.]layers.{i}.{module}.lora_A[.adapter].weight` (PEFT) and
// `[prefix.]layers.{i}.{module}.lora_a` (MLX-LM), where the prefix is any chain of the wrappers
// PEFT and multimodal checkpoints put around the decoder (base_model.model.model.language_model.).
// DoRA's magnitude is `{module}.lora_magnitude_vector` in PEFT (saved without `.weight`; older
// and unsaved forms with the adapter name or `.weight` are accepted) and `{module}.m` in MLX-LM.
std::optional<LoraKey> parse_lora_key(std::string_view name) {
  const auto parts = split_dots(name);
  std::size_t lora_at = parts.size();
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "lora_A" || parts[i] == "lora_B" || parts[i] == "lora_a" ||
        parts[i] == "lora_b" || parts[i] == "lora_magnitude_vector") {
      lora_at = i;
      break;
    }
  }
  if (lora_at == parts.size() && parts.size() > 1 && parts.back() == "m")
    lora_at = parts.size() - 1;
  if (lora_at == parts.size()) return std::nullopt;
  LoraKey key;
  const std::string_view tag = parts[lora_at];
  key.peft_layout = tag == "lora_A" || tag == "lora_B" || tag == "lora_magnitude_vector";
  key.part = tag == "lora_A" || tag == "lora_a"   ? LoraKey::Part::A
             : tag == "lora_B" || tag == "lora_b" ? LoraKey::Part::B
                                                  : LoraKey::Part::magnitude;
  const std::size_t rest = parts.size() - lora_at - 1;
  if (tag == "lora_magnitude_vector") {
    if (rest > 2 || (rest == 2 && parts.back() != "weight")) return std::nullopt;
  } else if (key.peft_layout) {
    // PEFT drops the adapter name when saving; accept it when present.
    if (!(rest == 1 || rest == 2) || parts.back() != "weight") return std::nullopt;
  } else if (rest != 0) {
    return std::nullopt;
  }
  static const std::set<std::string_view> kWrappers = {"base_model", "model", "language_model"};
  std::size_t i = 0;
  while (i < lora_at && kWrappers.contains(parts[i])) ++i;
  if (i + 2 >= lora_at || parts[i] != "layers") return std::nullopt;
  auto layer = parse_index(parts[i + 1]);
  if (!layer) return std::nullopt;
  key.layer = *layer;
  for (std::size_t j = i + 2; j < lora_at; ++j) {
    if (!key.module.empty()) key.module += '.';
    key.module += parts[j];
  }
  return key;
}

// A JSON file parsed as `Json` (json, or ordered_json where key order matters).
template <typename Json>
Json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot be opened");
  try {
    return Json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(path.string() + ": not valid JSON: " + e.what());
  }
}

double number_field(const json& obj, const std::string& key, const fs::path& file,
                    const std::string& where = "") {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number())
    throw std::runtime_error(file.string() + ": " + where + "\"" + key +
                             "\" is missing or not a number");
  return it->get<double>();
}

// Integral values as JSON integers (PEFT's r and lora_alpha are ints), others as doubles.
json json_number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return static_cast<int64_t>(v);
  return v;
}

// Locates the weights file of an adapter path (a folder or a .safetensors file).
fs::path weights_file(const fs::path& path) {
  if (!fs::exists(path))
    throw std::runtime_error(path.string() + ": no such adapter file or folder");
  if (!fs::is_directory(path)) {
    refuse_pickle(path);
    if (path.extension() != ".safetensors")
      throw std::runtime_error(path.string() + ": adapter weights must be a .safetensors file");
    return path;
  }
  const bool mlx = fs::exists(path / kMlxWeights);
  const bool peft = fs::exists(path / kPeftWeights);
  if (mlx && peft)
    throw std::runtime_error(path.string() + ": holds both " + kMlxWeights + " and " +
                             kPeftWeights + "; pass the one to use");
  if (mlx) return path / kMlxWeights;
  if (peft) return path / kPeftWeights;
  for (const auto& entry : fs::directory_iterator(path)) refuse_pickle(entry.path());
  throw std::runtime_error(path.string() + ": no adapter weights (expected " + kMlxWeights +
                           " or " + kPeftWeights + ")");
}

std::string shape_text(const TensorInfo& t) { return shape_to_string(t.shape); }

// Reads a 2-D float tensor, checking its element type.
std::vector<float> read_matrix(const SafetensorsFile& file, const TensorInfo& t) {
  if (t.shape.size() != 2)
    throw std::runtime_error(file.path().string() + ": tensor " + t.name + " has shape " +
                             shape_text(t) + "; a LoRA matrix is 2-D");
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16 &&
      t.dtype != DType::F64)
    throw std::runtime_error(file.path().string() + ": tensor " + t.name + " has element type " +
                             std::string(dtype_name(t.dtype)) + "; LoRA matrices are floats");
  return file.read_f32(t.name);
}

std::vector<float> transpose(std::span<const float> m, int64_t rows, int64_t cols) {
  std::vector<float> t(m.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = m[r * cols + c];
  return t;
}

// PEFT config fields that change what the adapter computes and that this reader does not apply:
// refused, so that a file is never run differently from PEFT.
void refuse_unsupported_peft_fields(const json& config, const fs::path& config_path) {
  auto refuse = [&](const std::string& field, const std::string& why) {
    throw std::runtime_error(config_path.string() + ": " + field + " is " +
                             config.at(field).dump() + "; " + why + " is not supported");
  };
  if (config.value("fan_in_fan_out", false))
    refuse("fan_in_fan_out", "LoRA on transposed (Conv1D) weights");
  if (auto b = config.find("bias"); b != config.end() && !b->is_null() && *b != "none")
    refuse("bias", "training the base's biases with the adapter");
  if (config.value("lora_bias", false)) refuse("lora_bias", "a bias on lora_B");
  if (config.value("use_qalora", false)) refuse("use_qalora", "QALoRA's pooled input");
  for (const char* field : {"layer_replication", "target_parameters", "trainable_token_indices",
                            "alora_invocation_tokens"})
    if (auto f = config.find(field); f != config.end() && !f->is_null() &&
                                     !(f->is_array() && f->empty()) &&
                                     !(f->is_object() && f->empty()))
      refuse(field, std::string("an adapter with ") + field);
  // PiSSA, OLoRA, CorDA and LoftQ initializations change the base weights themselves; the
  // adapter only fits that changed base unless it was converted when saved.
  if (auto init = config.find("init_lora_weights"); init != config.end() && init->is_string()) {
    const std::string kind = init->get<std::string>();
    if (kind.starts_with("pissa") || kind == "olora" || kind == "corda" || kind == "loftq")
      refuse("init_lora_weights", "an adapter over a base changed by its initialization");
  }
}

// Whether PEFT's target_modules selects `p`: a list names modules by their last dotted parts, a
// string is a regular expression over the whole module name ("all-linear": every block linear).
bool peft_targets(const json& targets, const AdapterPair& p, const fs::path& config_path) {
  const std::string key = p.module_key();
  if (targets.is_null()) return true;  // PEFT's default targets for the architecture
  if (targets.is_string()) {
    const std::string t = targets.get<std::string>();
    return t == "all-linear" ||
           python_re_match("(?:" + t + ")\\z", key, config_path.string() + ": target_modules");
  }
  if (!targets.is_array())
    throw std::runtime_error(config_path.string() +
                             ": target_modules is neither a list nor a string");
  for (const auto& t : targets)
    if (t.is_string() && (key == t.get<std::string>() || key.ends_with("." + t.get<std::string>())))
      return true;
  return false;
}

// PEFT loads a tensor only into a module it creates: one that target_modules selects, in a layer
// layers_to_transform lists. A file with tensors PEFT would leave out is refused (reading them
// would give other outputs than PEFT). Without layers_to_transform every layer is adapted, so the
// last adapted layer is the base's last.
void check_peft_coverage(AdapterFile& adapter, const json& config, const fs::path& config_path) {
  const json targets = config.value("target_modules", json());
  json layers = config.value("layers_to_transform", json());
  if (layers.is_number_integer()) layers = json::array({layers});
  if (!layers.is_null() && !layers.is_array())
    throw std::runtime_error(config_path.string() + ": layers_to_transform is " + layers.dump() +
                             "; expected a layer index or a list of them");
  for (const auto& p : adapter.pairs) {
    if (!peft_targets(targets, p, config_path))
      throw std::runtime_error(config_path.string() + ": tensor " + p.a_name + " adapts " +
                               p.module_key() + ", which target_modules " + targets.dump() +
                               " does not select; PEFT would not load it");
    if (layers.is_array() && std::find(layers.begin(), layers.end(), json(p.layer)) == layers.end())
      throw std::runtime_error(config_path.string() + ": tensor " + p.a_name + " adapts layer " +
                               std::to_string(p.layer) + ", which layers_to_transform " +
                               layers.dump() + " leaves out; PEFT would not load it");
  }
  if (layers.is_null() && !adapter.pairs.empty())
    adapter.base_num_layers = adapter.layers().back() + 1;
}

// MLX-LM adapts the last num_layers blocks (-1: all), so the first adapted layer plus num_layers
// is the base's layer count.
std::optional<int64_t> mlx_base_layers(const AdapterFile& adapter, const json& config,
                                       const fs::path& config_path) {
  auto n = config.find("num_layers");
  if (n == config.end() || adapter.pairs.empty()) return std::nullopt;
  if (!n->is_number_integer())
    throw std::runtime_error(config_path.string() + ": num_layers is " + n->dump() +
                             ", not an integer");
  const auto adapted = adapter.layers();
  const int64_t last = adapted.back() + 1;
  const int64_t count = n->get<int64_t>();
  return count < 0 ? last : std::max(last, adapted.front() + count);
}

// A DoRA adapter has a magnitude for every pair, a LoRA adapter none.
void check_dora_tensors(const AdapterFile& adapter, const fs::path& config_path,
                        const char* field) {
  for (const auto& p : adapter.pairs)
    if (p.magnitude.empty() == adapter.dora)
      throw std::runtime_error(
          config_path.string() + ": " + field +
          (adapter.dora ? " says DoRA but " + p.module_key() + " has no magnitude tensor"
                        : " says LoRA but " + p.module_key() + " has a DoRA magnitude tensor"));
}

// Tensors that are neither the A nor the B of a block linear (modules_to_save copies, LoRA on
// lm_head or embed_tokens, ...): PEFT applies them and this reader cannot, so the file is refused
// rather than run without them.
void refuse_unknown_tensors(const std::vector<std::string>& unknown, const fs::path& weights,
                            const json& config) {
  if (unknown.empty()) return;
  std::string names;
  for (std::size_t i = 0; i < unknown.size() && i < 3; ++i) names += (i ? ", " : "") + unknown[i];
  if (unknown.size() > 3) names += " and " + std::to_string(unknown.size() - 3) + " more";
  std::string why = "not the LoRA A/B of a block linear (q/k/v/o/gate/up/down_proj)";
  if (auto m = config.find("modules_to_save"); m != config.end() && !m->is_null())
    why += "; modules_to_save " + m->dump() + " stores whole modules";
  throw std::runtime_error(weights.string() + ": tensor(s) " + names + ": " + why +
                           ". Only LoRA on block linears is supported; refusing the adapter rather "
                           "than running it without them");
}

// Fills each pair's scale from the config: MLX-LM's lora_parameters or PEFT's alpha/r.
void apply_config(AdapterFile& adapter, const json& config, const nlohmann::ordered_json& ordered,
                  const fs::path& config_path) {
  if (config.contains("peft_type")) {
    const auto type = config["peft_type"];
    if (!type.is_string() || type.get<std::string>() != "LORA")
      throw std::runtime_error(config_path.string() + ": peft_type " + type.dump() +
                               " is not supported (only \"LORA\")");
    refuse_unsupported_peft_fields(config, config_path);
    const double r = number_field(config, "r", config_path);
    const double alpha = number_field(config, "lora_alpha", config_path);
    adapter.rslora = config.value("use_rslora", false);
    adapter.peft_alpha = alpha;
    if (auto d = config.find("lora_dropout"); d != config.end() && d->is_number())
      adapter.dropout = d->get<double>();
    if (auto b = config.find("base_model_name_or_path"); b != config.end() && b->is_string())
      adapter.base_model = b->get<std::string>();
    check_peft_coverage(adapter, config, config_path);
    adapter.dora = config.value("use_dora", false);
    check_dora_tensors(adapter, config_path, "use_dora");
    for (auto& p : adapter.pairs) {
      const auto [rank, a] =
          peft_rank_alpha(ordered, p.module_key(), r, alpha, config_path.string());
      if (rank != static_cast<double>(p.rank))
        throw std::runtime_error(config_path.string() + ": r is " + json_number(rank).dump() +
                                 " but tensor " + p.a_name + " has rank " + std::to_string(p.rank));
      p.scale = adapter.rslora ? a / std::sqrt(rank) : a / rank;
    }
    return;
  }
  if (config.contains("lora_parameters")) {
    const std::string type = config.value("fine_tune_type", std::string("lora"));
    if (type != "lora" && type != "dora")
      throw std::runtime_error(config_path.string() + ": fine_tune_type \"" + type +
                               "\" is not supported (only \"lora\", \"dora\" and \"full\")");
    adapter.dora = type == "dora";
    check_dora_tensors(adapter, config_path, "fine_tune_type");
    const json& params = config["lora_parameters"];
    if (!params.is_object())
      throw std::runtime_error(config_path.string() + ": lora_parameters is not an object");
    const double scale = number_field(params, "scale", config_path, "lora_parameters.");
    if (params.contains("rank")) {
      const double rank = number_field(params, "rank", config_path, "lora_parameters.");
      for (const auto& p : adapter.pairs)
        if (rank != static_cast<double>(p.rank))
          throw std::runtime_error(config_path.string() + ": lora_parameters.rank is " +
                                   json_number(rank).dump() + " but tensor " + p.a_name +
                                   " has rank " + std::to_string(p.rank));
    }
    if (auto d = params.find("dropout"); d != params.end() && d->is_number())
      adapter.dropout = d->get<double>();
    for (auto& p : adapter.pairs) p.scale = scale;
    if (auto m = config.find("model"); m != config.end() && m->is_string())
      adapter.base_model = m->get<std::string>();
    // PEFT's way of giving the scale, carried through MLX-LM files written from PEFT ones.
    if (auto a = config.find("lora_alpha"); a != config.end() && a->is_number())
      adapter.peft_alpha = a->get<double>();
    adapter.rslora = config.value("use_rslora", false);
    adapter.base_num_layers = mlx_base_layers(adapter, config, config_path);
    adapter.mlx_run_args = config;
    for (const char* key :
         {"fine_tune_type", "num_layers", "lora_parameters", "lora_alpha", "use_rslora"})
      adapter.mlx_run_args.erase(key);
    return;
  }
  throw std::runtime_error(
      config_path.string() +
      ": neither a PEFT config (peft_type) nor an MLX-LM one (lora_parameters)");
}

std::vector<float> checked_values(const AdapterPair& p, bool a) {
  const auto& v = a ? p.a : p.b;
  const int64_t want = a ? p.rank * p.in : p.out * p.rank;
  if (static_cast<int64_t>(v.size()) != want)
    throw std::runtime_error("adapter pair " + p.module_key() + ": " + (a ? "A" : "B") + " holds " +
                             std::to_string(v.size()) + " values, expected " +
                             std::to_string(want));
  require_finite(v, "adapter pair " + p.module_key() + " " + (a ? "A" : "B"));
  return v;
}

std::vector<float> checked_magnitude(const AdapterPair& p) {
  if (static_cast<int64_t>(p.magnitude.size()) != p.out)
    throw std::runtime_error("adapter pair " + p.module_key() + ": DoRA magnitude holds " +
                             std::to_string(p.magnitude.size()) + " values, expected " +
                             std::to_string(p.out));
  return p.magnitude;
}

DType stored_dtype(DType t) { return t == DType::F16 || t == DType::BF16 ? t : DType::F32; }

}  // namespace

std::string layer_ranges(const std::vector<int64_t>& layers) {
  std::string text;
  for (std::size_t i = 0; i < layers.size();) {
    std::size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    if (!text.empty()) text += ", ";
    text += std::to_string(layers[i]);
    if (j > i) text += "-" + std::to_string(layers[j]);
    i = j + 1;
  }
  return text;
}

std::string_view adapter_format_name(AdapterFormat f) {
  return f == AdapterFormat::mlx ? "mlx" : "peft";
}

AdapterFormat adapter_format_from_name(std::string_view name) {
  if (name == "mlx" || name == "mlx-lm") return AdapterFormat::mlx;
  if (name == "peft") return AdapterFormat::peft;
  throw std::runtime_error("unknown adapter format \"" + std::string(name) +
                           "\" (expected mlx or peft)");
}

std::string AdapterPair::module_key() const { return layer_module_name(layer, module); }

std::string AdapterPair::short_name() const {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

AdapterFile AdapterFile::read(const fs::path& path) {
  const fs::path weights = weights_file(path);
  const fs::path config_path = weights.parent_path() / kConfig;
  if (!fs::exists(config_path))
    throw std::runtime_error(config_path.string() +
                             ": not found; an adapter needs its config to know its scale");
  const auto config = read_json_file<json>(config_path);
  if (config.is_object() && config.value("fine_tune_type", json("lora")) == "full")
    throw std::runtime_error(config_path.string() +
                             ": fine_tune_type \"full\": the folder holds fully fine-tuned "
                             "block weights, not LoRA pairs (they merge into their float base, "
                             "or run as the adapter of generate and eval)");
  // PEFT tries rank_pattern / alpha_pattern keys in the file's order.
  const auto ordered = read_json_file<nlohmann::ordered_json>(config_path);
  const SafetensorsFile file = SafetensorsFile::open(weights);

  AdapterFile adapter;
  adapter.source = weights;
  struct Names {
    const TensorInfo* a = nullptr;
    const TensorInfo* b = nullptr;
    const TensorInfo* m = nullptr;  // DoRA's magnitude
  };
  std::map<std::pair<int64_t, std::string>, Names> found;
  std::optional<bool> peft_layout;
  std::vector<std::string> unknown;  // not the A or B of a block linear
  for (const auto& t : file.tensors()) {
    auto key = parse_lora_key(t.name);
    if (!key) {
      unknown.push_back(t.name);
      continue;
    }
    if (peft_layout && *peft_layout != key->peft_layout)
      throw std::runtime_error(weights.string() +
                               ": mixes PEFT (lora_A.weight) and MLX-LM (lora_a) "
                               "tensor names, e.g. " +
                               t.name);
    peft_layout = key->peft_layout;
    auto& slot = found[{key->layer, key->module}];
    const TensorInfo*& dst = key->part == LoraKey::Part::A   ? slot.a
                             : key->part == LoraKey::Part::B ? slot.b
                                                             : slot.m;
    if (dst)
      throw std::runtime_error(weights.string() + ": tensors " + dst->name + " and " + t.name +
                               " are the same LoRA matrix");
    dst = &t;
  }
  if (found.empty())
    throw std::runtime_error(
        weights.string() + ": no LoRA tensors (" + std::to_string(file.tensors().size()) +
        " tensors, none named like layers.N.<module>.lora_A.weight or .lora_a)");
  adapter.format = *peft_layout ? AdapterFormat::peft : AdapterFormat::mlx;

  for (const auto& [where, names] : found) {
    if (!names.a || !names.b) {
      const TensorInfo* any = names.a ? names.a : names.b ? names.b : names.m;
      throw std::runtime_error(weights.string() + ": tensor " + any->name + " has no matching " +
                               (names.a ? "B" : "A") + " tensor");
    }
    const TensorInfo& a = *names.a;
    const TensorInfo& b = *names.b;
    AdapterPair p;
    p.layer = where.first;
    p.module = where.second;
    p.a_name = a.name;
    p.b_name = b.name;
    p.dtype = a.dtype;
    auto av = read_matrix(file, a);
    auto bv = read_matrix(file, b);
    // PEFT: A [r, in], B [out, r]. MLX-LM: a [in, r], b [r, out].
    const bool consistent = *peft_layout ? a.shape[0] == b.shape[1] : a.shape[1] == b.shape[0];
    if (!consistent)
      throw std::runtime_error(weights.string() + ": ranks of " + a.name + " " + shape_text(a) +
                               " and " + b.name + " " + shape_text(b) + " disagree");
    if (*peft_layout) {
      p.rank = a.shape[0];
      p.in = a.shape[1];
      p.out = b.shape[0];
      p.a = std::move(av);
      p.b = std::move(bv);
    } else {
      p.rank = a.shape[1];
      p.in = a.shape[0];
      p.out = b.shape[1];
      p.a = transpose(av, p.in, p.rank);
      p.b = transpose(bv, p.rank, p.out);
    }
    if (p.rank <= 0 || p.in <= 0 || p.out <= 0)
      throw std::runtime_error(weights.string() + ": tensor " + a.name + " " + shape_text(a) +
                               " or " + b.name + " " + shape_text(b) + " is empty");
    if (names.m) {
      if (names.m->numel() != p.out || names.m->shape.size() > 2)
        throw std::runtime_error(weights.string() + ": DoRA magnitude " + names.m->name +
                                 " has shape " + shape_text(*names.m) + "; expected [" +
                                 std::to_string(p.out) + "] (the outputs of " + b.name + ")");
      p.magnitude = file.read_f32(names.m->name);
    }
    adapter.pairs.push_back(std::move(p));
  }
  refuse_unknown_tensors(unknown, weights, config);
  apply_config(adapter, config, ordered, config_path);
  return adapter;
}

int64_t AdapterFile::common_rank() const {
  if (pairs.empty()) throw std::runtime_error("adapter has no LoRA pairs");
  for (const auto& p : pairs)
    if (p.rank != pairs.front().rank)
      throw std::runtime_error("adapter ranks differ: " + pairs.front().module_key() + " has " +
                               std::to_string(pairs.front().rank) + ", " + p.module_key() +
                               " has " + std::to_string(p.rank));
  return pairs.front().rank;
}

std::optional<double> AdapterFile::common_scale() const {
  if (pairs.empty()) return std::nullopt;
  for (const auto& p : pairs)
    if (p.scale != pairs.front().scale) return std::nullopt;
  return pairs.front().scale;
}

std::vector<std::string> AdapterFile::module_names() const {
  std::set<std::string> names;
  for (const auto& p : pairs) names.insert(p.module);
  return {names.begin(), names.end()};
}

std::vector<int64_t> AdapterFile::layers() const {
  std::set<int64_t> l;
  for (const auto& p : pairs) l.insert(p.layer);
  return {l.begin(), l.end()};
}

json AdapterFile::summary() const {
  json j;
  j["source"] = source.string();
  j["format"] = adapter_format_name(format);
  j["pairs"] = pairs.size();
  j["modules"] = module_names();
  j["layers"] = layers();
  std::set<int64_t> ranks;
  int64_t params = 0;
  for (const auto& p : pairs) {
    ranks.insert(p.rank);
    params += p.rank * (p.in + p.out) + static_cast<int64_t>(p.magnitude.size());
  }
  j["ranks"] = std::vector<int64_t>(ranks.begin(), ranks.end());
  if (auto s = common_scale()) j["scale"] = *s;
  j["parameters"] = params;
  j["dropout"] = dropout;
  j["dora"] = dora;
  j["rslora"] = rslora;
  if (base_num_layers) j["base_layers"] = *base_num_layers;
  j["base_model"] = base_model;
  return j;
}

namespace {

// The most common rank of the pairs (the first pair's on a tie).
int64_t most_common_rank(const std::vector<AdapterPair>& pairs) {
  std::map<int64_t, int> rank_count;
  int64_t r = pairs.front().rank;
  for (const auto& p : pairs) {
    const int count = ++rank_count[p.rank];
    if (count > rank_count[r]) r = p.rank;
  }
  return r;
}

// Whether the adapted layers (sorted) are every layer of a base of known depth.
bool covers_all_layers(const std::vector<int64_t>& adapted, std::optional<int64_t> base_layers) {
  bool all = base_layers.has_value();
  for (int64_t l = 0; all && l < *base_layers; ++l)
    all = std::binary_search(adapted.begin(), adapted.end(), l);
  return all;
}

}  // namespace

void install_adapter_files(const fs::path& dir, const char* weights_name, const char* other_name,
                           const std::function<void(const fs::path&)>& fill,
                           const std::function<void()>& after_weights) {
  if (!fs::exists(dir)) {
    write_dir_atomic(dir, fill);
    return;
  }
  if (!fs::is_directory(dir))
    throw std::runtime_error(dir.string() + ": exists and is not a folder");
  const fs::path staging = dir / ".adapter-staging";
  write_dir_atomic(staging, fill);
  fs::rename(staging / weights_name, dir / weights_name);  // the weights first, then the rest
  if (after_weights) after_weights();
  std::vector<fs::path> rest;
  for (const auto& e : fs::directory_iterator(staging)) rest.push_back(e.path());
  for (const auto& path : rest) fs::rename(path, dir / path.filename());
  fs::remove(dir / other_name);
  fsync_path(dir);
  fs::remove_all(staging);
}

void AdapterFile::write(const fs::path& dir, AdapterFormat out_format,
                        const std::function<void()>& after_weights) const {
  if (pairs.empty()) throw std::runtime_error("refusing to write an adapter with no LoRA pairs");
  const auto adapted = layers();
  if (base_num_layers && adapted.back() >= *base_num_layers)
    throw std::runtime_error("adapter adapts layer " + std::to_string(adapted.back()) +
                             " but the base has " + std::to_string(*base_num_layers) + " layers");
  std::vector<TensorData> tensors;
  json config;
  std::map<std::string, std::string> metadata;
  const char* weights_name = nullptr;
  const char* other_name = nullptr;
  if (out_format == AdapterFormat::mlx) {
    weights_name = kMlxWeights;
    other_name = kPeftWeights;
    const int64_t rank = common_rank();
    const auto scale = common_scale();
    if (!scale)
      throw std::runtime_error("MLX-LM adapters have one scale; this adapter's modules differ");
    for (const auto& p : pairs) {
      const std::string base = p.module_key();
      tensors.push_back(TensorData::convert(base + ".lora_a", stored_dtype(p.dtype), {p.in, p.rank},
                                            transpose(checked_values(p, true), p.rank, p.in)));
      tensors.push_back(TensorData::convert(base + ".lora_b", stored_dtype(p.dtype),
                                            {p.rank, p.out},
                                            transpose(checked_values(p, false), p.out, p.rank)));
      if (dora)
        tensors.push_back(
            TensorData::convert(base + ".m", stored_dtype(p.dtype), {p.out}, checked_magnitude(p)));
    }
    // MLX-LM adapts the last num_layers blocks (loading is not strict: blocks in that range
    // without tensors keep B = 0, the identity). Which blocks those are needs the base's depth.
    if (!base_num_layers)
      throw std::runtime_error(
          "the adapter covers layers " + layer_ranges(adapted) +
          " and the base model's layer count is not known, so MLX-LM's num_layers (the last N "
          "blocks) cannot be written; give the base model or its layer count");
    config = mlx_run_args.is_object() ? mlx_run_args : json::object();
    if (!base_model.empty() && !config.contains("model")) config["model"] = base_model;
    config["fine_tune_type"] = dora ? "dora" : "lora";
    config["num_layers"] = *base_num_layers - adapted.front();
    // PEFT's alpha and rsLoRA flag, so that MLX-LM -> PEFT writes them back as they were.
    if (peft_alpha) config["lora_alpha"] = json_number(*peft_alpha);
    if (rslora) config["use_rslora"] = true;
    config["lora_parameters"] = {
        {"rank", rank}, {"scale", *scale}, {"dropout", dropout}, {"keys", module_names()}};
  } else {
    weights_name = kPeftWeights;
    other_name = kMlxWeights;
    metadata["format"] = "pt";
    // The most common rank is `r`; others go to rank_pattern.
    const int64_t r = most_common_rank(pairs);
    auto alpha_of = [&](const AdapterPair& p) {
      return p.scale * (rslora ? std::sqrt(static_cast<double>(p.rank)) : p.rank);
    };
    // Keep PEFT's own alpha (or the one the user gave) when it gives the first pair's scale to
    // within the rounding of a float scale: 16, not 15.999999726.
    double alpha = alpha_of(pairs.front());
    if (peft_alpha && pairs.front().rank == r && same_scale(alpha, *peft_alpha))
      alpha = *peft_alpha;
    json rank_pattern = json::object();
    json alpha_pattern = json::object();
    std::set<std::string> targets;
    for (const auto& p : pairs) {
      const std::string base = "base_model.model." + p.module_key();
      tensors.push_back(TensorData::convert(base + ".lora_A.weight", stored_dtype(p.dtype),
                                            {p.rank, p.in}, checked_values(p, true)));
      tensors.push_back(TensorData::convert(base + ".lora_B.weight", stored_dtype(p.dtype),
                                            {p.out, p.rank}, checked_values(p, false)));
      if (dora)
        tensors.push_back(TensorData::convert(
            base + ".lora_magnitude_vector", stored_dtype(p.dtype), {p.out}, checked_magnitude(p)));
      const std::string key = p.module_key();
      if (p.rank != r) rank_pattern[key] = p.rank;
      const double a = alpha_of(p);
      const double scale_with_default =
          (rslora ? alpha / std::sqrt(double(p.rank)) : alpha / p.rank);
      if (!same_scale(scale_with_default, p.scale)) alpha_pattern[key] = json_number(a);
      targets.insert(p.short_name());
    }
    // Without layers_to_transform PEFT adapts every layer; it is left out only when the base's
    // depth is known and the adapter covers all of it.
    const bool all_layers = covers_all_layers(adapted, base_num_layers);
    config = {
        {"alpha_pattern", alpha_pattern},
        {"auto_mapping", nullptr},
        {"base_model_name_or_path", base_model.empty() ? json(nullptr) : json(base_model)},
        {"bias", "none"},
        {"fan_in_fan_out", false},
        {"inference_mode", true},
        {"init_lora_weights", true},
        {"layers_pattern", all_layers ? json(nullptr) : json("layers")},
        {"layers_to_transform", all_layers ? json(nullptr) : json(adapted)},
        {"loftq_config", json::object()},
        {"lora_alpha", json_number(alpha)},
        {"lora_dropout", dropout},
        {"megatron_config", nullptr},
        {"megatron_core", "megatron.core"},
        {"modules_to_save", nullptr},
        {"peft_type", "LORA"},
        {"r", r},
        {"rank_pattern", rank_pattern},
        {"revision", nullptr},
        {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
        {"task_type", "CAUSAL_LM"},
        {"use_dora", dora},
        {"use_rslora", rslora},
    };
  }
  const std::string config_text = config.dump(2) + "\n";
  const std::string card = model_card(*this, out_format);

  install_adapter_files(
      dir, weights_name, other_name,
      [&](const fs::path& tmp) {
        write_safetensors(tmp / weights_name, tensors, metadata);
        write_file_atomic(tmp / kConfig, config_text);
        write_file_atomic(tmp / kCard, card);
      },
      after_weights);
}

}  // namespace lora
