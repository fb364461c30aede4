// safetensors: read (memory-mapped, validated before any tensor is touched) and write (atomic).
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the data section; offsets are relative to its start.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace lora {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// A validated, memory-mapped safetensors file. Errors name the file and the tensor.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws naming file and tensor
  std::span<const std::byte> bytes(const std::string& name) const;
  // Any float dtype widened to f32.
  std::vector<float> read_f32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  struct Mapping;
  std::unique_ptr<Mapping> map_;
  const std::byte* data_ = nullptr;  // start of the data section
};

// A tensor to write: name, dtype, shape, raw little-endian bytes.
struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;

  static TensorData from_f32(std::string name, std::vector<int64_t> shape,
                             std::span<const float> v);
  // Converts f32 values to `dtype` (F32, F16, BF16).
  static TensorData convert(std::string name, DType dtype, std::vector<int64_t> shape,
                            std::span<const float> v);
};

// Writes tensors (sorted by name, 8-byte aligned header) atomically: temp file, fsync, rename.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A model's weights: model.safetensors, or the shards of model.safetensors.index.json (shard
// names must stay inside the folder). Lookup by tensor name across shards.
class WeightSet {
 public:
  static WeightSet open_dir(const std::filesystem::path& dir);
  bool contains(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> where_;
};

// Refuses pickle-based checkpoints (.bin, .pt, .pth, .ckpt) with an explanation.
void refuse_pickle(const std::filesystem::path& path);

}  // namespace lora
