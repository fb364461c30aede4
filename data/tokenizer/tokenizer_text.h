// Text on its way through a tokenizer: the transformed bytes, and (when offsets are wanted) for
// each byte the range of the original input it came from, so tokens map back to the input.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer/tokenizer_regex.h"

namespace lora::data {

struct OriginSpan {
  uint32_t start = 0, end = 0;  // byte range in the original input
};

class NormalizedText {
 public:
  NormalizedText() = default;
  // `text` is bytes [offset, offset + text.size()) of the original input.
  NormalizedText(std::string_view text, std::size_t offset, bool track);

  const std::string& str() const { return text_; }
  bool empty() const { return text_.empty(); }
  std::size_t size() const { return text_.size(); }
  bool tracking() const { return tracking_; }
  // Range of the original input that normalized bytes [from, to) came from.
  OriginSpan origin(std::size_t from, std::size_t to) const;

  NormalizedText slice(std::size_t from, std::size_t to) const;

  // Appends bytes [from, to) of `src`, keeping their origins.
  void append_from(const NormalizedText& src, std::size_t from, std::size_t to);
  // Appends new bytes that all come from `origin`.
  void append_new(std::string_view bytes, OriginSpan origin);
  void reserve(std::size_t n);
  // An empty text that tracks origins when `like` does.
  static NormalizedText empty_like(const NormalizedText& like);

 private:
  std::string text_;
  std::vector<OriginSpan> align_;  // one per byte of text_ when tracking_
  bool tracking_ = false;
};

// How a split keeps the pieces of text that a pattern matched (HF SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where);

// A covering of [0, size) by alternating unmatched/matched ranges, as HF patterns yield them.
struct PatternSplit {
  ByteRange range;
  bool matched;
};
std::vector<PatternSplit> cover_matches(const std::vector<ByteRange>& matches, std::size_t size);
// Every character for which `pred` holds is a match of its own.
template <typename Pred>
std::vector<PatternSplit> cover_char_matches(std::string_view text, Pred pred);

// Splits `text` by the covering, as HF NormalizedString::split does; empty pieces are dropped.
void split_by(const NormalizedText& text, std::vector<PatternSplit> splits, SplitBehavior behavior,
              std::vector<NormalizedText>& out);

}  // namespace lora::data

#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {
template <typename Pred>
std::vector<PatternSplit> cover_char_matches(std::string_view text, Pred pred) {
  std::vector<PatternSplit> out;
  std::size_t last = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t begin = pos;
    char32_t c = unicode::next_code_point(text, pos);
    if (pred(c)) {
      if (last < begin) out.push_back({{last, begin}, false});
      out.push_back({{begin, pos}, true});
      last = pos;
    }
  }
  if (last < text.size()) out.push_back({{last, text.size()}, false});
  if (out.empty()) out.push_back({{0, 0}, false});
  return out;
}
}  // namespace lora::data
