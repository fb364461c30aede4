#include "trainer/serve/adapter_registry.h"

#include <algorithm>

#include "trainer/io/adapter_io.h"
#include "trainer/serve/api_error.h"

namespace lora::serve {

namespace fs = std::filesystem;

AdapterRegistry::AdapterRegistry(const Model& model, fs::path adapter_dir) : model_(model) {
  if (!adapter_dir.empty()) {
    if (!fs::is_directory(adapter_dir))
      throw std::runtime_error("adapter directory " + adapter_dir.string() + " is not a folder");
    adapter_dir_ = fs::canonical(adapter_dir);
  }
}

void AdapterRegistry::insert(const std::string& name, const fs::path& path) {
  if (name.empty()) throw bad_request("an adapter needs a name", "lora_name");
  // Load outside the lock: reading a large adapter must not stall the requests that look one up.
  auto served = std::make_shared<ServedAdapter>();
  served->name = name;
  served->path = path;
  try {
    served->adapter = load_adapter(path, model_);
  } catch (const std::exception& e) {
    throw bad_request("cannot load adapter '" + name + "': " + e.what(), "lora_path");
  }
  std::lock_guard lock(mutex_);
  if (std::any_of(adapters_.begin(), adapters_.end(),
                  [&](const auto& a) { return a->name == name; }))
    throw bad_request("an adapter named '" + name + "' is already loaded", "lora_name");
  served->id = next_id_++;
  adapters_.push_back(std::move(served));
}

void AdapterRegistry::add(const std::string& name, const fs::path& path) { insert(name, path); }

fs::path AdapterRegistry::resolve_inside_dir(const std::string& relative) const {
  if (adapter_dir_.empty())
    throw bad_request(
        "loading adapters at run time is off (start the server with an "
        "adapter directory)",
        "lora_path");
  const fs::path rel(relative);
  if (relative.empty() || rel.is_absolute() || rel.has_root_name() || rel.has_root_directory())
    throw bad_request("'lora_path' must be a folder relative to the adapter directory",
                      "lora_path");
  for (const auto& part : rel)
    if (part == "..") throw bad_request("'lora_path' may not contain '..'", "lora_path");
  const fs::path joined = adapter_dir_ / rel;
  std::error_code ec;
  const fs::path real = fs::canonical(joined, ec);  // follows every symlink
  if (ec || !fs::is_directory(real))
    throw ApiError(404, "no adapter folder '" + relative + "' in the adapter directory",
                   "lora_path");
  const auto [dir_end, real_it] =
      std::mismatch(adapter_dir_.begin(), adapter_dir_.end(), real.begin(), real.end());
  if (dir_end != adapter_dir_.end() || real == adapter_dir_)
    throw bad_request("'lora_path' leads out of the adapter directory", "lora_path");
  return real;
}

void AdapterRegistry::load(const std::string& name, const std::string& relative) {
  insert(name, resolve_inside_dir(relative));
}

void AdapterRegistry::unload(const std::string& name) {
  std::lock_guard lock(mutex_);
  const auto it = std::find_if(adapters_.begin(), adapters_.end(),
                               [&](const auto& a) { return a->name == name; });
  if (it == adapters_.end())
    throw ApiError(404, "no adapter named '" + name + "' is loaded", "lora_name");
  adapters_.erase(it);
}

std::shared_ptr<const ServedAdapter> AdapterRegistry::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  for (const auto& a : adapters_)
    if (a->name == name) return a;
  return nullptr;
}

std::shared_ptr<const ServedAdapter> AdapterRegistry::find(int64_t id) const {
  std::lock_guard lock(mutex_);
  for (const auto& a : adapters_)
    if (a->id == id) return a;
  return nullptr;
}

std::vector<std::shared_ptr<const ServedAdapter>> AdapterRegistry::list() const {
  std::lock_guard lock(mutex_);
  return adapters_;
}

}  // namespace lora::serve
