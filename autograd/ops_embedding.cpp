// embedding: rows of a frozen table (no gradient flows into the table).
#include <stdexcept>

#include "autograd/ops.h"

namespace lora::ag {

Var embedding(Tape& tape, const FrozenWeight& table, std::span<const int32_t> ids) {
  const OpTimer timer(tape.profile(), "embedding", tape.forward_phase());
  const int64_t n = static_cast<int64_t>(ids.size()), dim = table.cols;
  Tensor out({n, dim});
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows)
      throw std::out_of_range("embedding: token id " + std::to_string(ids[i]) + " at position " +
                              std::to_string(i) + " is outside the vocabulary of " +
                              std::to_string(table.rows));
    table.rows_f32(ids[i], ids[i] + 1, out.ptr() + i * dim);
  }
  return tape.constant(std::move(out));
}

}  // namespace lora::ag
