// The writers' last line against diverged numbers: no adapter or checkpoint tensor is written
// with an inf or NaN in it.
#pragma once
#include <cstdint>
#include <span>
#include <string>

namespace lora {

// The index of the first inf or NaN in `values`, or -1 when all are finite.
int64_t first_non_finite(std::span<const float> values);

// Throws std::runtime_error ("refusing to write WHAT: value I of N is nan ...") when `values`
// holds an inf or NaN; writers call it on every tensor before the first byte goes to disk.
void require_finite(std::span<const float> values, const std::string& what);

}  // namespace lora
