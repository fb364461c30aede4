// A JSONL split read with bounded memory. One pass reads every line, checks it and encodes its
// record (the checks and errors of read_jsonl and encode_records), and keeps per record only
// where its line lies, a hash of it and how many tokens it gives (24 bytes); a batch reads and
// encodes its records again from the file (pread). Memory grows with the number of records, not
// with their text: a 10 GB file of 1 KB records costs 240 MB of index, and one line at a time of
// text. The batches, their order and the examples in them are those of the in-memory path.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/dataset.h"
#include "data/dataset_encode.h"

namespace lora::data {

// What one pass over a split counted, as EncodedSet does, plus its fingerprint.
struct SplitSummary {
  int64_t examples = 0;
  int64_t truncated = 0;  // examples cut to max_seq_length
  int64_t tokens = 0;
  int64_t trained_tokens = 0;
  int64_t longest = 1;  // tokens of the longest example (at least 1)
  // FNV-1a (64-bit, hex) over every example's ids and loss flags in file order, each followed by
  // '\n': a resumed run checks its data is the same.
  std::string fingerprint;
};

// The FNV-1a state of `bytes` continued from `h` (start from kFnvOffset).
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
uint64_t fnv1a_update(uint64_t h, std::string_view bytes);
// The summary of examples held in memory (the same fields and fingerprint as a streamed split).
SplitSummary summarize(const EncodedSet& set);

class StreamedExamples : public ExampleSource {
 public:
  // Reads and encodes every record of `file` once; errors name file:line. `encoder` is used again
  // for every batch, so it (and the tokenizer it holds) is shared.
  StreamedExamples(const std::filesystem::path& file, std::shared_ptr<const RecordEncoder> encoder,
                   const ReadOptions& options = {});
  ~StreamedExamples() override;
  StreamedExamples(const StreamedExamples&) = delete;
  StreamedExamples& operator=(const StreamedExamples&) = delete;

  std::size_t size() const override { return index_.size(); }
  std::size_t length(std::size_t i) const override { return index_[i].tokens; }
  const Example& get(std::size_t i, Example& scratch) const override;

  const SplitSummary& summary() const { return summary_; }
  const std::filesystem::path& file() const { return file_; }
  // Bytes the index holds (what memory grows by per record).
  std::size_t index_bytes() const { return index_.capacity() * sizeof(Entry); }

 private:
  struct Entry {
    uint64_t offset;
    uint32_t line;    // 1-based (errors and Example::line)
    uint32_t bytes;   // the line's length
    uint32_t tokens;  // after truncation
    uint32_t hash;    // of the line's bytes: a file changed under the run is an error
  };
  std::filesystem::path file_;
  std::shared_ptr<const RecordEncoder> encoder_;
  RecordFormat format_ = RecordFormat::text;
  std::vector<Entry> index_;
  SplitSummary summary_;
  int fd_ = -1;
};

// A RecordEncoder that owns its tokenizer: what a streamed split keeps for its whole life.
std::shared_ptr<const RecordEncoder> make_shared_encoder(Tokenizer tokenizer,
                                                         const TokenizerConfig& config,
                                                         EncodeOptions options);

}  // namespace lora::data
