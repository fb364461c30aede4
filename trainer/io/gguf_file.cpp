#include "trainer/io/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "trainer/io/atomic_file.h"
#include "trainer/io/file_mapping.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

[[noreturn]] void bad(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

// A bounds-checked cursor over the mapped bytes: every read names the field it is for, so a
// truncated or corrupt file says where it went wrong.
class Cursor {
 public:
  Cursor(const fs::path& path, const std::byte* data, uint64_t size)
      : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  template <class T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const std::string& field) {
    const auto len = read<uint64_t>(field + " (string length)");
    if (len > left())
      bad(path_, field + ": string length " + std::to_string(len) +
                     " runs past the end of the file (" + std::to_string(left()) + " bytes left)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(len));
    pos_ += len;
    return s;
  }

  // A count of items each at least `min_bytes` long: refused when the rest of the file cannot
  // hold that many, so a corrupt count never drives an allocation.
  uint64_t count(const std::string& field, uint64_t min_bytes) {
    const auto n = read<uint64_t>(field);
    if (min_bytes > 0 && n > left() / min_bytes)
      bad(path_, field + " " + std::to_string(n) + " is more than the " + std::to_string(left()) +
                     " bytes left can hold");
    return n;
  }

  [[noreturn]] void fail(const std::string& what) const { bad(path_, what); }

 private:
  void need(uint64_t n, const std::string& field) const {
    if (n > left())
      bad(path_, "truncated: " + field + " needs " + std::to_string(n) + " bytes at offset " +
                     std::to_string(pos_) + ", the file has " + std::to_string(size_));
  }
  const fs::path& path_;
  const std::byte* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

uint64_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    case GgufType::String:
      return 8;  // the length alone
    case GgufType::Array:
      return 12;  // element type + count
  }
  return 0;
}

GgufType value_type(Cursor& c, const std::string& field) {
  const auto raw = c.read<uint32_t>(field + " (value type)");
  if (raw > static_cast<uint32_t>(GgufType::F64))
    c.fail(field + ": unknown value type " + std::to_string(raw));
  return static_cast<GgufType>(raw);
}

// One scalar into `integer` / `real` / `text`.
void read_scalar(Cursor& c, GgufType t, const std::string& field, int64_t& integer, double& real,
                 std::string& text) {
  switch (t) {
    case GgufType::U8:
      integer = c.read<uint8_t>(field);
      return;
    case GgufType::I8:
      integer = c.read<int8_t>(field);
      return;
    case GgufType::U16:
      integer = c.read<uint16_t>(field);
      return;
    case GgufType::I16:
      integer = c.read<int16_t>(field);
      return;
    case GgufType::U32:
      integer = c.read<uint32_t>(field);
      return;
    case GgufType::I32:
      integer = c.read<int32_t>(field);
      return;
    case GgufType::I64:
      integer = c.read<int64_t>(field);
      return;
    case GgufType::U64: {
      const auto v = c.read<uint64_t>(field);
      if (v > uint64_t(std::numeric_limits<int64_t>::max()))
        c.fail(field + ": u64 value " + std::to_string(v) + " is out of range");
      integer = static_cast<int64_t>(v);
      return;
    }
    case GgufType::Bool: {
      const auto v = c.read<uint8_t>(field);
      if (v > 1) c.fail(field + ": bool value " + std::to_string(v) + " is neither 0 nor 1");
      integer = v;
      return;
    }
    case GgufType::F32:
      real = c.read<float>(field);
      return;
    case GgufType::F64:
      real = c.read<double>(field);
      return;
    case GgufType::String:
      text = c.string(field);
      return;
    case GgufType::Array:
      c.fail(field + ": arrays of arrays are not supported");
  }
}

