// GGUF files: the container (header, metadata of every type, tensor infos, offsets), every tensor
// widened to f32, and what the trainer builds from the metadata: the model config, the tokenizer
// (tokenizer.json equivalent, then parsed), the tokenizer config and the whole model.
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/model_config.h"

namespace {

template <class F>
void attempt(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = lora::fuzz::write_input("model.gguf", lora::fuzz::as_text(data, size));
  attempt([&] {
    const auto file = lora::GgufFile::open(path);
    for (const auto& t : file.tensors()) attempt([&] { file.read_f32(t.name); });
    attempt([&] { lora::gguf_model_config(file); });
    attempt(
        [&] { lora::data::Tokenizer::from_json(lora::gguf_tokenizer_json(file), path.string()); });
    attempt([&] { lora::gguf_tokenizer_config(file); });
    attempt([&] { lora::load_gguf_model(path); });
  });
  return 0;
}
