// attention: causal GQA with an optional key padding mask, fused (no [seq, seq] tensors kept).
#include <stdexcept>

#include "autograd/kernels/kernels_attention.h"
#include "autograd/ops.h"

namespace lora::ag {

Var attention(Tape& tape, Var q, Var k, Var v, int64_t batch, int64_t seq_q, int64_t seq_k,
              int64_t heads, int64_t kv_heads, int64_t head_dim, std::span<const uint8_t> key_valid,
              const AttentionScoring& scoring) {
  const OpTimer timer(tape.profile(), "attention", tape.forward_phase());
  const kernels::AttentionShape s{batch,    seq_q,          seq_k,         heads,          kv_heads,
                                  head_dim, scoring.window, scoring.scale, scoring.softcap};
  if (kv_heads <= 0 || heads % kv_heads != 0 || seq_k < seq_q ||
      q->value.numel() != batch * seq_q * heads * head_dim ||
      k->value.numel() != batch * seq_k * kv_heads * head_dim ||
      v->value.numel() != k->value.numel())
    throw std::invalid_argument(
        "attention: q " + q->value.shape_str() + ", k " + k->value.shape_str() + ", v " +
        v->value.shape_str() + " do not fit batch " + std::to_string(batch) + ", seq " +
        std::to_string(seq_q) + "/" + std::to_string(seq_k) + ", heads " + std::to_string(heads) +
        "/" + std::to_string(kv_heads) + " of dim " + std::to_string(head_dim));
  if (!key_valid.empty() && static_cast<int64_t>(key_valid.size()) != batch * seq_k)
    throw std::invalid_argument("attention: key mask of " + std::to_string(key_valid.size()) +
                                " entries for " + std::to_string(batch * seq_k) + " keys");
  Tensor out({batch * seq_q, heads * head_dim});
  std::vector<float> lse(static_cast<std::size_t>(batch * heads * seq_q));
  const uint8_t* mask = key_valid.empty() ? nullptr : key_valid.data();
  kernels::attention_forward(q->value.ptr(), k->value.ptr(), v->value.ptr(), s, mask, out.ptr(),
                             lse.data());
  Var o = tape.make(std::move(out), q->requires_grad || k->requires_grad || v->requires_grad);
  if (!o->requires_grad) return o;
  std::vector<uint8_t> mask_copy(key_valid.begin(), key_valid.end());
  tape.push_backward(
      [&tape, q, k, v, o, s, lse = std::move(lse), mask_copy = std::move(mask_copy)] {
        if (o->grad.data.empty()) return;
        kernels::attention_backward(q->value.ptr(), k->value.ptr(), v->value.ptr(), o->value.ptr(),
                                    lse.data(), o->grad.ptr(), s,
                                    mask_copy.empty() ? nullptr : mask_copy.data(),
                                    q->requires_grad ? tape.grad(q).ptr() : nullptr,
                                    k->requires_grad ? tape.grad(k).ptr() : nullptr,
                                    v->requires_grad ? tape.grad(v).ptr() : nullptr);
      },
      "attention", o, {q, k, v, o});
  return o;
}

}  // namespace lora::ag
