#include "trainer/io/full_adapter.h"

#include <fstream>
#include <map>
#include <stdexcept>

#include "trainer/io/adapter_file.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/atomic_file.h"
#include "trainer/io/finite_values.h"
#include "trainer/io/safetensors.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path folder_of(const fs::path& path) {
  return fs::is_directory(path) ? path : path.parent_path();
}

fs::path weights_of(const fs::path& path) {
  return fs::is_directory(path) ? path / kMlxWeights : path;
}

// "model.layers.4.self_attn.q_proj.weight" -> (4, q); nullopt for any other name.
std::optional<std::pair<int64_t, BlockTensor>> parse_block_tensor(const std::string& name) {
  const std::string head = "model.layers.";
  if (!name.starts_with(head)) return std::nullopt;
  const std::size_t dot = name.find('.', head.size());
  if (dot == std::string::npos || dot == head.size()) return std::nullopt;
  int64_t layer = 0;
  for (std::size_t i = head.size(); i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9' || layer > (int64_t(1) << 40)) return std::nullopt;
    layer = layer * 10 + (name[i] - '0');
  }
  const std::string_view rest = std::string_view(name).substr(dot + 1);
  for (int t = 0; t < kNumBlockTensors; ++t)
    if (block_tensor_name(static_cast<BlockTensor>(t)) == rest)
      return std::pair(layer, static_cast<BlockTensor>(t));
  return std::nullopt;
}

}  // namespace

bool is_full_adapter(const fs::path& path) {
  const fs::path config = folder_of(path) / kAdapterConfigName;
  std::ifstream in(config, std::ios::binary);
  if (!in) return false;
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  const auto type = j.find("fine_tune_type");
  return type != j.end() && type->is_string() && type->get<std::string>() == "full";
}

void save_full_adapter(const fs::path& dir, const LoraAdapter& adapter, const Model& model,
                       const json& run_args, const std::function<void()>& after_weights) {
  if (adapter.blocks.empty())
    throw std::runtime_error("refusing to write a full fine-tuning with no trained block");
  const float offset = norm_offset(model.config);
  std::vector<TensorData> tensors;
  for (const TrainedBlock& b : adapter.blocks)
    for (int t = 0; t < kNumBlockTensors; ++t) {
      const auto which = static_cast<BlockTensor>(t);
      if (!b.has(which)) continue;
      const std::string name = layer_module_name(b.layer, block_tensor_name(which));
      const Tensor& v = b.at(which).value;
      if (first_non_finite(v.span()) >= 0)
        throw std::runtime_error("refusing to write " + name + ": it holds inf or NaN values");
      std::vector<float> values = v.data;
      if (is_block_norm(which))
        for (float& x : values) x -= offset;
      tensors.push_back(TensorData::from_f32(name, v.shape, values));
    }
  json config = run_args.is_object() ? run_args : json::object();
  if (!config.contains("model")) config["model"] = base_model_name(model.config.raw, model.dir);
  config["fine_tune_type"] = "full";
  config["num_layers"] = model.config.num_layers - adapter.blocks.front().layer;
  config["lora_parameters"] = nullptr;
  const std::string config_text = config.dump(2) + "\n";
  install_adapter_files(
      dir, kMlxWeights, kPeftWeights,
      [&](const fs::path& tmp) {
        write_safetensors(tmp / kMlxWeights, tensors, {{"format", "mlx"}});
        write_file_atomic(tmp / kAdapterConfigName, config_text);
      },
      after_weights);
}

LoraAdapter load_full_adapter(const fs::path& path, const Model& model) {
  const fs::path weights = weights_of(path);
  if (!fs::exists(weights))
    throw std::runtime_error(weights.string() +
                             ": missing (a full fine-tuning keeps its trained "
                             "tensors in " +
                             std::string(kMlxWeights) + ")");
  const SafetensorsFile file = SafetensorsFile::open(weights);
  const auto n_layers = static_cast<int64_t>(model.layers.size());
  std::map<int64_t, TrainedBlock> blocks;
  const float offset = norm_offset(model.config);
  for (const TensorInfo& info : file.tensors()) {
    const auto parsed = parse_block_tensor(info.name);
    if (!parsed)
      throw std::runtime_error(weights.string() + ": tensor " + info.name +
                               " is not a tensor of a transformer block (model.layers.N.*)");
    const auto [layer, which] = *parsed;
    if (layer >= n_layers)
      throw std::runtime_error(weights.string() + ": tensor " + info.name + " is in layer " +
                               std::to_string(layer) + " but the base model has " +
                               std::to_string(n_layers) + " layers");
    auto [it, fresh] = blocks.try_emplace(layer);
    if (fresh) {
      it->second.layer = layer;
      for (int t = 0; t < kNumBlockTensors; ++t)
        it->second.tensors[t].value = base_block_tensor(model, layer, static_cast<BlockTensor>(t));
    }
    ag::Parameter& p = it->second.at(which);
    if (p.value.numel() == 0)
      throw std::runtime_error(weights.string() + ": tensor " + info.name +
                               " has no counterpart in the base model " + model.dir.string());
    if (info.shape != p.value.shape)
      throw std::runtime_error(weights.string() + ": tensor " + info.name + " is " +
                               shape_to_string(info.shape) + " but the base model's is " +
                               p.value.shape_str());
    p.value.data = file.read_f32(info.name);
    if (is_block_norm(which))
      for (float& x : p.value.data) x += offset;
  }
  if (blocks.empty()) throw std::runtime_error(weights.string() + ": holds no tensor");
  LoraAdapter adapter;
  adapter.config.full = true;
  adapter.config.num_layers = static_cast<int>(n_layers - blocks.begin()->first);
  for (auto& [layer, block] : blocks) {
    for (ag::Parameter& p : block.tensors)
      if (p.value.numel() > 0) p.zero_grad();
    adapter.blocks.push_back(std::move(block));
  }
  return adapter;
}

}  // namespace lora
