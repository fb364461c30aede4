#include "data/tokenizer/tokenizer_bpe.h"

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "data/tokenizer/tokenizer_byte_level.h"
#include "data/tokenizer/tokenizer_json.h"
#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
using nlohmann::json;

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct Merge {
  int32_t rank = -1;
  int32_t new_id = -1;
};

// Open-addressing table from a pair of token ids to their merge: the hot lookup of BPE.
class MergeTable {
 public:
  void build(const std::vector<std::pair<uint64_t, Merge>>& entries) {
    std::size_t cap = 16;
    shift_ = 60;
    while (cap < entries.size() * 2) {
      cap <<= 1;
      --shift_;
    }
    keys_.assign(cap, kEmpty);
    values_.assign(cap, Merge{});
    mask_ = cap - 1;
    for (const auto& [key, merge] : entries) {
      std::size_t slot = hash(key) & mask_;
      while (keys_[slot] != kEmpty && keys_[slot] != key) slot = (slot + 1) & mask_;
      if (keys_[slot] == key) continue;  // a repeated merge keeps its first (best) rank
      keys_[slot] = key;
      values_[slot] = merge;
    }
  }
  const Merge* find(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    uint64_t key = pack(a, b);
    std::size_t slot = hash(key) & mask_;
    while (true) {
      uint64_t k = keys_[slot];
      if (k == key) return &values_[slot];
      if (k == kEmpty) return nullptr;
      slot = (slot + 1) & mask_;
    }
  }
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  // Fibonacci hashing: the top bits of the product depend on every bit of both ids.
  std::size_t hash(uint64_t k) const { return (k * 0x9E3779B97F4A7C15ull) >> shift_; }
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  std::size_t mask_ = 0;
  int shift_ = 60;
};

// Token -> id, open addressing over the id_to_token strings: one probe array, no nodes, so a
// 262k-token vocab builds and looks up with few cache misses.
class VocabIndex {
 public:
  void build(const std::vector<std::string>& tokens, const std::vector<bool>& present) {
    std::size_t cap = 16;
    while (cap < tokens.size() * 2) cap <<= 1;
    slots_.assign(cap, kEmpty);
    mask_ = cap - 1;
    for (std::size_t id = 0; id < tokens.size(); ++id)
      if (present[id]) insert(tokens, static_cast<int32_t>(id));
  }
  int32_t find(const std::vector<std::string>& tokens, std::string_view s) const {
    if (slots_.empty()) return -1;
    uint64_t h = std::hash<std::string_view>{}(s);
    auto tag = static_cast<uint32_t>(h >> 32);
    for (std::size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      uint64_t v = slots_[slot];
      if (v == kEmpty) return -1;
      auto id = static_cast<int32_t>(v & 0xFFFFFFFFu);
      if (static_cast<uint32_t>(v >> 32) == tag && tokens[id] == s) return id;
    }
  }

 private:
  void insert(const std::vector<std::string>& tokens, int32_t id) {
    uint64_t h = std::hash<std::string_view>{}(tokens[id]);
    auto tag = static_cast<uint32_t>(h >> 32);
    for (std::size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      uint64_t v = slots_[slot];
      if (v == kEmpty) {
        slots_[slot] = (static_cast<uint64_t>(tag) << 32) | static_cast<uint32_t>(id);
        return;
      }
      if (tokens[v & 0xFFFFFFFFu] == tokens[id]) return;  // the same text twice: first id wins
    }
  }
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  std::vector<uint64_t> slots_;
  std::size_t mask_ = 0;
};

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t start, len;  // bytes of the piece; len 0 once merged into its left neighbour
};

struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std heap is a max-heap: the "largest" is the lowest rank, then the leftmost position.
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

constexpr std::size_t kMaxCachedLength = 256;
constexpr std::size_t kMaxCacheEntries = 200000;
}  // namespace

struct BpeModel::Impl {
  VocabIndex vocab;
  std::vector<std::string> id_to_token;
  std::vector<bool> has_id;
  MergeTable merges;
  std::optional<std::string> unk_token;
  std::optional<std::string> prefix, suffix;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::array<int32_t, 256> byte_fallback_ids{};  // id of "<0xAB>", or -1
  std::array<int32_t, 256> byte_level_ids{};     // id of each byte's ByteLevel character, or -1

  mutable std::mutex cache_mutex;
  mutable StringMap<std::vector<ModelToken>> cache;

  int32_t lookup(std::string_view s) const { return vocab.find(id_to_token, s); }

