#include "data/tokenizer/tokenizer_text.h"

#include <algorithm>
#include <stdexcept>

namespace lora::data {

NormalizedText::NormalizedText(std::string_view text, std::size_t offset, bool track)
    : text_(text), tracking_(track) {
  if (track) {
    align_.resize(text.size());
    for (std::size_t i = 0; i < text.size(); ++i)
      align_[i] = {static_cast<uint32_t>(offset + i), static_cast<uint32_t>(offset + i + 1)};
  }
}

OriginSpan NormalizedText::origin(std::size_t from, std::size_t to) const {
  if (!tracking_ || align_.empty()) return {};
  if (from >= align_.size()) {
    uint32_t end = align_.back().end;
    return {end, end};
  }
  if (to <= from) return {align_[from].start, align_[from].start};
  to = std::min(to, align_.size());
  OriginSpan span = align_[from];
  for (std::size_t i = from + 1; i < to; ++i) {
    span.start = std::min(span.start, align_[i].start);
    span.end = std::max(span.end, align_[i].end);
  }
  return span;
}

NormalizedText NormalizedText::slice(std::size_t from, std::size_t to) const {
  NormalizedText out;
  out.tracking_ = tracking_;
  out.text_.assign(text_, from, to - from);
  if (tracking_) out.align_.assign(align_.begin() + from, align_.begin() + to);
  return out;
}

void NormalizedText::append_from(const NormalizedText& src, std::size_t from, std::size_t to) {
  text_.append(src.text_, from, to - from);
  if (tracking_) align_.insert(align_.end(), src.align_.begin() + from, src.align_.begin() + to);
}

void NormalizedText::append_new(std::string_view bytes, OriginSpan origin) {
  text_.append(bytes);
  if (tracking_) align_.insert(align_.end(), bytes.size(), origin);
}

void NormalizedText::reserve(std::size_t n) {
  text_.reserve(n);
  if (tracking_) align_.reserve(n);
}

NormalizedText NormalizedText::empty_like(const NormalizedText& like) {
  NormalizedText out;
  out.tracking_ = like.tracking_;
  return out;
}

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw std::runtime_error(where + ": unknown split behavior \"" + name + "\"");
}

std::vector<PatternSplit> cover_matches(const std::vector<ByteRange>& matches, std::size_t size) {
  std::vector<PatternSplit> out;
  if (size == 0) return {{{0, 0}, false}};
  out.reserve(matches.size() * 2 + 1);
  std::size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) out.push_back({{prev, b}, false});
    out.push_back({{b, e}, true});
    prev = e;
  }
  if (prev != size) out.push_back({{prev, size}, false});
  return out;
}

void split_by(const NormalizedText& text, std::vector<PatternSplit> splits, SplitBehavior behavior,
              std::vector<NormalizedText>& out) {
  // Each kept range with a flag saying whether it is dropped.
  std::vector<std::pair<ByteRange, bool>> ranges;
  ranges.reserve(splits.size());
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const auto& s : splits) ranges.push_back({s.range, false});
      break;
    case SplitBehavior::Removed:
      for (const auto& s : splits) ranges.push_back({s.range, s.matched});
      break;
    case SplitBehavior::Contiguous: {
      bool previous = false;
      for (const auto& s : splits) {
        if (s.matched == previous && !ranges.empty())
          ranges.back().first.second = s.range.second;
        else
          ranges.push_back({s.range, false});
        previous = s.matched;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous = false;
      for (const auto& s : splits) {
        if (s.matched && !previous && !ranges.empty())
          ranges.back().first.second = s.range.second;
        else
          ranges.push_back({s.range, false});
        previous = s.matched;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous = false;
      for (auto it = splits.rbegin(); it != splits.rend(); ++it) {
        if (it->matched && !previous && !ranges.empty())
          ranges.back().first.first = it->range.first;
        else
          ranges.push_back({it->range, false});
        previous = it->matched;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    }
  }
  for (const auto& [range, removed] : ranges)
    if (!removed && range.second > range.first)
      out.push_back(text.slice(range.first, range.second));
}

}  // namespace lora::data
