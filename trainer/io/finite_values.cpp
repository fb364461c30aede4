#include "trainer/io/finite_values.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace lora {

int64_t first_non_finite(std::span<const float> values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) return int64_t(i);
  return -1;
}

void require_finite(std::span<const float> values, const std::string& what) {
  const int64_t i = first_non_finite(values);
  if (i < 0) return;
  std::ostringstream msg;
  msg << "refusing to write " << what << ": value " << i << " of " << values.size() << " is "
      << values[std::size_t(i)] << " (the numbers diverged)";
  throw std::runtime_error(msg.str());
}

}  // namespace lora