  // HF BPE::merge_word: the initial symbols of one piece, then all merges by rank.
  void merge_word(std::string_view text, bool byte_level, std::vector<ModelToken>& out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(text.size());
    auto add = [&](int32_t id, uint32_t start, uint32_t len) {
      int32_t index = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, index - 1, index + 1, start, len});
    };
    std::optional<std::pair<int32_t, uint32_t>> pending_unk;  // id, start
    uint32_t pending_unk_end = 0;
    auto flush_unk = [&] {
      if (pending_unk)
        add(pending_unk->first, pending_unk->second, pending_unk_end - pending_unk->second);
      pending_unk.reset();
    };
    const bool plain = !prefix && !suffix;
    std::string buffer;
    const auto& table = byte_level::table();
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t begin = pos;
      std::string_view ch;
      if (byte_level) {
        ch = table.byte_to_utf8[static_cast<unsigned char>(text[pos])];
        pos += 1;
      } else {
        pos += std::min(unicode::utf8_length(static_cast<unsigned char>(text[pos])),
                        text.size() - pos);
        ch = text.substr(begin, pos - begin);
      }
      bool is_first = begin == 0, is_last = pos == text.size();
      int32_t id;
      std::string_view s = ch;
      if (plain && byte_level) {
        id = byte_level_ids[static_cast<unsigned char>(text[begin])];
      } else {
        if (!plain) {
          buffer.clear();
          if (!is_first && prefix) buffer += *prefix;
          buffer += ch;
          if (is_last && suffix) buffer += *suffix;
          s = buffer;
        }
        id = lookup(s);
      }
      auto start = static_cast<uint32_t>(begin), len = static_cast<uint32_t>(pos - begin);
      if (id >= 0) {
        flush_unk();
        add(id, start, len);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (unsigned char b : s) all = all && byte_fallback_ids[b] >= 0;
        if (all) {
          // Each fallback byte token covers the whole character: offsets stay on characters.
          for (unsigned char b : s) add(byte_fallback_ids[b], start, len);
          continue;
        }
      }
      if (unk_token) {
        int32_t unk_id = lookup(*unk_token);
        if (pending_unk && fuse_unk) {
          pending_unk_end = start + len;
        } else {
          flush_unk();
          pending_unk = {unk_id, start};
          pending_unk_end = start + len;
        }
      }
    }
    flush_unk();
    if (!symbols.empty()) symbols.back().next = -1;
    apply_merges(symbols);
    for (const auto& s : symbols)
      if (s.len > 0) out.push_back({s.id, s.start, s.start + s.len});
  }

  void apply_merges(std::vector<Symbol>& symbols) const {
    if (symbols.size() < 2) return;
    std::vector<QueuedMerge> queue;
    queue.reserve(symbols.size());
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
      if (const Merge* m = merges.find(symbols[i].id, symbols[i + 1].id))
        queue.push_back({m->rank, static_cast<int32_t>(i), m->new_id});
    std::make_heap(queue.begin(), queue.end());
    while (!queue.empty()) {
      std::pop_heap(queue.begin(), queue.end());
      QueuedMerge top = queue.back();
      queue.pop_back();
      Symbol& left = symbols[top.pos];
      if (left.len == 0 || left.next < 0) continue;
      Symbol right = symbols[left.next];
      const Merge* current = merges.find(left.id, right.id);
      if (current == nullptr || current->new_id != top.new_id) continue;  // stale entry
      left.id = top.new_id;
      left.len = right.start + right.len - left.start;
      symbols[left.next].len = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      auto push = [&](int32_t pos, int32_t a, int32_t b) {
        if (const Merge* m = merges.find(a, b)) {
          queue.push_back({m->rank, pos, m->new_id});
          std::push_heap(queue.begin(), queue.end());
        }
      };
      if (left.prev >= 0) push(left.prev, symbols[left.prev].id, left.id);
      if (left.next >= 0) push(top.pos, left.id, symbols[left.next].id);
    }
  }
};