GgufValue read_value(Cursor& c, const std::string& field) {
  GgufValue v;
  v.type = value_type(c, field);
  if (v.type != GgufType::Array) {
    read_scalar(c, v.type, field, v.integer, v.real, v.text);
    return v;
  }
  v.element_type = value_type(c, field + " (array element)");
  if (v.element_type == GgufType::Array) c.fail(field + ": arrays of arrays are not supported");
  const uint64_t n = c.count(field + " (array length)", scalar_bytes(v.element_type));
  const auto size = static_cast<std::size_t>(n);
  int64_t integer = 0;
  double real = 0.0;
  std::string text;
  if (v.element_type == GgufType::String)
    v.strings.reserve(size);
  else if (v.element_type == GgufType::F32 || v.element_type == GgufType::F64)
    v.reals.reserve(size);
  else
    v.integers.reserve(size);
  for (std::size_t i = 0; i < size; ++i) {
    read_scalar(c, v.element_type, field, integer, real, text);
    if (v.element_type == GgufType::String)
      v.strings.push_back(std::move(text));
    else if (v.element_type == GgufType::F32 || v.element_type == GgufType::F64)
      v.reals.push_back(real);
    else
      v.integers.push_back(integer);
  }
  return v;
}

GgufTensorInfo read_tensor_info(Cursor& c, uint64_t index) {
  const std::string field = "tensor info " + std::to_string(index);
  GgufTensorInfo t;
  t.name = c.string(field + " name");
  const std::string where = "tensor '" + t.name + "'";
  const auto n_dims = c.read<uint32_t>(where + " n_dims");
  if (n_dims == 0 || n_dims > kMaxDims)
    c.fail(where + ": n_dims " + std::to_string(n_dims) + " is not between 1 and " +
           std::to_string(kMaxDims));
  uint64_t numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const auto ne = c.read<uint64_t>(where + " ne[" + std::to_string(d) + "]");
    if (ne > uint64_t(std::numeric_limits<int32_t>::max()) ||
        (ne != 0 && numel > (uint64_t(1) << 48) / ne))
      c.fail(where + ": dimension " + std::to_string(d) + " = " + std::to_string(ne) +
             " is absurdly large");
    numel *= ne;
    t.ne.push_back(static_cast<int64_t>(ne));
  }
  const auto type_id = c.read<uint32_t>(where + " type");
  const auto type = ggml_type_from_id(type_id);
  if (!type)
    c.fail(where + ": tensor type " + ggml_type_id_name(type_id) + " (" + std::to_string(type_id) +
           ") is not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, "
           "IQ4_XS, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0 and MXFP4 "
           "are)");
  t.type = *type;
  if (t.ne[0] % ggml_block_elems(t.type) != 0)
    c.fail(where + ": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
           std::string(ggml_type_name(t.type)) + " block size " +
           std::to_string(ggml_block_elems(t.type)));
  t.offset = c.read<uint64_t>(where + " offset");
  t.bytes =
      ggml_row_bytes(t.type, t.ne[0]) * (t.ne[0] == 0 ? 0 : numel / static_cast<uint64_t>(t.ne[0]));
  return t;
}

}  // namespace

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
      return true;
    default:
      return false;
  }
}

std::size_t GgufValue::array_size() const {
  return strings.size() + integers.size() + reals.size();
}

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view names[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                               "i32", "f32", "bool", "string", "array",
                                               "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(names) ? names[i] : "unknown";
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

struct GgufFile::Mapping : FileMapping {
  Mapping(void* a, std::size_t s, bool own) : FileMapping(a, s), own_pages(own) {}
  bool own_pages;  // read into this process's memory (read_into_huge_pages), not mapped
};

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

namespace {

// The file's bytes in anonymous memory that the kernel may back with 2 MiB pages (MADV_HUGEPAGE),
// or nullptr where that is not worth it. A decode step reads every weight once per token, and
// with the page cache's 4 KiB pages the TLB misses cost more than the products on a virtual
// machine (a Qwen2.5-0.5B-shape Q4_0 file decoded 3-4 tokens/s mapped, README "Huge pages").
// Files above a quarter of the RAM stay mapped from the page cache, which the kernel can drop
// under memory pressure, where anonymous memory would have to be swapped.
void* read_into_huge_pages(int fd, std::size_t size, const fs::path& path) {
  const long page = ::sysconf(_SC_PAGESIZE), pages = ::sysconf(_SC_PHYS_PAGES);
  if (page <= 0 || pages <= 0 || size > static_cast<std::size_t>(page) * pages / 4) return nullptr;
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (addr == MAP_FAILED) return nullptr;
  ::madvise(addr, size, MADV_HUGEPAGE);
  auto* out = static_cast<char*>(addr);
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(done));
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int err = n < 0 ? errno : EIO;
    ::munmap(addr, size);
    bad(path, std::string("read failed: ") + std::strerror(err));
  }
  ::mprotect(addr, size, PROT_READ);
  return addr;
}

}  // namespace

