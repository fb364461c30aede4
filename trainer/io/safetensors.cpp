#include "trainer/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/io/atomic_file.h"
#include "trainer/io/file_mapping.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

// The safetensors reference implementation refuses headers over 100 MB; so do we, so that a
// corrupt length never makes us parse (or allocate for) gigabytes of "JSON".
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void bad_file(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

[[noreturn]] void bad_tensor(const fs::path& path, const std::string& name,
                             const std::string& what) {
  throw std::runtime_error(path.string() + ": tensor '" + name + "': " + what);
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

// Parses one tensor entry of the header, checking everything that can be checked without the
// other entries.
TensorInfo parse_entry(const fs::path& path, const std::string& name,
                       const nlohmann::ordered_json& e, uint64_t data_size) {
  if (!e.is_object()) bad_tensor(path, name, "header entry is not a JSON object");
  auto dtype_it = e.find("dtype");
  auto shape_it = e.find("shape");
  auto offsets_it = e.find("data_offsets");
  if (dtype_it == e.end() || shape_it == e.end() || offsets_it == e.end())
    bad_tensor(path, name, "header entry needs dtype, shape and data_offsets");
  if (!dtype_it->is_string()) bad_tensor(path, name, "dtype is not a string");
  TensorInfo t;
  t.name = name;
  const auto dtype_name_str = dtype_it->get<std::string>();
  auto dtype = dtype_from_name(dtype_name_str);
  if (!dtype) bad_tensor(path, name, "unsupported dtype '" + dtype_name_str + "'");
  t.dtype = *dtype;

  if (!shape_it->is_array()) bad_tensor(path, name, "shape is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *shape_it) {
    if (!d.is_number_unsigned()) bad_tensor(path, name, "shape holds a non-integer or negative");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > uint64_t(std::numeric_limits<int64_t>::max()))
      bad_tensor(path, name, "shape dimension too large");
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
    numel *= dim;
    t.shape.push_back(static_cast<int64_t>(dim));
  }
  const uint64_t elem = dtype_size(t.dtype);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem)
    bad_tensor(path, name, "shape " + shape_to_string(t.shape) + " overflows");

  if (!offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    bad_tensor(path, name, "data_offsets must be two non-negative integers");
  t.begin = (*offsets_it)[0].get<uint64_t>();
  t.end = (*offsets_it)[1].get<uint64_t>();
  if (t.begin > t.end)
    bad_tensor(path, name,
               "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                   "] end before they begin");
  if (t.end > data_size)
    bad_tensor(path, name,
               "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                   "] run past the data section (" + std::to_string(data_size) +
                   " bytes; the file may be truncated)");
  if (t.end - t.begin != numel * elem)
    bad_tensor(path, name,
               "holds " + std::to_string(t.end - t.begin) + " bytes but shape " +
                   shape_to_string(t.shape) + " of " + dtype_name_str + " needs " +
                   std::to_string(numel * elem));
  return t;
}

}  // namespace

int64_t TensorInfo::numel() const { return shape_numel(shape); }

