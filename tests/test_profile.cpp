// The per-op time split: every op shows up under the phase it ran in, nested timers report
// exclusive time, and profiling changes no value or gradient.
#include <gtest/gtest.h>

#include <algorithm>

#include "autograd/ops.h"
#include "autograd/profile.h"

namespace lora::ag {
namespace {

const OpProfile::Entry* find(const std::vector<OpProfile::Entry>& es, const std::string& op) {
  auto it = std::find_if(es.begin(), es.end(), [&](const auto& e) { return e.op == op; });
  return it == es.end() ? nullptr : &*it;
}

struct StepResult {
  float loss = 0;
  std::vector<float> grad_a, grad_b;
};

StepResult run_step(OpProfile* profile) {
  const FrozenWeight w = FrozenWeight::from_f32(std::vector<float>(6 * 4, 0.25f), 6, 4);
  Parameter A, B;
  A.value = Tensor({2, 4}, std::vector<float>{0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.1f, -0.1f, 0.2f});
  B.value = Tensor({6, 2}, 0.3f);
  const LoraBranch br{&A, &B, 2.0f, 0.0f, 0, true};
  Tape tape;
  tape.set_profile(profile);
  Var x = tape.constant(Tensor({3, 4}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  Var y = checkpoint(tape, x, [&](Tape& t, Var in) {
    Var h = linear(t, in, w, nullptr, std::span<const LoraBranch>(&br, 1));
    return swiglu(t, h, h);
  });
  const std::vector<int32_t> targets{0, 1, 2};
  const std::vector<float> weights{1, 1, 1};
  const FrozenWeight head = FrozenWeight::from_f32(std::vector<float>(5 * 6, 0.1f), 5, 6);
  Var loss = cross_entropy_head(tape, y, head, targets, weights, 3.0f);
  tape.backward(loss);
  return {loss->value.data[0], A.grad.data, B.grad.data};
}

TEST(OpProfile, RecordsEveryOpByPhaseAndChangesNothing) {
  OpProfile profile;
  const StepResult with = run_step(&profile);
  const StepResult without = run_step(nullptr);
  EXPECT_EQ(with.loss, without.loss);
  EXPECT_EQ(with.grad_a, without.grad_a);
  EXPECT_EQ(with.grad_b, without.grad_b);

  const auto es = profile.entries();
  const auto* lin = find(es, "linear");
  const auto* lora = find(es, "lora");
  const auto* ckpt = find(es, "checkpoint");
  const auto* ce = find(es, "cross_entropy");
  ASSERT_TRUE(lin && lora && ckpt && ce);
  // Under the checkpoint: one forward (no-record scratch tape), one recompute, one backward.
  EXPECT_EQ(lin->calls[int(OpPhase::Forward)], 1);
  EXPECT_EQ(lin->calls[int(OpPhase::Recompute)], 1);
  EXPECT_EQ(lin->calls[int(OpPhase::Backward)], 1);
  EXPECT_EQ(lora->calls[int(OpPhase::Backward)], 1);
  EXPECT_EQ(ckpt->calls[int(OpPhase::Forward)], 1);
  EXPECT_EQ(ckpt->calls[int(OpPhase::Backward)], 1);
  EXPECT_EQ(ce->calls[int(OpPhase::Backward)], 1);
  for (const auto& e : es)
    for (double s : e.seconds) EXPECT_GE(s, 0.0) << e.op;  // exclusive time is never negative
  EXPECT_NE(profile.table().find("cross_entropy"), std::string::npos);
}

}  // namespace
}  // namespace lora::ag
