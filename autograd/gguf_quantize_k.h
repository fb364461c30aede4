// Encoders for the K-quant super-blocks (256 values): Q2_K (16 sub-blocks of 16 with a 4-bit
// scale and 4-bit minimum each), Q3_K (16 sub-blocks of 16 with a 6-bit signed scale), Q4_K and
// Q5_K (8 sub-blocks of 32 with a 6-bit scale and 6-bit minimum each) and Q6_K (16 sub-blocks of 16
// with an int8 scale). Each sub-block's step (and offset) is searched as llama.cpp's reference
// quantizer (no importance matrix) searches it: a few candidate steps around the range's, codes to
// nearest, a weighted least-squares refit, the least error kept; the sub-block scales are then
// quantized against the super-block's largest and the codes rounded again to the stored scales.
// The non-linear IQ4_NL (32 values) and IQ4_XS (256, eight sub-blocks of 32 with 6-bit scales)
// are searched as llama-quantize searches them without an importance matrix: each 32-element
// block's scale from fifteen candidates around the one that maps its extreme value onto the end
// of kIq4Values, least squares weighted by x^2, codes to the nearest level.
#pragma once
#include <cstdint>

namespace lora {

void quantize_q2_k_block(const float* x, uint8_t* block);
void quantize_q3_k_block(const float* x, uint8_t* block);
void quantize_q4_k_block(const float* x, uint8_t* block);
void quantize_q5_k_block(const float* x, uint8_t* block);
void quantize_q6_k_block(const float* x, uint8_t* block);
void quantize_iq4_nl_block(const float* x, uint8_t* block);
void quantize_iq4_xs_block(const float* x, uint8_t* block);

}  // namespace lora
