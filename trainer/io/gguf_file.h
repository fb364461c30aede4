// GGUF (llama.cpp's model container), versions 2 and 3: read memory-mapped and validated before
// any tensor is touched. Layout, all little-endian: "GGUF", u32 version, u64 tensor count, u64
// metadata count; metadata as (string key, u32 value type, value); tensor infos as (string name,
// u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding to
// general.alignment (default 32); the data section, each tensor at an aligned offset into it.
// Strings are u64 length + bytes (no terminator).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/gguf_quant.h"

namespace lora {

enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);

// One metadata value. Integers (and bools) are kept in `integer` (u64 values above INT64_MAX are
// refused), floats in `real`; an array keeps its elements by kind in `strings`, `integers` or
// `reals` (arrays of arrays are refused: nothing llama.cpp writes uses them).
struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType element_type = GgufType::U8;  // arrays only
  int64_t integer = 0;
  double real = 0.0;
  std::string text;
  std::vector<std::string> strings;
  std::vector<int64_t> integers;
  std::vector<double> reals;

  bool is_integer() const;
  bool is_real() const { return type == GgufType::F32 || type == GgufType::F64; }
  std::size_t array_size() const;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (row length)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // into the data section
  uint64_t bytes = 0;
  int64_t numel() const;
  int64_t cols() const { return ne.empty() ? 1 : ne[0]; }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
  // The shape outermost first, as safetensors and torch write it.
  std::vector<int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path);
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<std::string>& metadata_order() const { return metadata_order_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order

  const GgufValue* find(const std::string& key) const;
  // Typed reads; a missing key or one of another type throws naming the file and the key.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_real(const std::string& key) const;  // integers are accepted too
  bool get_bool(const std::string& key) const;
  std::optional<std::string> string_or(const std::string& key) const;
  std::optional<int64_t> int_or(const std::string& key) const;
  std::optional<double> real_or(const std::string& key) const;
  std::optional<bool> bool_or(const std::string& key) const;

  bool contains_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws naming file and tensor
  std::span<const std::byte> bytes(const GgufTensorInfo& t) const;
  // The same bytes, keeping the mapping alive as long as the pointer lives (no copy).
  std::shared_ptr<const std::byte> shared_bytes(const GgufTensorInfo& t) const;
  // F32/F16/BF16 and every block type widened to f32.
  std::vector<float> read_f32(const std::string& name) const;
  // Lets `rewrite` change a tensor's bytes where they lie, for a layout of the same size (the
  // decode kernels' Q4_0 octets), where the file was read into this process's own memory; returns
  // false, changing nothing, where it is mapped from the page cache (a write would copy its pages).
  // Shared bytes handed out before see the change.
  bool rewrite_in_place(const GgufTensorInfo& t,
                        const std::function<void(std::span<std::byte>)>& rewrite);

 private:
  GgufFile() = default;
  void parse();
  std::filesystem::path path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> metadata_order_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  struct Mapping;
  std::shared_ptr<const Mapping> map_;
};

// Builds a GGUF v3 file in memory: metadata in insertion order, tensors in insertion order at
// aligned offsets. write() replaces the file atomically.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}
  void set(const std::string& key, GgufValue value);
  void set_string(const std::string& key, std::string value);
  void set_u32(const std::string& key, uint32_t value);
  void set_i32(const std::string& key, int32_t value);
  void set_f32(const std::string& key, float value);
  void set_bool(const std::string& key, bool value);
  void set_strings(const std::string& key, std::vector<std::string> values);
  void set_f32s(const std::string& key, std::span<const float> values);
  void set_i32s(const std::string& key, std::span<const int32_t> values);
  // `shape` outermost first (as torch writes it); the bytes are `type`'s rows of shape.back().
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                  std::vector<std::byte> bytes);
  std::vector<std::byte> serialize() const;
  void write(const std::filesystem::path& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace lora