BpeModel::BpeModel() : impl_(std::make_unique<Impl>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

BpeModel BpeModel::from_json(const json& m, const std::string& where) {
  json_field::require_object(m, where);
  return from_tables(m, tables_from_json(m, where), where);
}

BpeModel BpeModel::from_tables(const json& m, BpeTables tables, const std::string& where) {
  BpeModel model;
  Impl& impl = *model.impl_;
  json_field::require_object(m, where);
  if (auto it = m.find("vocab"); it != m.end() && !it->is_null() && !it->is_object())
    throw std::runtime_error(where + ".vocab: expected an object of token -> id");
  if (auto it = m.find("merges"); it != m.end() && !it->is_null() && !it->is_array())
    throw std::runtime_error(where + ".merges: expected a list");
  std::string type = json_field::get_string(m, "type", "BPE", where);
  if (type != "BPE")
    throw std::runtime_error(where + ": unsupported model type \"" + type +
                             "\" (only BPE is supported)");
  if (auto it = m.find("dropout"); it != m.end() && !it->is_null()) {
    if (!it->is_number()) throw std::runtime_error(where + ": \"dropout\" must be a number");
    if (it->get<double>() != 0.0)
      throw std::runtime_error(where + ": BPE dropout is not supported (it makes encoding random)");
  }
  if (auto it = m.find("unk_token"); it != m.end() && !it->is_null()) {
    if (!it->is_string()) throw std::runtime_error(where + ": \"unk_token\" must be a string");
    impl.unk_token = it->get<std::string>();
  }
  for (auto [key, field] : {std::pair{"continuing_subword_prefix", &impl.prefix},
                            std::pair{"end_of_word_suffix", &impl.suffix}}) {
    if (auto it = m.find(key); it != m.end() && !it->is_null()) {
      if (!it->is_string()) throw std::runtime_error(where + ": \"" + key + "\" must be a string");
      *field = it->get<std::string>();
    }
  }
  impl.fuse_unk = json_field::get_bool(m, "fuse_unk", false, where);
  impl.byte_fallback = json_field::get_bool(m, "byte_fallback", false, where);
  impl.ignore_merges = json_field::get_bool(m, "ignore_merges", false, where);

  if (!tables.has_vocab) throw std::runtime_error(where + ": missing field \"vocab\"");
  int64_t max_id = -1;
  for (const auto& [token, id] : tables.vocab) {
    unicode::require_valid_utf8(token, where + ".vocab");
    max_id = std::max<int64_t>(max_id, id);
  }
  if (max_id > static_cast<int64_t>(tables.vocab.size()) * 4 + 1024)
    throw std::runtime_error(where + ".vocab: ids are too sparse (largest " +
                             std::to_string(max_id) + " for " +
                             std::to_string(tables.vocab.size()) + " tokens)");
  impl.id_to_token.resize(static_cast<std::size_t>(max_id + 1));
  impl.has_id.resize(static_cast<std::size_t>(max_id + 1));
  for (auto& [token, id] : tables.vocab) {
    impl.id_to_token[id] = std::move(token);
    impl.has_id[id] = true;
  }
  tables.vocab = {};
  impl.vocab.build(impl.id_to_token, impl.has_id);
  if (impl.unk_token && impl.lookup(*impl.unk_token) < 0)
    throw std::runtime_error(where + ": unk_token \"" + *impl.unk_token + "\" is not in the vocab");

  static constexpr char kHex[] = "0123456789ABCDEF";
  const auto& table = byte_level::table();
  for (int b = 0; b < 256; ++b) {
    std::string name = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    impl.byte_fallback_ids[b] = impl.lookup(name);
    impl.byte_level_ids[b] = impl.lookup(table.byte_to_utf8[b]);
  }

  std::vector<std::pair<uint64_t, Merge>> entries;
  entries.reserve(tables.merges.size());
  std::size_t prefix_len = impl.prefix ? impl.prefix->size() : 0;
  std::string merged;
  for (std::size_t rank = 0; rank < tables.merges.size(); ++rank) {
    const auto& [a, b] = tables.merges[rank];
    auto here = [&] { return where + ".merges[" + std::to_string(rank) + "]"; };
    int32_t ia = impl.lookup(a), ib = impl.lookup(b);
    if (ia < 0) throw std::runtime_error(here() + ": token \"" + a + "\" is not in the vocab");
    if (ib < 0) throw std::runtime_error(here() + ": token \"" + b + "\" is not in the vocab");
    merged.assign(a);
    if (prefix_len <= b.size()) merged.append(b, prefix_len);
    int32_t id = impl.lookup(merged);
    if (id < 0)
      throw std::runtime_error(here() + ": merged token \"" + merged + "\" is not in the vocab");
    entries.push_back({MergeTable::pack(ia, ib), Merge{static_cast<int32_t>(rank), id}});
  }
  impl.merges.build(entries);
  return model;
}

void BpeModel::tokenize(std::string_view text, bool byte_level,
                        std::vector<ModelToken>& out) const {
  const Impl& impl = *impl_;
  if (text.empty()) return;
  if (impl.ignore_merges) {
    int32_t id;
    if (byte_level) {
      std::string mapped;
      const auto& table = byte_level::table();
      for (unsigned char c : text) mapped += table.byte_to_utf8[c];
      id = impl.lookup(mapped);
    } else {
      id = impl.lookup(text);
    }
    if (id >= 0) {
      out.push_back({id, 0, static_cast<uint32_t>(text.size())});
      return;
    }
  }
  bool cacheable = text.size() < kMaxCachedLength;
  if (cacheable) {
    std::lock_guard lock(impl.cache_mutex);
    if (auto it = impl.cache.find(text); it != impl.cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::size_t first = out.size();
  impl.merge_word(text, byte_level, out);
  if (cacheable) {
    std::lock_guard lock(impl.cache_mutex);
    if (impl.cache.size() < kMaxCacheEntries)
      impl.cache.emplace(std::string(text),
                         std::vector<ModelToken>(out.begin() + first, out.end()));
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  int32_t id = impl_->lookup(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= impl_->has_id.size() || !impl_->has_id[id])
    return nullptr;
  return &impl_->id_to_token[id];
}

int64_t BpeModel::max_id() const { return static_cast<int64_t>(impl_->has_id.size()) - 1; }

}  // namespace lora::data
