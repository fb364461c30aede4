// JSONL training data: every record format ({"text"}, prompt/completion, chat messages,
// instruction/input/output), one format per file, with the line cap.
#include <stdexcept>

#include "data/dataset.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = lora::fuzz::write_input("train.jsonl", lora::fuzz::as_text(data, size));
  try {
    lora::data::ReadOptions options;
    options.max_line_bytes = 1 << 16;
    lora::data::read_jsonl(path, options);
  } catch (const std::exception&) {
  }
  return 0;
}
