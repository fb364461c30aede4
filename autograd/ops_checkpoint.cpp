// checkpoint: run a block without keeping its intermediates, recompute it during backward.
#include "autograd/ops.h"

namespace lora::ag {

Var checkpoint(Tape& tape, Var x, const std::function<Var(Tape&, Var)>& block) {
  const OpTimer timer(tape.profile(), "checkpoint", tape.forward_phase());
  Tensor y;
  {
    Tape scratch(/*record=*/false);  // its nodes die at the end of this scope
    scratch.set_profile(tape.profile(), tape.forward_phase());
    scratch.set_compute_dtype(tape.compute_dtype());
    y = std::move(block(scratch, scratch.constant(x->value))->value);
  }
  Var out = tape.make(std::move(y), tape.recording());
  if (!out->requires_grad) return out;
  tape.push_backward(
      [&tape, x, out, block] {
        if (out->grad.data.empty()) return;
        Tape replay(/*record=*/true);
        replay.set_profile(tape.profile(), OpPhase::Recompute);
        replay.set_compute_dtype(tape.compute_dtype());
        replay.set_release_values(true);
        // Where this replay is the input's last reader, the input moves in instead of being
        // copied; out's gradient is dropped after this closure, so it moves in too.
        Var xr =
            replay.make(tape.value_dies_here(x) ? tape.take_value(x) : x->value, x->requires_grad);
        Var yr = block(replay, xr);
        replay.backward_from(yr, std::move(out->grad));
        if (!x->requires_grad || xr->grad.data.empty()) return;
        tape.accumulate_grad(x, std::move(xr->grad));
      },
      "checkpoint", out, {x});
  return out;
}

}  // namespace lora::ag
