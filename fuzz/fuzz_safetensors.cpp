// safetensors files: the header (JSON with dtypes, shapes and offsets) and every tensor read
// back as f32.
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = lora::fuzz::write_input("model.safetensors", lora::fuzz::as_text(data, size));
  try {
    const auto file = lora::SafetensorsFile::open(path);
    for (const auto& t : file.tensors()) {
      file.bytes(t.name);
      try {
        file.read_f32(t.name);
      } catch (const std::exception&) {  // integer tensors are not widened
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}