GgufFile GgufFile::open(const fs::path& path) {
  GgufFile f;
  f.path_ = path;
  const OwnedFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) bad(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) bad(path, "not a regular file");
  const auto size = static_cast<std::size_t>(st.st_size);
  void* addr = nullptr;
  if (size > 0) addr = read_into_huge_pages(file.fd, size, path);
  const bool own_pages = addr != nullptr;
  if (size > 0 && !addr) {
    // MAP_POPULATE faults every page in now (as llama.cpp's loader does), so the first forward
    // pass does not take a page fault per 4 KiB of weights (a third of a 0.5B model's prompt).
    addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, file.fd, 0);
    if (addr == MAP_FAILED) bad(path, std::string("mmap failed: ") + std::strerror(errno));
  }
  f.map_ = std::make_shared<const Mapping>(addr, size, own_pages);
  f.parse();
  return f;
}

void GgufFile::parse() {
  Cursor c(path_, map_->bytes(), map_->size);
  const auto magic = c.read<uint32_t>("magic");
  if (std::memcmp(&magic, "GGUF", 4) != 0) c.fail("not a GGUF file (no \"GGUF\" magic)");
  version_ = c.read<uint32_t>("version");
  if (version_ == 1) c.fail("GGUF version 1 is not supported (versions 2 and 3 are)");
  if (version_ != 2 && version_ != 3)
    c.fail("GGUF version " + std::to_string(version_) +
           " is not supported (versions 2 and 3 are; a big-endian file reads as a huge version)");
  // The smallest tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
  const uint64_t n_tensors = c.count("tensor count", 32);
  const uint64_t n_kv = c.count("metadata count", 13);  // empty key, type, one byte
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("metadata key " + std::to_string(i));
    GgufValue v = read_value(c, "metadata '" + key + "'");
    if (metadata_.count(key)) c.fail("metadata '" + key + "' appears twice");
    metadata_order_.push_back(key);
    metadata_.emplace(std::move(key), std::move(v));
  }
  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufType::U32 || a->integer == 0 || (a->integer & (a->integer - 1)) != 0)
      c.fail("metadata 'general.alignment' must be a u32 power of two, got " +
             std::string(gguf_type_name(a->type)) + " " + std::to_string(a->integer));
    alignment_ = static_cast<uint64_t>(a->integer);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t = read_tensor_info(c, i);
    if (index_.count(t.name)) c.fail("tensor '" + t.name + "' appears twice");
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t file_size = map_->size;
  if (!tensors_.empty() && data_offset_ > file_size)
    c.fail("truncated: the data section would start at " + std::to_string(data_offset_) +
           ", past the end of the file (" + std::to_string(file_size) + " bytes)");
  const uint64_t data_size = file_size - std::min(data_offset_, file_size);
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    const std::string where = "tensor '" + t.name + "'";
    if (t.offset % alignment_ != 0)
      c.fail(where + ": offset " + std::to_string(t.offset) +
             " is not a multiple of the alignment " + std::to_string(alignment_));
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      c.fail(where + ": bytes [" + std::to_string(t.offset) + ", " +
             std::to_string(t.offset + t.bytes) + ") run past the data section (" +
             std::to_string(data_size) + " bytes; the file may be truncated)");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset)
      c.fail("tensor '" + by_offset[i - 1]->name + "' overlaps tensor '" + by_offset[i]->name +
             "'");
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void bad_key(const fs::path& path, const std::string& key, const GgufValue& v,
                          const char* want) {
  bad(path,
      "metadata '" + key + "' is " + std::string(gguf_type_name(v.type)) + ", expected " + want);
}
}  // namespace

std::optional<std::string> GgufFile::string_or(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::String) bad_key(path_, key, *v, "a string");
  return v->text;
}

std::optional<int64_t> GgufFile::int_or(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) bad_key(path_, key, *v, "an integer");
  return v->integer;
}

