// rope: rotary position embedding; its backward is the inverse rotation of the gradient.
#include <memory>
#include <stdexcept>

#include "autograd/kernels/kernels_rope.h"
#include "autograd/ops.h"

namespace lora::ag {

Var rope(Tape& tape, Var x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
         std::span<const float> inv_freq, int64_t pos_offset, bool reuse_input, float scale) {
  const OpTimer timer(tape.profile(), "rope", tape.forward_phase());
  const Tensor& xv = x->value;
  if (xv.numel() != batch * seq * heads * head_dim || inv_freq.empty() ||
      2 * static_cast<int64_t>(inv_freq.size()) > head_dim)
    throw std::invalid_argument(
        "rope: input " + xv.shape_str() + " is not [" + std::to_string(batch * seq) + ", " +
        std::to_string(heads * head_dim) + "] with " + std::to_string(inv_freq.size()) +
        " frequencies per head (at most head_dim / 2)");
  auto table = std::make_shared<kernels::RopeTable>(inv_freq, seq, pos_offset, scale);
  Tensor y = reuse_input ? x->value.take_data() : xv;
  kernels::rope_rotate(y.ptr(), batch, seq, heads, head_dim, *table, +1);
  Var out = tape.make(std::move(y), x->requires_grad);
  if (!out->requires_grad) return out;
  tape.push_backward(
      [&tape, x, out, batch, seq, heads, head_dim, table] {
        if (out->grad.data.empty()) return;
        // out's gradient is dropped after this closure: rotate it in place and hand it on.
        kernels::rope_rotate(out->grad.ptr(), batch, seq, heads, head_dim, *table, -1);
        tape.accumulate_grad(x, std::move(out->grad));
      },
      "rope", out);
  return out;
}

}  // namespace lora::ag
