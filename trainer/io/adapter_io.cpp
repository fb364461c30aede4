#include "trainer/io/adapter_io.h"

#include <algorithm>
#include <stdexcept>

#include "trainer/io/full_adapter.h"
#include "trainer/io/model_card.h"

namespace lora {

namespace fs = std::filesystem;

std::optional<Proj> pair_proj(const AdapterPair& pair) {
  auto p = proj_from_name(pair.module);
  // proj_from_name also takes the bare "q_proj"; a block's linears sit under self_attn. / mlp.
  if (!p || (pair.module != proj_module_path(*p) && pair.module != proj_name(*p)))
    return std::nullopt;
  return p;
}

void check_adapter_against_base(const AdapterFile& adapter, int64_t base_layers,
                                const LinearShapeOf& shape_of, const std::string& base_name) {
  if (adapter.pairs.empty())
    throw std::runtime_error(adapter.source.string() + ": the adapter touches no module");
  for (const auto& pair : adapter.pairs) {
    const std::string what = adapter.source.string() + ": tensor " + pair.a_name;
    auto proj = pair_proj(pair);
    if (!proj)
      throw std::runtime_error(what + " adapts \"" + pair.module +
                               "\", which is not a projection " + base_name +
                               " has (self_attn.q/k/v/o_proj, mlp.gate/up/down_proj, "
                               "self_attn.qkv_proj, mlp.gate_up_proj)");
    if (pair.layer >= base_layers)
      throw std::runtime_error(what + " adapts layer " + std::to_string(pair.layer) + " but " +
                               base_name + " has " + std::to_string(base_layers) + " layers");
    auto shape = shape_of(pair.layer, *proj);
    if (!shape)
      throw std::runtime_error(what + ": " + base_name + " has no " + pair.module_key() +
                               ".weight");
    if ((*shape)[0] != pair.out || (*shape)[1] != pair.in)
      throw std::runtime_error(
          what + " [" + std::to_string(pair.rank) + ", " + std::to_string(pair.in) + "] and " +
          pair.b_name + " [" + std::to_string(pair.out) + ", " + std::to_string(pair.rank) +
          "] adapt a [" + std::to_string(pair.out) + ", " + std::to_string(pair.in) +
          "] linear, but " + pair.module_key() + ".weight of " + base_name + " is [" +
          std::to_string((*shape)[0]) + ", " + std::to_string((*shape)[1]) + "]");
  }
}

LoraAdapter to_lora_adapter(const AdapterFile& file, const Model& model) {
  const std::string base_name = "the base model " + model.dir.string();
  check_adapter_against_base(
      file, model.config.num_layers,
      [&](int64_t layer, Proj p) -> std::optional<std::array<int64_t, 2>> {
        if (layer < 0 || layer >= static_cast<int64_t>(model.layers.size())) return std::nullopt;
        const auto& w = model.layers[layer].at(p);
        return std::array<int64_t, 2>{w.rows, w.cols};
      },
      base_name);

  LoraAdapter adapter;
  LoraConfig& config = adapter.config;
  config.rank = static_cast<int>(file.pairs.front().rank);
  config.scale = file.common_scale();
  config.alpha = file.peft_alpha.value_or(file.pairs.front().scale * config.rank);
  config.rslora = file.rslora;
  config.dora = file.dora;
  config.dropout = static_cast<float>(file.dropout);
  config.keys.clear();
  int64_t first_layer = file.pairs.front().layer;
  for (const auto& pair : file.pairs) {
    const Proj p = *pair_proj(pair);
    if (std::find(config.keys.begin(), config.keys.end(), p) == config.keys.end())
      config.keys.push_back(p);
    first_layer = std::min(first_layer, pair.layer);
    LoraModule m;
    m.layer = pair.layer;
    m.proj = p;
    m.scale = static_cast<float>(pair.scale);
    m.A.value = Tensor({pair.rank, pair.in}, pair.a);
    m.A.grad = Tensor({pair.rank, pair.in});
    m.B.value = Tensor({pair.out, pair.rank}, pair.b);
    m.B.grad = Tensor({pair.out, pair.rank});
    if (!pair.magnitude.empty()) {
      m.magnitude.value = Tensor({pair.out}, pair.magnitude);
      m.magnitude.grad = Tensor({pair.out});
    }
    adapter.modules.push_back(std::move(m));
  }
  std::sort(config.keys.begin(), config.keys.end());
  config.num_layers =
      first_layer == 0 ? -1 : static_cast<int>(model.config.num_layers - first_layer);
  std::sort(adapter.modules.begin(), adapter.modules.end(), [](const auto& x, const auto& y) {
    return std::pair(x.layer, x.proj) < std::pair(y.layer, y.proj);
  });
  return adapter;
}

std::string base_model_name(const nlohmann::json& raw, const fs::path& model_dir) {
  if (auto n = raw.find("_name_or_path"); n != raw.end() && n->is_string()) {
    const std::string name = n->get<std::string>();
    const fs::path as_path(name);
    if (!name.empty() && !as_path.is_absolute() && !name.starts_with(".") && !name.starts_with("~"))
      return name;
  }
  return shareable_path(model_dir.string());
}

AdapterFile to_adapter_file(const LoraAdapter& adapter, const Model& model) {
  AdapterFile file;
  file.base_num_layers = model.config.num_layers;
  file.base_model = base_model_name(model.config.raw, model.dir);
  file.dropout = adapter.config.dropout;
  file.rslora = adapter.config.rslora;
  file.dora = adapter.config.dora;
  if (!adapter.config.scale) file.peft_alpha = adapter.config.alpha;
  for (const auto& m : adapter.modules) {
    AdapterPair pair;
    pair.layer = m.layer;
    pair.module = std::string(proj_module_path(m.proj));
    pair.rank = m.A.value.dim(0);
    pair.in = m.A.value.dim(1);
    pair.out = m.B.value.dim(0);
    if (m.B.value.dim(1) != pair.rank)
      throw std::runtime_error("LoRA module " + pair.module_key() + ": A is " +
                               m.A.value.shape_str() + " but B is " + m.B.value.shape_str());
    pair.a = m.A.value.data;
    pair.b = m.B.value.data;
    pair.scale = m.scale;
    pair.magnitude = m.magnitude.value.data;
    pair.a_name = pair.module_key() + ".lora_A";
    pair.b_name = pair.module_key() + ".lora_B";
    file.pairs.push_back(std::move(pair));
  }
  std::sort(file.pairs.begin(), file.pairs.end(), [](const auto& x, const auto& y) {
    return std::pair(x.layer, x.module) < std::pair(y.layer, y.module);
  });
  return file;
}

void save_adapter(const fs::path& dir, const LoraAdapter& adapter, const Model& model,
                  AdapterFormat format, const nlohmann::json& run_args,
                  const std::optional<TrainingRun>& training,
                  const std::function<void()>& after_weights) {
  if (adapter.config.full) {
    if (format != AdapterFormat::mlx)
      throw std::runtime_error("a full fine-tuning is written in the MLX-LM layout only");
    save_full_adapter(dir, adapter, model, run_args, after_weights);
    return;
  }
  AdapterFile file = to_adapter_file(adapter, model);
  if (run_args.is_object()) file.mlx_run_args = run_args;
  file.training = training;
  file.write(dir, format, after_weights);
}

LoraAdapter load_adapter(const fs::path& path, const Model& model) {
  if (is_full_adapter(path)) return load_full_adapter(path, model);
  return to_lora_adapter(AdapterFile::read(path), model);
}

}  // namespace lora