std::optional<double> GgufFile::real_or(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_real()) return v->real;
  if (v->is_integer()) return static_cast<double>(v->integer);
  bad_key(path_, key, *v, "a number");
}

std::optional<bool> GgufFile::bool_or(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::Bool) bad_key(path_, key, *v, "a bool");
  return v->integer != 0;
}

namespace {
template <class T>
T required(const fs::path& path, const std::string& key, std::optional<T> v) {
  if (!v) bad(path, "metadata '" + key + "' is missing");
  return *std::move(v);
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  return required(path_, key, string_or(key));
}
int64_t GgufFile::get_int(const std::string& key) const {
  return required(path_, key, int_or(key));
}
double GgufFile::get_real(const std::string& key) const {
  return required(path_, key, real_or(key));
}
bool GgufFile::get_bool(const std::string& key) const { return required(path_, key, bool_or(key)); }

bool GgufFile::contains_tensor(const std::string& name) const { return index_.count(name) != 0; }

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) bad(path_, "tensor '" + name + "' not found");
  return tensors_[it->second];
}

std::span<const std::byte> GgufFile::bytes(const GgufTensorInfo& t) const {
  return {map_->bytes() + data_offset_ + t.offset, static_cast<std::size_t>(t.bytes)};
}

std::shared_ptr<const std::byte> GgufFile::shared_bytes(const GgufTensorInfo& t) const {
  return {map_, map_->bytes() + data_offset_ + t.offset};
}

bool GgufFile::rewrite_in_place(const GgufTensorInfo& t,
                                const std::function<void(std::span<std::byte>)>& rewrite) {
  if (!map_->own_pages) return false;
  // The whole mapping changes protection, not the tensor's pages alone: a range inside a 2 MiB
  // page would split it into small ones.
  if (::mprotect(map_->addr, map_->size, PROT_READ | PROT_WRITE) != 0) return false;
  auto* at = static_cast<std::byte*>(map_->addr) + data_offset_ + t.offset;
  try {
    rewrite({at, static_cast<std::size_t>(t.bytes)});
  } catch (...) {
    ::mprotect(map_->addr, map_->size, PROT_READ);
    throw;
  }
  ::mprotect(map_->addr, map_->size, PROT_READ);
  return true;
}

std::vector<float> GgufFile::read_f32(const std::string& name) const {
  const GgufTensorInfo& t = tensor(name);
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  const auto b = bytes(t);
  const uint64_t row_bytes = ggml_row_bytes(t.type, t.cols());
  for (int64_t r = 0; r < t.rows(); ++r)
    ggml_dequantize_row(t.type, b.data() + static_cast<uint64_t>(r) * row_bytes, t.cols(),
                        out.data() + r * t.cols());
  return out;
}

