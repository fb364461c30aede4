#include "trainer/io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "trainer/io/atomic_file.h"
#include "trainer/io/finite_values.h"
#include "trainer/io/safetensors.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

constexpr int kCheckpointVersion = 1;
constexpr const char* kStateFile = "state.json";
constexpr const char* kTensorFile = "state.safetensors";

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error(p.string() + ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::optional<int64_t> step_of(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (!name.starts_with("step-") || name.size() <= 5) return std::nullopt;
  int64_t step = 0;
  for (char c : name.substr(5)) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

}  // namespace

std::string fnv1a_hex(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string model_fingerprint(const Model& model) {
  // The config as read (sorted keys) plus every frozen matrix's shape and storage.
  std::string text = model.config.raw.dump();
  auto add = [&](const FrozenWeight& w) {
    text += "|" + std::to_string(w.rows) + "x" + std::to_string(w.cols);
  };
  add(model.embed);
  if (model.lm_head) add(*model.lm_head);
  for (const auto& layer : model.layers)
    for (const auto& w : layer.proj) add(w);
  return fnv1a_hex(text);
}

fs::path checkpoint_dir(const fs::path& adapter_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return adapter_dir / "checkpoints" / name;
}

void save_checkpoint(const fs::path& dir, LoraAdapter& adapter, Optimizer& optimizer,
                     const Model& model, AdapterFormat format, const CheckpointContent& content,
                     const std::function<void(const fs::path&)>& before_commit) {
  fs::create_directories(dir.parent_path());
  write_dir_atomic(dir, [&](const fs::path& tmp) {
    // The adapter files first, so the checkpoint folder is also a usable adapter folder.
    save_adapter(tmp, adapter, model, format, content.config);
    std::vector<TensorData> tensors;
    auto params = adapter.parameters();
    auto& m = optimizer.first_moments();
    auto& v = optimizer.second_moments();
    for (std::size_t i = 0; i < params.size(); ++i) {
      char key[32];
      std::snprintf(key, sizeof key, "%06zu", i);
      const Tensor& value = params[i]->value;
      require_finite(value.span(), "checkpoint parameter " + std::string(key));
      if (i < m.size()) require_finite(m[i].span(), "checkpoint first moment " + std::string(key));
      if (i < v.size()) require_finite(v[i].span(), "checkpoint second moment " + std::string(key));
      tensors.push_back(
          TensorData::from_f32(std::string("value.") + key, value.shape, value.span()));
      if (i < m.size())
        tensors.push_back(TensorData::from_f32(std::string("m.") + key, m[i].shape, m[i].span()));
      if (i < v.size())
        tensors.push_back(TensorData::from_f32(std::string("v.") + key, v[i].shape, v[i].span()));
    }
    write_safetensors(tmp / kTensorFile, tensors, {{"format", "loracpp-checkpoint"}});
    write_file_atomic(tmp / "metrics.jsonl", content.metrics);
    if (before_commit) before_commit(tmp);
    nlohmann::ordered_json state;
    state["version"] = kCheckpointVersion;
    state["step"] = content.progress.step;
    state["optimizer_steps"] = optimizer.steps_taken();
    state["cursor"] = {{"epoch", content.progress.cursor.epoch},
                       {"position", content.progress.cursor.position}};
    state["trained_tokens"] = content.progress.trained_tokens;
    state["window_loss"] = content.progress.window_loss;
    state["window_trained"] = content.progress.window_trained;
    state["num_parameters"] = params.size();
    state["model_fingerprint"] = content.model_fingerprint;
    state["data_fingerprint"] = content.data_fingerprint;
    state["config"] = content.config;
    // Written last: a folder without it is not a checkpoint.
    write_file_atomic(tmp / kStateFile, state.dump(2) + "\n");
  });
}

LoadedCheckpoint load_checkpoint(const fs::path& dir) {
  const std::string where = dir.string();
  if (!fs::is_directory(dir)) throw std::runtime_error(where + ": checkpoint folder not found");
  if (!fs::exists(dir / kStateFile))
    throw std::runtime_error(where + ": not a checkpoint (no " + kStateFile + ")");
  LoadedCheckpoint ck;
  ck.dir = dir;
  nlohmann::json state;
  std::size_t num_parameters = 0;
  try {
    state = nlohmann::json::parse(read_text(dir / kStateFile));
    if (state.at("version").get<int>() != kCheckpointVersion)
      throw std::runtime_error("unsupported checkpoint version " + state.at("version").dump());
    ck.content.progress.step = state.at("step").get<int64_t>();
    ck.content.progress.cursor.epoch = state.at("cursor").at("epoch").get<int64_t>();
    ck.content.progress.cursor.position = state.at("cursor").at("position").get<int64_t>();
    ck.content.progress.trained_tokens = state.at("trained_tokens").get<int64_t>();
    ck.content.progress.window_loss = state.at("window_loss").get<double>();
    ck.content.progress.window_trained = state.at("window_trained").get<int64_t>();
    ck.optimizer_steps = state.at("optimizer_steps").get<int64_t>();
    ck.content.model_fingerprint = state.at("model_fingerprint").get<std::string>();
    ck.content.data_fingerprint = state.at("data_fingerprint").get<std::string>();
    ck.content.config = state.at("config");
    num_parameters = state.at("num_parameters").get<std::size_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error((dir / kStateFile).string() + ": " + e.what());
  }
  const std::size_t n = num_parameters;
  auto file = SafetensorsFile::open(dir / kTensorFile);
  auto read = [&](const std::string& name) {
    const TensorInfo& info = file.info(name);
    return Tensor(info.shape, file.read_f32(name));
  };
  for (std::size_t i = 0; i < n; ++i) {
    char key[32];
    std::snprintf(key, sizeof key, "%06zu", i);
    ck.values.push_back(read(std::string("value.") + key));
    if (file.contains(std::string("m.") + key))
      ck.first_moments.push_back(read(std::string("m.") + key));
    if (file.contains(std::string("v.") + key))
      ck.second_moments.push_back(read(std::string("v.") + key));
  }
  if (fs::exists(dir / "metrics.jsonl")) ck.content.metrics = read_text(dir / "metrics.jsonl");
  return ck;
}

void restore_checkpoint(const LoadedCheckpoint& ck, LoraAdapter& adapter, Optimizer& optimizer) {
  auto params = adapter.parameters();
  if (params.size() != ck.values.size())
    throw std::runtime_error(ck.dir.string() + ": holds " + std::to_string(ck.values.size()) +
                             " LoRA matrices but this run's adapter has " +
                             std::to_string(params.size()));
  auto restore = [&](std::vector<Tensor>& into, const std::vector<Tensor>& from, const char* what) {
    if (from.size() != into.size())
      throw std::runtime_error(ck.dir.string() + ": optimizer " + what + " count differs (" +
                               std::to_string(from.size()) + " vs " + std::to_string(into.size()) +
                               "); was it saved with another optimizer?");
    for (std::size_t i = 0; i < into.size(); ++i) {
      if (from[i].shape != into[i].shape)
        throw std::runtime_error(ck.dir.string() + ": optimizer " + what + " " + std::to_string(i) +
                                 " has shape " + from[i].shape_str() + ", expected " +
                                 into[i].shape_str());
      into[i] = from[i];
    }
  };
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i]->value.shape != ck.values[i].shape)
      throw std::runtime_error(ck.dir.string() + ": LoRA matrix " + std::to_string(i) +
                               " has shape " + ck.values[i].shape_str() + ", expected " +
                               params[i]->value.shape_str());
    params[i]->value = ck.values[i];
  }
  restore(optimizer.first_moments(), ck.first_moments, "first moments");
  restore(optimizer.second_moments(), ck.second_moments, "second moments");
  optimizer.set_steps_taken(ck.optimizer_steps);
}

