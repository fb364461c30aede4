#include "trainer/text_stream.h"

#include <algorithm>

namespace lora {

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopStrings::push(std::string_view piece) {
  if (stopped_) return {};
  pending_ += piece;
  std::size_t first = std::string::npos;
  for (const auto& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string before = pending_.substr(0, first);
    pending_.clear();
    return before;
  }
  // Hold back the longest tail of pending_ that a stop string begins with.
  std::size_t hold = 0;
  for (const auto& stop : stops_)
    for (std::size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStrings::finish() {
  if (stopped_) return {};
  return std::exchange(pending_, {});
}

TextStream::TextStream(const data::Tokenizer& tokenizer, std::span<const int32_t> prompt,
                       std::vector<std::string> stop_strings)
    : decoder_(tokenizer, prompt), stops_(std::move(stop_strings)) {}

std::string TextStream::push(int32_t id) { return stops_.push(decoder_.push(id)); }

std::string TextStream::finish() {
  std::string rest = stops_.push(decoder_.finish());
  return rest + stops_.finish();
}

}  // namespace lora
