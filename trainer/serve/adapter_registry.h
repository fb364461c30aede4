// The adapters a server offers, by name: those given at start, and those loaded and unloaded while
// it runs, only from folders under one adapter directory. Requests hold a shared_ptr, so an
// adapter unloaded mid-request stays alive until that request ends.
#pragma once
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "trainer/lora.h"
#include "trainer/model.h"

namespace lora::serve {

struct ServedAdapter {
  std::string name;
  int64_t id = 0;  // stable while loaded: llama-server's per-request {"id", "scale"}
  std::filesystem::path path;
  LoraAdapter adapter;
};

class AdapterRegistry {
 public:
  // `adapter_dir` empty: loading at run time is refused.
  AdapterRegistry(const Model& model, std::filesystem::path adapter_dir);
  // At start: any readable adapter folder.
  void add(const std::string& name, const std::filesystem::path& path);
  // At run time (ApiError on refusal): `relative` must name a folder inside the adapter
  // directory: no absolute path, no "..", no symlink that leads out.
  void load(const std::string& name, const std::string& relative);
  void unload(const std::string& name);  // ApiError 404 when no such adapter
  std::shared_ptr<const ServedAdapter> find(const std::string& name) const;
  std::shared_ptr<const ServedAdapter> find(int64_t id) const;
  std::vector<std::shared_ptr<const ServedAdapter>> list() const;

 private:
  std::filesystem::path resolve_inside_dir(const std::string& relative) const;
  void insert(const std::string& name, const std::filesystem::path& path);

  const Model& model_;
  std::filesystem::path adapter_dir_;  // canonical, or empty
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<const ServedAdapter>> adapters_;
  int64_t next_id_ = 0;
};

}  // namespace lora::serve