std::vector<fs::path> list_checkpoints(const fs::path& adapter_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path root = adapter_dir / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory()) continue;
    auto step = step_of(e.path());  // temporary folders start with '.', so never match
    if (step && fs::exists(e.path() / kStateFile)) found.emplace_back(*step, e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

fs::path resolve_checkpoint(const fs::path& path) {
  if (fs::exists(path / kStateFile)) return path;
  if (!fs::exists(path)) throw std::runtime_error(path.string() + ": checkpoint not found");
  auto all = list_checkpoints(path);
  if (all.empty())
    throw std::runtime_error(path.string() +
                             ": neither a checkpoint (state.json) nor an adapter folder "
                             "with checkpoints/step-*");
  return all.back();
}

void prune_checkpoints(const fs::path& adapter_dir, int64_t keep) {
  // Temporary folders left by a run killed while writing (never read: their names start with '.').
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(adapter_dir / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".") &&
        (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos))
      fs::remove_all(e.path(), ec);
  }
  // An old checkpoint goes aside before it is deleted: a run killed while deleting it left a
  // checkpoint folder without some of its files, where the crash loop's readers look.
  auto all = list_checkpoints(adapter_dir);
  for (std::size_t i = 0; i + std::size_t(std::max<int64_t>(keep, 1)) < all.size(); ++i)
    remove_dir_atomic(all[i]);
}

}  // namespace lora
