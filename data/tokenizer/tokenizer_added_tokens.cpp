#include "data/tokenizer/tokenizer_added_tokens.h"

#include <algorithm>

#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t start;
  return unicode::is_word_char(unicode::previous_code_point(s, s.size(), start));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t pos = 0;
  return unicode::is_word_char(unicode::next_code_point(s, pos));
}
// Start of the whitespace run that ends `s`.
std::size_t trailing_space_start(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start;
    if (!unicode::is_whitespace(unicode::previous_code_point(s, end, start))) break;
    end = start;
  }
  return end;
}
// Length of the whitespace run that starts `s`.
std::size_t leading_space_length(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t next = pos;
    if (!unicode::is_whitespace(unicode::next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}
}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<std::string> patterns,
                                     std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)) {
  nodes_.emplace_back();
  for (std::size_t t = 0; t < patterns.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;
    first_byte_[static_cast<unsigned char>(p[0])] = true;
    int32_t node = 0;
    for (unsigned char c : p) {
      int32_t next = child(node, c);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        auto& kids = nodes_[node].children;
        kids.insert(std::lower_bound(kids.begin(), kids.end(), std::pair{c, int32_t{-1}}),
                    {c, next});
        nodes_.emplace_back();
      }
      node = next;
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char byte) const {
  const auto& kids = nodes_[node].children;
  auto it = std::lower_bound(kids.begin(), kids.end(), std::pair{byte, int32_t{-1}});
  return it != kids.end() && it->first == byte ? it->second : -1;
}

std::pair<int32_t, std::size_t> AddedTokenMatcher::longest_at(std::string_view text,
                                                              std::size_t pos) const {
  std::pair<int32_t, std::size_t> best{-1, 0};
  int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) best = {nodes_[node].token, i + 1 - pos};
  }
  return best;
}

std::vector<AddedSplit> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<AddedSplit> out;
  if (text.empty()) return out;
  std::size_t start_offset = 0;  // end of the previous match
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [index, len] = longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    std::size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, even when this one is discarded
    if (token.single_word) {
      bool start_ok = start == 0 || !ends_with_word(text.substr(0, start));
      bool stop_ok = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!start_ok || !stop_ok) continue;
    }
    if (start < start_offset) continue;  // inside what an rstrip already took
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (start_offset < start) out.push_back({{start_offset, start}, -1});
    out.push_back({{start, stop}, token.id});
    start_offset = stop;
    pos = std::max(pos, stop);
  }
  if (start_offset < text.size()) out.push_back({{start_offset, text.size()}, -1});
  return out;
}

}  // namespace lora::data