struct SafetensorsFile::Mapping : FileMapping {
  using FileMapping::FileMapping;
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  refuse_pickle(path);
  const OwnedFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) bad_file(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) bad_file(path, "not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    bad_file(path, "file is " + std::to_string(file_size) +
                       " bytes, too short for the 8-byte header length (truncated?)");
  // The mapping keeps the file alive once the descriptor closes.
  void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, file.fd, 0);
  if (addr == MAP_FAILED) bad_file(path, std::string("cannot mmap: ") + std::strerror(errno));

  SafetensorsFile f;
  f.path_ = path;
  f.map_ = std::make_unique<Mapping>(addr, file_size);
  const auto* base = static_cast<const std::byte*>(addr);

  const uint64_t header_len = read_u64_le(base);
  if (header_len > kMaxHeaderBytes)
    bad_file(path, "header length " + std::to_string(header_len) + " exceeds the " +
                       std::to_string(kMaxHeaderBytes) +
                       "-byte limit (corrupt or not safetensors)");
  if (header_len > file_size - 8)
    bad_file(path, "header length " + std::to_string(header_len) + " runs past the end of the " +
                       std::to_string(file_size) + "-byte file (truncated?)");
  if (header_len < 2) bad_file(path, "header is empty");
  const auto* header_begin = reinterpret_cast<const char*>(base + 8);
  auto header = nlohmann::ordered_json::parse(header_begin, header_begin + header_len, nullptr,
                                              /*allow_exceptions=*/false);
  if (header.is_discarded()) bad_file(path, "header is not well-formed JSON");
  if (!header.is_object()) bad_file(path, "header is not a JSON object");

  const uint64_t data_size = file_size - 8 - header_len;
  f.data_ = base + 8 + header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;  // MLX writes "__metadata__": null when it has none
      if (!entry.is_object()) bad_file(path, "__metadata__ is not a JSON object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) bad_file(path, "__metadata__ value of '" + k + "' is not a string");
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(path, name, entry, data_size));
  }

  // File order = data order; then no two tensors may share bytes.
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (std::size_t i = 1; i < f.tensors_.size(); ++i) {
    const auto& prev = f.tensors_[i - 1];
    const auto& cur = f.tensors_[i];
    if (cur.begin < prev.end)
      bad_tensor(path, cur.name,
                 "bytes [" + std::to_string(cur.begin) + ", " + std::to_string(cur.end) +
                     ") overlap tensor '" + prev.name + "' [" + std::to_string(prev.begin) + ", " +
                     std::to_string(prev.end) + ")");
  }
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) bad_tensor(path_, name, "not found in the file");
  return tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::bytes(const std::string& name) const {
  const auto& t = info(name);
  return {data_ + t.begin, static_cast<std::size_t>(t.end - t.begin)};
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const auto& t = info(name);
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16 &&
      t.dtype != DType::F64)
    bad_tensor(path_, name, "dtype " + std::string(dtype_name(t.dtype)) + " is not a float type");
  const auto raw = bytes(name);
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<float> out(n);
  // Offsets in the file need not be aligned to the element size: copy misaligned data first.
  if (reinterpret_cast<uintptr_t>(raw.data()) % dtype_size(t.dtype) != 0) {
    std::vector<uint64_t> aligned((raw.size() + 7) / 8);
    std::memcpy(aligned.data(), raw.data(), raw.size());
    convert_to_f32(t.dtype, aligned.data(), n, out.data());
  } else {
    convert_to_f32(t.dtype, raw.data(), n, out.data());
  }
  return out;
}

TensorData TensorData::from_f32(std::string name, std::vector<int64_t> shape,
                                std::span<const float> v) {
  return convert(std::move(name), DType::F32, std::move(shape), v);
}

TensorData TensorData::convert(std::string name, DType dtype, std::vector<int64_t> shape,
                               std::span<const float> v) {
  if (shape_numel(shape) != static_cast<int64_t>(v.size()))
    throw std::invalid_argument("tensor '" + name + "': " + std::to_string(v.size()) +
                                " values for shape " + shape_to_string(shape));
  TensorData t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * dtype_size(dtype));
  convert_from_f32(dtype, v.data(), v.size(), t.bytes.data());
  return t;
}

void write_safetensors(const fs::path& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorData*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorData* a, const TensorData* b) { return a->name < b->name; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const auto& t = *sorted[i];
    if (t.name == "__metadata__" || t.name.empty())
      throw std::invalid_argument(path.string() + ": invalid tensor name '" + t.name + "'");
    if (i > 0 && sorted[i - 1]->name == t.name)
      throw std::invalid_argument(path.string() + ": tensor '" + t.name + "' given twice");
    for (auto d : t.shape)
      if (d < 0)
        throw std::invalid_argument(path.string() + ": tensor '" + t.name +
                                    "' has a negative dimension");
    const uint64_t want = static_cast<uint64_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
    if (t.bytes.size() != want)
      throw std::invalid_argument(path.string() + ": tensor '" + t.name + "' has " +
                                  std::to_string(t.bytes.size()) + " bytes, shape " +
                                  shape_to_string(t.shape) + " needs " + std::to_string(want));
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + want}}};
    offset += want;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  std::vector<std::byte> out(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::byte* data = out.data() + 8 + text.size();
  for (const auto* t : sorted) {
    if (!t->bytes.empty()) std::memcpy(data, t->bytes.data(), t->bytes.size());
    data += t->bytes.size();
  }
  write_file_atomic(path, out);
}

