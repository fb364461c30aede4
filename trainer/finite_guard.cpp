#include "trainer/finite_guard.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "trainer/io/checkpoint.h"
#include "trainer/io/finite_values.h"

namespace lora {

std::string overflowing_module(const LoraAdapter& adapter) {
  for (const LoraModule& m : adapter.modules) {
    const Tensor& a = m.A.value;
    const Tensor& b = m.B.value;
    const std::string name =
        "model.layers." + std::to_string(m.layer) + "." + std::string(proj_module_path(m.proj));
    if (first_non_finite(a.span()) >= 0 || first_non_finite(b.span()) >= 0) return name;
    double max_a = 0.0, max_row_b = 0.0;
    for (float v : a.data) max_a = std::max(max_a, double(std::fabs(v)));
    const int64_t rank = b.shape.at(1);
    for (int64_t i = 0; i < b.shape.at(0); ++i) {
      double row = 0.0;
      for (int64_t k = 0; k < rank; ++k)
        row += std::fabs(double(b.data[std::size_t(i * rank + k)]));
      max_row_b = std::max(max_row_b, row);
    }
    const double bound = std::fabs(double(m.scale)) * max_row_b * max_a;
    if (bound > double(std::numeric_limits<float>::max())) return name;
  }
  return "";
}

void check_step_finite(int64_t step, double loss, double grad_norm, const LoraAdapter& adapter,
                       const std::filesystem::path& adapter_dir, double learning_rate) {
  const bool numbers_ok = std::isfinite(loss) && std::isfinite(grad_norm);
  // A loss well above zero with no gradient at all: the activations overflowed and a norm turned
  // them to zeros (a healthy step's gradient is 0 only where every target is certain, loss ~0).
  const bool gradient_died = grad_norm == 0.0 && loss > 1e-3;
  const std::string overflow = numbers_ok ? overflowing_module(adapter) : std::string();
  if (numbers_ok && !gradient_died && overflow.empty()) return;
  std::ostringstream msg;
  msg << "step " << step << ": the training diverged (loss " << loss << ", gradient norm "
      << grad_norm;
  if (gradient_died) msg << ": no gradient reaches the adapter, the activations overflowed f32";
  if (!overflow.empty()) msg << "; the LoRA update of " << overflow << " overflows f32";
  msg << "); stopped without writing the adapter. ";
  const auto saved = list_checkpoints(adapter_dir);
  if (saved.empty())
    msg << "No checkpoint was saved before it. ";
  else
    msg << "The last good checkpoint is " << saved.back().string() << ". ";
  msg << "Lower the learning rate (it is " << learning_rate << ") or clip the gradients";
  std::ostringstream lower;
  lower << learning_rate / 10;
  throw DivergedError(step, msg.str(), ": ",
                      {{{"learning_rate", lower.str()}}, {{"grad_clip", "1.0"}}});
}

}  // namespace lora
