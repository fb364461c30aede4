// A model's config.json: architecture, dimensions (bounded), rope scaling, quantization, token ids.
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "fuzz/fuzz_input.h"
#include "trainer/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto json = nlohmann::json::parse(data, data + size, nullptr, false);
  if (json.is_discarded()) return 0;
  try {
    const auto config = lora::ModelConfig::from_json(json, "config.json");
    config.rope_inv_freq();
  } catch (const std::exception&) {
  }
  return 0;
}