namespace {

// A shard named in an index must be a plain file inside the model folder: no absolute paths, no
// "..", and no symlink that leads out of it.
fs::path shard_path(const fs::path& dir, const fs::path& index, const std::string& shard) {
  const fs::path rel(shard);
  const fs::path norm = rel.lexically_normal();
  if (shard.empty() || rel.is_absolute() || norm.empty() || norm == "." || *norm.begin() == ".." ||
      norm.filename().empty())
    bad_file(index, "shard '" + shard + "' is not a file name inside the model folder");
  const fs::path full = dir / norm;
  std::error_code ec;
  const fs::path real_dir = fs::weakly_canonical(dir, ec);
  const fs::path real_full = fs::weakly_canonical(full, ec);
  const auto rel_to_dir = real_full.lexically_relative(real_dir);
  if (ec || rel_to_dir.empty() || *rel_to_dir.begin() == "..")
    bad_file(index, "shard '" + shard + "' resolves outside the model folder");
  return full;
}

}  // namespace

WeightSet WeightSet::open_dir(const fs::path& dir) {
  WeightSet ws;
  if (fs::is_regular_file(dir)) {  // a single .safetensors file
    ws.files_.push_back(SafetensorsFile::open(dir));
  } else if (const auto index = dir / "model.safetensors.index.json"; fs::exists(index)) {
    const std::string text = [&] {
      std::ifstream in(index, std::ios::binary);
      if (!in) bad_file(index, "cannot read");
      return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) bad_file(index, "not a JSON object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) bad_file(index, "has no \"weight_map\" object");
    std::map<std::string, std::size_t> shard_index;
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string()) bad_file(index, "weight_map entry '" + name + "' is not a string");
      const auto s = shard.get<std::string>();
      auto [it, fresh] = shard_index.try_emplace(s, ws.files_.size());
      if (fresh) ws.files_.push_back(SafetensorsFile::open(shard_path(dir, index, s)));
      if (!ws.files_[it->second].contains(name))
        bad_file(index, "tensor '" + name + "' is mapped to shard '" + s + "' which lacks it");
      ws.where_[name] = it->second;
    }
    if (ws.files_.empty()) bad_file(index, "weight_map is empty");
  } else if (fs::exists(dir / "model.safetensors")) {
    ws.files_.push_back(SafetensorsFile::open(dir / "model.safetensors"));
  } else {
    for (const char* pickle : {"pytorch_model.bin", "model.pt", "model.pth", "model.ckpt"})
      if (fs::exists(dir / pickle)) refuse_pickle(dir / pickle);
    throw std::runtime_error(dir.string() +
                             ": no model.safetensors or model.safetensors.index.json");
  }
  // Tensors the index does not list are found in the file holding them; an unlisted name in two
  // files is ambiguous.
  const std::map<std::string, std::size_t> listed = ws.where_;
  for (std::size_t i = 0; i < ws.files_.size(); ++i) {
    for (const auto& t : ws.files_[i].tensors()) {
      if (listed.count(t.name)) continue;
      auto [it, fresh] = ws.where_.try_emplace(t.name, i);
      if (!fresh)
        bad_file(ws.files_[i].path(),
                 "tensor '" + t.name + "' is also in " + ws.files_[it->second].path().string());
    }
  }
  return ws;
}

bool WeightSet::contains(const std::string& name) const { return where_.count(name) != 0; }

const SafetensorsFile& WeightSet::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    const auto where = files_.size() == 1 ? files_[0].path().string()
                       : files_.empty()   ? std::string("model")
                                          : files_[0].path().parent_path().string();
    throw std::runtime_error(where + ": tensor '" + name + "' not found");
  }
  return files_[it->second];
}

const TensorInfo& WeightSet::info(const std::string& name) const {
  return file_of(name).info(name);
}

std::vector<float> WeightSet::read_f32(const std::string& name) const {
  return file_of(name).read_f32(name);
}

std::vector<std::string> WeightSet::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

void refuse_pickle(const fs::path& path) {
  static const std::set<std::string> kPickle{".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"};
  auto ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (kPickle.count(ext))
    throw std::runtime_error(
        path.string() +
        ": refusing to read a pickle checkpoint: loading pickle can run arbitrary code. Convert it "
        "to .safetensors first (for example with the safetensors Python package), then pass that "
        "file");
}

}  // namespace lora
