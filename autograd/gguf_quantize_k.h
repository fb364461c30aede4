// Encoders for the K-quant super-blocks (256 values): Q4_K and Q5_K (8 sub-blocks of 32 with a
// 6-bit scale and 6-bit minimum each) and Q6_K (16 sub-blocks of 16 with an int8 scale). Each
// sub-block is fitted by its own range (min/max, or the value of largest magnitude), the
// sub-block scales quantized against the super-block's largest; codes round to nearest. This is
// a direct fit, not llama.cpp's iterative search: errors are within a step, not minimal.
#pragma once
#include <cstdint>

namespace lora {

void quantize_q4_k_block(const float* x, uint8_t* block);
void quantize_q5_k_block(const float* x, uint8_t* block);
void quantize_q6_k_block(const float* x, uint8_t* block);

}  // namespace lora
