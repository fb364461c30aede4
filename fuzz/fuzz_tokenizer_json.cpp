// tokenizer.json: the model (BPE vocab and merges), normalizers, pre-tokenizers, added tokens,
// post-processors and decoders; a tokenizer that loads encodes and decodes a fixed text.
#include <stdexcept>

#include "data/tokenizer/tokenizer.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = lora::fuzz::write_input("tokenizer.json", lora::fuzz::as_text(data, size));
  try {
    const auto tok = lora::data::Tokenizer::load(path);
    const auto enc = tok.encode_with_offsets(
        "Hello, world! 123 h\xC3\xA9llo \xE4\xBD\xA0\xE5\xA5\xBD\n\t  x", true);
    tok.decode(enc.ids);
    tok.decode(enc.ids, true);
  } catch (const std::exception&) {
  }
  return 0;
}
