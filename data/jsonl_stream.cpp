#include "data/jsonl_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace lora::data {

namespace fs = std::filesystem;

uint64_t fnv1a_update(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

namespace {

// Adds one example to a running summary (the fingerprint's state in `hash`).
void count(SplitSummary& s, uint64_t& hash, const Example& ex) {
  ++s.examples;
  s.truncated += ex.truncated;
  s.tokens += int64_t(ex.ids.size());
  s.trained_tokens += ex.num_trained();
  s.longest = std::max<int64_t>(s.longest, int64_t(ex.ids.size()));
  hash = fnv1a_update(
      hash, {reinterpret_cast<const char*>(ex.ids.data()), ex.ids.size() * sizeof(int32_t)});
  hash = fnv1a_update(hash, {reinterpret_cast<const char*>(ex.trained.data()), ex.trained.size()});
  hash = fnv1a_update(hash, "\n");
}

uint32_t line_hash(std::string_view text) {
  const uint64_t h = fnv1a_update(kFnvOffset, text);
  return uint32_t(h ^ (h >> 32));
}

std::string hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

SplitSummary summarize(const EncodedSet& set) {
  SplitSummary s;
  uint64_t hash = kFnvOffset;
  for (const auto& ex : set.examples) count(s, hash, ex);
  s.fingerprint = hex(hash);
  return s;
}

StreamedExamples::StreamedExamples(const fs::path& file,
                                   std::shared_ptr<const RecordEncoder> encoder,
                                   const ReadOptions& options)
    : file_(file), encoder_(std::move(encoder)) {
  const std::string source = file.string();
  JsonlReader reader(file, options);
  uint64_t hash = kFnvOffset;
  while (auto line = reader.next()) {
    const Example ex = encode_checked(*encoder_, line->record, source);
    constexpr uint64_t most = std::numeric_limits<uint32_t>::max();
    if (line->bytes > most || line->record.line > most)
      throw std::runtime_error(source + ":" + std::to_string(line->record.line) +
                               ": a line over 4 GiB, or over 2^32 lines");
    index_.push_back({line->offset, uint32_t(line->record.line), uint32_t(line->bytes),
                      uint32_t(ex.ids.size()), line_hash(line->text)});
    count(summary_, hash, ex);
  }
  index_.shrink_to_fit();
  format_ = *reader.format();
  summary_.fingerprint = hex(hash);
  fd_ = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0)
    throw std::runtime_error(source + ": cannot open for reading: " + std::strerror(errno));
}

StreamedExamples::~StreamedExamples() {
  if (fd_ >= 0) ::close(fd_);
}

const Example& StreamedExamples::get(std::size_t i, Example& scratch) const {
  const Entry& e = index_.at(i);
  const std::string source = file_.string();
  std::string text(e.bytes, '\0');
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::pread(fd_, text.data() + done, text.size() - done, off_t(e.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw std::runtime_error(source + ":" + std::to_string(e.line) +
                               ": cannot read the record again (" +
                               (n < 0 ? std::strerror(errno) : "the file got shorter") + ")");
    done += std::size_t(n);
  }
  if (line_hash(text) != e.hash)
    throw std::runtime_error(source + ":" + std::to_string(e.line) +
                             ": the line differs from the one read before; was the file changed?");
  scratch = encode_checked(*encoder_, parse_record_line(text, format_, e.line, source), source);
  return scratch;
}

namespace {
// The tokenizer first, so the encoder's reference to it is valid from construction on.
struct OwningEncoder {
  OwningEncoder(Tokenizer t, const TokenizerConfig& config, EncodeOptions options)
      : tokenizer(std::move(t)), encoder(tokenizer, config, std::move(options)) {}
  Tokenizer tokenizer;
  RecordEncoder encoder;
};
}  // namespace

std::shared_ptr<const RecordEncoder> make_shared_encoder(Tokenizer tokenizer,
                                                         const TokenizerConfig& config,
                                                         EncodeOptions options) {
  auto owner = std::make_shared<OwningEncoder>(std::move(tokenizer), config, std::move(options));
  return {owner, &owner->encoder};
}

}  // namespace lora::data