namespace {

class Bytes {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  void string(const std::string& s) {
    put<uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
  }
  void pad_to(uint64_t alignment) {
    while (out.size() % alignment != 0) out.push_back(std::byte{0});
  }
  std::vector<std::byte> out;
};

void put_scalar(Bytes& b, GgufType t, int64_t integer, double real, const std::string& text) {
  switch (t) {
    case GgufType::U8:
    case GgufType::Bool:
      return b.put<uint8_t>(static_cast<uint8_t>(integer));
    case GgufType::I8:
      return b.put<int8_t>(static_cast<int8_t>(integer));
    case GgufType::U16:
      return b.put<uint16_t>(static_cast<uint16_t>(integer));
    case GgufType::I16:
      return b.put<int16_t>(static_cast<int16_t>(integer));
    case GgufType::U32:
      return b.put<uint32_t>(static_cast<uint32_t>(integer));
    case GgufType::I32:
      return b.put<int32_t>(static_cast<int32_t>(integer));
    case GgufType::U64:
      return b.put<uint64_t>(static_cast<uint64_t>(integer));
    case GgufType::I64:
      return b.put<int64_t>(integer);
    case GgufType::F32:
      return b.put<float>(static_cast<float>(real));
    case GgufType::F64:
      return b.put<double>(real);
    case GgufType::String:
      return b.string(text);
    case GgufType::Array:
      throw std::invalid_argument("GgufWriter: arrays of arrays are not supported");
  }
}

void put_value(Bytes& b, const GgufValue& v) {
  b.put<uint32_t>(static_cast<uint32_t>(v.type));
  if (v.type != GgufType::Array) return put_scalar(b, v.type, v.integer, v.real, v.text);
  b.put<uint32_t>(static_cast<uint32_t>(v.element_type));
  b.put<uint64_t>(v.array_size());
  for (const auto& s : v.strings) put_scalar(b, v.element_type, 0, 0.0, s);
  for (int64_t i : v.integers) put_scalar(b, v.element_type, i, 0.0, {});
  for (double r : v.reals) put_scalar(b, v.element_type, 0, r, {});
}

GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

GgufValue array_of(GgufType element) {
  GgufValue v;
  v.type = GgufType::Array;
  v.element_type = element;
  return v;
}

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::set_string(const std::string& key, std::string value) {
  GgufValue v = scalar(GgufType::String);
  v.text = std::move(value);
  set(key, std::move(v));
}

void GgufWriter::set_u32(const std::string& key, uint32_t value) {
  GgufValue v = scalar(GgufType::U32);
  v.integer = value;
  set(key, std::move(v));
}

void GgufWriter::set_i32(const std::string& key, int32_t value) {
  GgufValue v = scalar(GgufType::I32);
  v.integer = value;
  set(key, std::move(v));
}

void GgufWriter::set_f32(const std::string& key, float value) {
  GgufValue v = scalar(GgufType::F32);
  v.real = value;
  set(key, std::move(v));
}

void GgufWriter::set_bool(const std::string& key, bool value) {
  GgufValue v = scalar(GgufType::Bool);
  v.integer = value ? 1 : 0;
  set(key, std::move(v));
}

void GgufWriter::set_strings(const std::string& key, std::vector<std::string> values) {
  GgufValue v = array_of(GgufType::String);
  v.strings = std::move(values);
  set(key, std::move(v));
}

void GgufWriter::set_f32s(const std::string& key, std::span<const float> values) {
  GgufValue v = array_of(GgufType::F32);
  v.reals.assign(values.begin(), values.end());
  set(key, std::move(v));
}

void GgufWriter::set_i32s(const std::string& key, std::span<const int32_t> values) {
  GgufValue v = array_of(GgufType::I32);
  v.integers.assign(values.begin(), values.end());
  set(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                            std::vector<std::byte> bytes) {
  if (shape.empty() || shape.size() > kMaxDims)
    throw std::invalid_argument("GgufWriter: tensor '" + name + "' needs 1 to 4 dimensions");
  int64_t rows = 1;
  for (std::size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  if (bytes.size() != ggml_row_bytes(type, shape.back()) * static_cast<uint64_t>(rows))
    throw std::invalid_argument("GgufWriter: tensor '" + name + "' has " +
                                std::to_string(bytes.size()) + " bytes, its shape and " +
                                std::string(ggml_type_name(type)) + " need " +
                                std::to_string(ggml_row_bytes(type, shape.back()) * rows));
  tensors_.push_back({name, type, std::move(shape), std::move(bytes)});
}

std::vector<std::byte> GgufWriter::serialize() const {
  Bytes b;
  b.out.insert(b.out.end(), {std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}});
  b.put<uint32_t>(3);
  b.put<uint64_t>(tensors_.size());
  const bool set_alignment = alignment_ != 32;
  b.put<uint64_t>(metadata_.size() + (set_alignment ? 1 : 0));
  if (set_alignment) {
    b.string("general.alignment");
    GgufValue a = scalar(GgufType::U32);
    a.integer = static_cast<int64_t>(alignment_);
    put_value(b, a);
  }
  for (const auto& [key, value] : metadata_) {
    b.string(key);
    put_value(b, value);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    b.string(t.name);
    b.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      b.put<uint64_t>(static_cast<uint64_t>(*it));
    b.put<uint32_t>(static_cast<uint32_t>(t.type));
    b.put<uint64_t>(offset);
    offset += (t.bytes.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  b.pad_to(alignment_);
  for (const auto& t : tensors_) {
    b.out.insert(b.out.end(), t.bytes.begin(), t.bytes.end());
    b.pad_to(alignment_);
  }
  return std::move(b.out);
}

void GgufWriter::write(const fs::path& path) const { write_file_atomic(path, serialize()); }

}  // namespace lora
