// Elementwise ops: the gated activations swiglu (silu(gate) * up) and geglu (gelu_tanh(gate) *
// up), and the residual add.
#include <stdexcept>

#include "autograd/kernels/kernels_activation.h"
#include "autograd/ops.h"

namespace lora::ag {
namespace {

void require_same_shape(const char* op, Var a, Var b) {
  if (a->value.shape != b->value.shape)
    throw std::invalid_argument(std::string(op) + ": shapes " + a->value.shape_str() + " and " +
                                b->value.shape_str() + " differ");
}

// act(gate) * up through the given kernels (the same contract for every activation).
template <typename Forward, typename Backward>
Var gated(Tape& tape, const char* name, Var gate, Var up, Forward forward, Backward backward) {
  const OpTimer timer(tape.profile(), name, tape.forward_phase());
  require_same_shape(name, gate, up);
  Tensor y(gate->value.shape);
  forward(gate->value.ptr(), up->value.ptr(), y.numel(), y.ptr());
  Var out = tape.make(std::move(y), gate->requires_grad || up->requires_grad);
  if (!out->requires_grad) return out;
  tape.push_backward(
      [&tape, gate, up, out, backward] {
        if (out->grad.data.empty()) return;
        const float* gate_value = gate->value.ptr();
        const float* up_value = up->value.ptr();
        // gate and up usually feed nothing else: their gradients then take their values' place.
        const bool in_place = gate != up && gate->requires_grad && up->requires_grad &&
                              tape.value_reusable_as_grad(gate) && tape.value_reusable_as_grad(up);
        auto grad_of = [&](Var in) -> float* {
          if (!in->requires_grad) return nullptr;
          return in_place ? tape.reuse_value_as_grad(in) : tape.grad(in).ptr();
        };
        backward(gate_value, up_value, out->grad.ptr(), out->grad.numel(), grad_of(gate),
                 grad_of(up), /*accumulate=*/!in_place);
      },
      name, out, {gate, up});
  return out;
}

}  // namespace

Var swiglu(Tape& tape, Var gate, Var up) {
  return gated(tape, "swiglu", gate, up, kernels::swiglu_forward<float>,
               kernels::swiglu_backward<float>);
}

Var geglu(Tape& tape, Var gate, Var up) {
  return gated(tape, "geglu", gate, up, kernels::geglu_forward<float>,
               kernels::geglu_backward<float>);
}

Var add(Tape& tape, Var a, Var b) {
  const OpTimer timer(tape.profile(), "add", tape.forward_phase());
  require_same_shape("add", a, b);
  Tensor y = a->value;
  for (std::size_t i = 0; i < y.data.size(); ++i) y.data[i] += b->value.data[i];
  Var out = tape.make(std::move(y), a->requires_grad || b->requires_grad);
  if (!out->requires_grad) return out;
  tape.push_backward(
      [&tape, a, b, out] {
        if (out->grad.data.empty()) return;
        for (Var in : {a, b})
          if (in->requires_grad) tape.accumulate_grad(in, out->grad.ptr());
      },
      "add", out);
  return out;
}

}  // namespace lora::ag
