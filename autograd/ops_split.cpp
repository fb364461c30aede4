// split_columns: the column blocks of a fused projection's output (Phi-3's [q; k; v] and
// [gate; up]); backward writes each block's gradient back into its columns.
#include <algorithm>
#include <memory>
#include <stdexcept>

#include "autograd/ops.h"

namespace lora::ag {

std::vector<Var> split_columns(Tape& tape, Var x, std::span<const int64_t> widths) {
  const OpTimer timer(tape.profile(), "split", tape.forward_phase());
  const Tensor& xv = x->value;
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  if (xv.shape.size() != 2 || xv.dim(1) != total)
    throw std::invalid_argument("split_columns: input " + xv.shape_str() + " does not have " +
                                std::to_string(total) + " columns");
  const int64_t rows = xv.dim(0);
  std::vector<Var> parts;
  int64_t begin = 0;
  for (int64_t w : widths) {
    Tensor part({rows, w});
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(xv.ptr() + r * total + begin, w, part.ptr() + r * w);
    parts.push_back(tape.make(std::move(part), x->requires_grad));
    begin += w;
  }
  if (!x->requires_grad) return parts;
  auto offsets = std::make_shared<std::vector<int64_t>>(widths.begin(), widths.end());
  tape.push_backward(
      [&tape, x, parts, offsets, rows, total] {
        int64_t begin = 0;
        for (std::size_t i = 0; i < parts.size(); ++i) {
          const int64_t w = (*offsets)[i];
          // Each block's gradient is used up here: moved out, it is freed when this closure ends.
          const Tensor g = std::move(parts[i]->grad);
          if (!g.data.empty()) {
            float* dx = tape.grad(x).ptr();
            for (int64_t r = 0; r < rows; ++r) {
              const float* src = g.ptr() + r * w;
              float* dst = dx + r * total + begin;
              for (int64_t c = 0; c < w; ++c) dst[c] += src[c];
            }
          }
          begin += w;
        }
      },
      "split");
  return parts;
}

}  // namespace lora::ag
