#include "autograd/frozen_gemv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/kernels/kernels_attention.h"
#include "autograd/kernels/kernels_gemv.h"
#include "autograd/line_aligned.h"
#include "autograd/parallel.h"
#include "autograd/quant.h"

namespace {

// The portable baseline: one lane, plain C++ (the compiler may still vectorize it).
struct Scalar {
  static constexpr int W = 1;
  using reg = float;
  using ireg = int32_t;
  static reg zero() { return 0.0f; }
  static reg load(const float* p) { return *p; }
  static reg load_half(const uint16_t* p) { return lora::f16_to_f32(*p); }
  static void store(float* p, reg v) { *p = v; }
  static reg set1(float v) { return v; }
  static reg add(reg a, reg b) { return a + b; }
  static reg mul(reg a, reg b) { return a * b; }
  static constexpr bool kCodeTable = false;
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static float hsum(reg a) { return a; }
  static void hsum4(const reg (&v)[4], float* out) { std::copy(v, v + 4, out); }
  static reg load_partial(const float* p, int64_t n) { return n > 0 ? *p : 0.0f; }
  static reg sum_each(const reg (&v)[1]) { return v[0]; }
  static ireg load_u8(const uint8_t* p) { return p[0]; }
  static ireg load_s8(const uint8_t* p) { return static_cast<int8_t>(p[0]); }
  static reg to_float(ireg v) { return static_cast<float>(v); }
  // Four bytes to a lane, in memory order.
  static ireg load_bytes(const void* p) {
    ireg v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static ireg load_bytes_partial(const void* p, int64_t n) {
    ireg v = 0;
    std::memcpy(&v, p, static_cast<std::size_t>(std::min<int64_t>(n, 4)));
    return v;
  }
  static ireg dot_nibbles(ireg codes, ireg x_low, ireg x_high) {
    uint8_t c[4];
    int8_t lo[4], hi[4];
    std::memcpy(c, &codes, 4);
    std::memcpy(lo, &x_low, 4);
    std::memcpy(hi, &x_high, 4);
    ireg sum = 0;
    for (int i = 0; i < 4; ++i) sum += (c[i] & 15) * lo[i] + (c[i] >> 4) * hi[i];
    return sum;
  }
  static ireg group_index(int64_t) { return 0; }
  static reg spread_groups(const float* scales, int64_t, ireg) { return *scales; }
  static reg low_nibble(ireg v) { return static_cast<float>(v & 15); }
  static reg high_nibble(ireg v) { return static_cast<float>(v >> 4); }
  static ireg and15(ireg v) { return v & 15; }
  static ireg shr4(ireg v) { return v >> 4; }
  static ireg ior(ireg a, ireg b) { return a | b; }
  static ireg bit_lanes16(uint32_t bits) { return static_cast<ireg>((bits & 1u) << 4); }
  template <int To>
  static ireg lane_bit_to(ireg h, int s) {
    return ((h << To) >> s) & (1 << To);
  }
  template <int S>
  static ireg high_pair(ireg h) {
    if constexpr (S >= 0)
      return (h << S) & 48;
    else
      return (h >> -S) & 48;
  }
};

}  // namespace

namespace lora {

namespace {

// The cap of LORA_CPU applies here as to every kernel family (autograd/cpu_features.h).
GemvIsa detect_isa() {
  const CpuFeatures& f = active_cpu_features();
  if (f.avx512) return f.avx512_vnni ? GemvIsa::Avx512Vnni : GemvIsa::Avx512;
  return f.avx2 ? GemvIsa::Avx2 : GemvIsa::Scalar;
}

const gemv::Kernels& kernels_of(GemvIsa isa) {
  static constexpr gemv::Kernels scalar = make_kernels<Scalar>();
  switch (isa) {
    case GemvIsa::Avx512Vnni:
      return gemv_avx512_vnni::kernels();
    case GemvIsa::Avx512:
      return gemv_avx512::kernels();
    case GemvIsa::Avx2:
      return gemv_avx2::kernels();
    case GemvIsa::Scalar:
      break;
  }
  return scalar;
}

// Rows handed to one thread at a time: the weights of a block stay in cache while each of the n
// vectors passes over them, so they are read from memory once whatever n is.
constexpr int64_t kRowBlock = 16;
// Below this many multiply-adds a product runs on one thread (a fork costs microseconds).
constexpr int64_t kParallelWork = int64_t(1) << 16;

// x rounded to int8 for a product's kernel: not at all; per MLX group with even and odd elements
// apart; per 32 elements in element order (ggml blocks).
enum class Int8X { None, EvenOdd, Blocks };

// How one product reads its weight: which kernel, and what x looks like to it.
struct Plan {
  gemv::RowsKernel kernel = nullptr;  // null: widen rows into a buffer, then the f32 kernel
  const uint8_t* data = nullptr;
  int64_t row_bytes = 0;
  int64_t sum_width = 0;  // elements per entry of RowsArgs::sums (0: none)
  bool nibble_order = false;
  Int8X int8 = Int8X::None;
};

// The int8 kernel's shifts need a power-of-two group: MLX's sizes (32, 64, 128) all are.
bool takes_int8(const QuantizedMatrix& q) { return q.bits == 4 && valid_group_size(q.group_size); }

// The int8 kernel of a ggml block type, where this instruction set has one.
gemv::RowsKernel int8_block_kernel(GgmlType type, const gemv::Kernels& k) {
  switch (type) {
    case GgmlType::Q4_0:
      return k.q4_0_int8;
    case GgmlType::Q4_1:
      return k.q4_1_int8;
    case GgmlType::Q5_0:
      return k.q5_0_int8;
    case GgmlType::Q5_1:
      return k.q5_1_int8;
    case GgmlType::Q8_0:
      return k.q8_0_int8;
    case GgmlType::Q4_K:
      return k.q4_k_int8;
    case GgmlType::Q5_K:
      return k.q5_k_int8;
    case GgmlType::Q6_K:
      return k.q6_k_int8;
    case GgmlType::Q2_K:
      return k.q2_k_int8;
    case GgmlType::Q3_K:
      return k.q3_k_int8;
    case GgmlType::IQ4_NL:
      return k.iq4_nl_int8;
    case GgmlType::IQ4_XS:
      return k.iq4_xs_int8;
    case GgmlType::MXFP4:
      return k.mxfp4_int8;
    case GgmlType::IQ2_XXS:
      return k.iq2_xxs_int8;
    case GgmlType::IQ2_XS:
      return k.iq2_xs_int8;
    case GgmlType::IQ2_S:
      return k.iq2_s_int8;
    case GgmlType::IQ3_XXS:
      return k.iq3_xxs_int8;
    case GgmlType::IQ3_S:
      return k.iq3_s_int8;
    case GgmlType::IQ1_S:
      return k.iq1_s_int8;
    case GgmlType::IQ1_M:
      return k.iq1_m_int8;
    case GgmlType::TQ2_0:
      return k.tq2_0_int8;
    case GgmlType::TQ1_0:
      return k.tq1_0_int8;
    default:
      return nullptr;
  }
}

// The elements per sum of x the int8 kernel of a block type reads: none where the codes have no
// offset (Q8_0, IQ2-IQ4, MXFP4); per 8 for IQ1_M's per-entry shifts.
int64_t int8_block_sum_width(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q6_K:
      return 16;
    case GgmlType::IQ1_M:
      return 8;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::IQ1_S:
    case GgmlType::TQ1_0:
    case GgmlType::TQ2_0:
      return 32;
    default:
      return 0;
  }
}

Plan plan_for(const FrozenWeight& w, const gemv::Kernels& k, GemvActivations activations) {
  Plan p;
  switch (w.format) {
    case WeightFormat::F32:
      return {k.f32, reinterpret_cast<const uint8_t*>(w.f32.data()), w.cols * 4, 0, false};
    case WeightFormat::Quantized: {
      if (w.quant.bits != 4 && w.quant.bits != 8) return p;
      const auto* data = reinterpret_cast<const uint8_t*>(w.quant.packed.data());
      const int64_t row_bytes = w.quant.words_per_row() * 4;
      if (activations == GemvActivations::Int8 && takes_int8(w.quant))
        return {k.mlx4_int8, data, row_bytes, w.quant.group_size, false, Int8X::EvenOdd};
      return {w.quant.bits == 4 ? k.mlx4 : k.mlx8, data, row_bytes, w.quant.group_size,
              w.quant.bits == 4};
    }
    case WeightFormat::Ggml: {
      const auto* data = reinterpret_cast<const uint8_t*>(w.ggml.data.get());
      const auto rb = static_cast<int64_t>(w.ggml.row_bytes());
      // Octets have the int8 kernel alone; without it (f32 x) their rows are widened.
      if (w.ggml.layout == GgmlLayout::Q4_0Octets)
        return activations == GemvActivations::Int8 && k.q4_0_octets_int8
                   ? Plan{k.q4_0_octets_int8, data, rb, 32, false, Int8X::Blocks}
                   : p;
      if (const gemv::RowsKernel int8 = int8_block_kernel(w.ggml.type, k);
          int8 && activations == GemvActivations::Int8)
        return {int8, data, rb, int8_block_sum_width(w.ggml.type), false, Int8X::Blocks};
      switch (w.ggml.type) {
        case GgmlType::Q4_0:
          return {k.q4_0, data, rb, 32, false};
        case GgmlType::Q4_1:
          return {k.q4_1, data, rb, 32, false};
        case GgmlType::Q5_0:
          return {k.q5_0, data, rb, 32, false};
        case GgmlType::Q5_1:
          return {k.q5_1, data, rb, 32, false};
        case GgmlType::Q8_0:
          return {k.q8_0, data, rb, 0, false};
        case GgmlType::Q4_K:
          return {k.q4_k, data, rb, 32, false};
        case GgmlType::Q5_K:
          return {k.q5_k, data, rb, 32, false};
        case GgmlType::Q6_K:
          return {k.q6_k, data, rb, 16, false};
        case GgmlType::Q2_K:
          return {k.q2_k, data, rb, 16, false};
        case GgmlType::Q3_K:
          return {k.q3_k, data, rb, 16, false};
        case GgmlType::IQ4_NL:  // a null kernel (the portable baseline) widens the rows
          return {k.iq4_nl, data, rb, 0, false};
        case GgmlType::IQ4_XS:
          return {k.iq4_xs, data, rb, 0, false};
        case GgmlType::MXFP4:
          return {k.mxfp4, data, rb, 0, false};
        case GgmlType::F32:
          return {k.f32, data, rb, 0, false};
        default:
          return p;
      }
    }
    case WeightFormat::BF16:
      break;
  }
  return p;
}

// x as the kernels read it, per vector: [n, cols] (permuted for nibble rows) then the sums; for
// the MLX int8 kernel [n, int8_width] even and odd elements and [n, int8_width / 4] scales; for
// the ggml int8 kernels [n, int8_width = cols] elements in `low` and [n, cols / 32] scales.
struct PreparedX {
  std::vector<float> values, sums;
  std::vector<int8_t> low, high;
  std::vector<float> scales;
  int64_t int8_width = 0;
};

// The int8 kernels read whole vectors of code bytes: the widest (AVX-512) is 64.
constexpr int64_t kInt8Padding = 64;

// The step dx of n elements, and the factor 127 / max |x| that rounds them (0 where all are 0).
std::pair<float, float> int8_step(const float* x, int64_t n) {
  float amax = 0.0f;
#pragma omp simd reduction(max : amax)
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(x[i]));
  return {amax / 127.0f, amax > 0.0f ? 127.0f / amax : 0.0f};
}

// x rounded per group to dx * q, dx = max |x| / 127, q = round(x / dx) in [-127, 127]: the even
// elements' q in `low`, the odd ones' in `high`, each 8 elements' dx in `scales`. Both loops are
// written so that GCC vectorizes them: as a scalar max chain and a rounding per element they were
// most of frozen_gemv's own time, 6% of the kernels' in a SmolLM2-135M int8 decode step.
void round_to_int8(const float* x, int64_t cols, int64_t group, int64_t width, int8_t* low,
                   int8_t* high, float* scales) {
  for (int64_t g0 = 0; g0 < cols; g0 += group) {
    const auto [dx, inv] = int8_step(x + g0, group);
#pragma omp simd
    for (int64_t j = g0 / 2; j < (g0 + group) / 2; ++j) {
      low[j] = static_cast<int8_t>(std::nearbyint(x[2 * j] * inv));
      high[j] = static_cast<int8_t>(std::nearbyint(x[2 * j + 1] * inv));
    }
    std::fill(scales + g0 / 8, scales + (g0 + group) / 8, dx);
  }
  std::fill(low + cols / 2, low + width, int8_t{0});
  std::fill(high + cols / 2, high + width, int8_t{0});
  std::fill(scales + cols / 8, scales + width / 4, 0.0f);
}

// x rounded per 32 elements as round_to_int8 rounds a group, kept in element order.
void round_blocks_to_int8(const float* x, int64_t cols, int8_t* q, float* scales) {
  for (int64_t g0 = 0; g0 < cols; g0 += 32) {
    const auto [dx, inv] = int8_step(x + g0, 32);
#pragma omp simd
    for (int64_t i = g0; i < g0 + 32; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
    scales[g0 / 32] = dx;
  }
}

PreparedX prepare(const Plan& plan, const gemv::Kernels& k, const float* x, int64_t n,
                  int64_t cols) {
  PreparedX p;
  if (plan.int8 == Int8X::Blocks) {
    p.int8_width = cols;
    p.low.resize(static_cast<std::size_t>(n * cols));
    p.scales.resize(static_cast<std::size_t>(n * cols / 32));
    for (int64_t v = 0; v < n; ++v)
      round_blocks_to_int8(x + v * cols, cols, &p.low[v * cols], &p.scales[v * cols / 32]);
  }
  if (plan.int8 == Int8X::EvenOdd) {
    const int64_t width = (cols / 2 + kInt8Padding - 1) / kInt8Padding * kInt8Padding;
    p.int8_width = width;
    p.low.resize(static_cast<std::size_t>(n * width));
    p.high.resize(p.low.size());
    p.scales.resize(static_cast<std::size_t>(n * width / 4));
    for (int64_t v = 0; v < n; ++v)
      round_to_int8(x + v * cols, cols, plan.sum_width, width, &p.low[v * width],
                    &p.high[v * width], &p.scales[v * width / 4]);
  }
  if (plan.nibble_order) {
    p.values.resize(static_cast<std::size_t>(n * cols));
    for (int64_t v = 0; v < n; ++v) k.permute_for_nibbles(x + v * cols, cols, &p.values[v * cols]);
  }
  if (plan.sum_width > 0) {
    const int64_t per_row = cols / plan.sum_width;
    p.sums.resize(static_cast<std::size_t>(n * per_row));
    for (int64_t v = 0; v < n; ++v)
      for (int64_t g = 0; g < per_row; ++g) {
        const float* xg = x + v * cols + g * plan.sum_width;
        float s = 0.0f;  // reassociated: a chain of dependent adds cost 2-3% of a decode step
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < plan.sum_width; ++i) s += xg[i];
        p.sums[v * per_row + g] = s;
      }
  }
  return p;
}

}  // namespace

GemvIsa gemv_isa() {
  static const GemvIsa isa = detect_isa();
  return isa;
}

std::string_view gemv_isa_name(GemvIsa isa) {
  switch (isa) {
    case GemvIsa::Avx512Vnni:
      return "avx512_vnni";
    case GemvIsa::Avx512:
      return "avx512";
    case GemvIsa::Avx2:
      return "avx2";
    case GemvIsa::Scalar:
      break;
  }
  return "scalar";
}

namespace kernels {
const gemv::Kernels& tile_kernels() { return kernels_of(gemv_isa()); }
}  // namespace kernels

bool gemv_isa_supported(GemvIsa isa) {
  return isa <= gemv_isa();  // each set holds those before it
}

namespace {

// The kernels of `isa`, or a clear error naming `caller` where this CPU cannot run them.
const gemv::Kernels& runnable_kernels(GemvIsa isa, const char* caller) {
  if (!gemv_isa_supported(isa))
    throw std::invalid_argument(std::string(caller) + ": this CPU cannot run the " +
                                std::string(gemv_isa_name(isa)) + " kernels");
  return kernels_of(isa);
}

}  // namespace

void frozen_gemv(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta) {
  frozen_gemv(w, x, n, y, beta, gemv_isa());
}

void frozen_gemv(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                 GemvIsa isa) {
  const GemvProduct product{&w, y, beta};
  frozen_gemv({&product, 1}, x, n, isa);
}

void frozen_gemv(std::span<const GemvProduct> products, const float* x, int64_t n,
                 GemvActivations activations) {
  frozen_gemv(products, x, n, gemv_isa(), activations);
}

namespace {

// One product's share of a shared pass: its kernel plan, x as that plan reads it, and the first
// of the pass's row blocks that is its own.
struct PassPart {
  const GemvProduct* product;
  Plan plan;
  std::size_t layout;  // index of x's layout for this plan
  int64_t first_block;
};

// Multiplies rows [r0, r1) of one product's weight with every vector; `widened` holds kRowBlock
// rows of a storage without its own kernel.
void product_rows(const PassPart& part, const PreparedX& px, const gemv::Kernels& k, const float* x,
                  int64_t n, int64_t r0, int64_t r1, std::vector<float>& widened) {
  const FrozenWeight& w = *part.product->w;
  const int64_t cols = w.cols, groups = part.plan.sum_width > 0 ? cols / part.plan.sum_width : 0;
  gemv::RowsArgs a;
  a.cols = cols;
  a.beta = part.product->beta;
  a.group_size = part.plan.sum_width;
  a.scales = w.quant.scales.data();
  a.biases = w.quant.biases.data();
  a.halves = f16_to_f32_table();
  int64_t first = r0, last = r1;
  if (part.plan.kernel) {
    a.data = part.plan.data;
    a.row_bytes = part.plan.row_bytes;
    a.rows = w.rows;
  } else {
    widened.resize(static_cast<std::size_t>(kRowBlock * cols));
    w.rows_f32(r0, r1, widened.data());
    a.data = reinterpret_cast<const uint8_t*>(widened.data());
    a.row_bytes = cols * 4;
    a.rows = r1 - r0;
    first = 0;
    last = r1 - r0;
  }
  for (int64_t v = 0; v < n; ++v) {
    a.x = part.plan.nibble_order ? &px.values[v * cols] : x + v * cols;
    a.sums = groups > 0 ? &px.sums[v * groups] : nullptr;
    if (part.plan.int8 == Int8X::EvenOdd) {
      a.x_low = &px.low[v * px.int8_width];
      a.x_high = &px.high[v * px.int8_width];
      a.x_scales = &px.scales[v * px.int8_width / 4];
    } else if (part.plan.int8 == Int8X::Blocks) {
      a.x_low = &px.low[v * cols];
      a.x_scales = &px.scales[v * cols / 32];
    }
    a.y = part.product->y + v * w.rows + (r0 - first);
    (part.plan.kernel ? part.plan.kernel : k.f32)(a, first, last);
  }
}

// The pass's row blocks [b0, b1). With one vector, each product's blocks in the span go to its
// kernel in one call (a call per 16-row block, each setting up its arguments again, was 5-9% of
// the products' time in a SmolLM2-135M decode step); with several vectors, and for storages
// widened into a buffer, block by block, so that a block's weights stay in cache while each
// vector passes over them.
void product_blocks(std::span<const PassPart> parts, std::span<const PreparedX> layouts,
                    const gemv::Kernels& k, const float* x, int64_t n, int64_t b0, int64_t b1,
                    std::vector<float>& widened) {
  for (const PassPart& part : parts) {
    const int64_t rows = part.product->w->rows;
    const int64_t first = std::max(b0, part.first_block);
    const int64_t end = std::min(b1, part.first_block + (rows + kRowBlock - 1) / kRowBlock);
    if (first >= end) continue;
    const int64_t r0 = (first - part.first_block) * kRowBlock;
    const int64_t r1 = std::min(rows, (end - part.first_block) * kRowBlock);
    const PreparedX& px = layouts[part.layout];
    if (n == 1 && part.plan.kernel) {
      product_rows(part, px, k, x, n, r0, r1, widened);
      continue;
    }
    for (int64_t r = r0; r < r1; r += kRowBlock)
      product_rows(part, px, k, x, n, r, std::min(r1, r + kRowBlock), widened);
  }
}

}  // namespace

void frozen_gemv(std::span<const GemvProduct> products, const float* x, int64_t n, GemvIsa isa,
                 GemvActivations activations) {
  const gemv::Kernels& k = runnable_kernels(isa, "frozen_gemv");
  if (n <= 0 || products.empty()) return;
  const int64_t cols = products[0].w->cols;
  // x is prepared once per layout the products' kernels read it in (all of them, usually).
  std::vector<PreparedX> layouts;
  std::vector<std::tuple<int64_t, bool, Int8X>> layout_keys;  // (sum width, nibble order, int8)
  std::vector<PassPart> parts;
  int64_t blocks = 0, work = 0;
  for (const GemvProduct& p : products) {
    if (p.w->cols != cols)
      throw std::invalid_argument("frozen_gemv: products of one input with " +
                                  std::to_string(cols) + " and " + std::to_string(p.w->cols) +
                                  " columns");
    if (p.w->rows == 0) continue;
    if (cols == 0) {
      for (int64_t i = 0; i < n * p.w->rows; ++i) p.y[i] = p.beta == 0.0f ? 0.0f : p.beta * p.y[i];
      continue;
    }
    const Plan plan = plan_for(*p.w, k, activations);
    const std::tuple<int64_t, bool, Int8X> key{plan.sum_width, plan.nibble_order, plan.int8};
    auto at = std::find(layout_keys.begin(), layout_keys.end(), key);
    if (at == layout_keys.end()) {
      layout_keys.push_back(key);
      layouts.push_back(prepare(plan, k, x, n, cols));
      at = layout_keys.end() - 1;
    }
    parts.push_back({&p, plan, static_cast<std::size_t>(at - layout_keys.begin()), blocks});
    blocks += (p.w->rows + kRowBlock - 1) / kRowBlock;
    work += n * p.w->rows * cols;
  }
  if (parts.empty()) return;
  // One contiguous share of the blocks per thread, as a static split of the blocks would give.
  const bool split = team_splits(work >= kParallelWork);
  const int64_t shares = split ? std::min<int64_t>(team_size(), blocks) : 1;
  parallel_for_with_scratch(
      shares, split, [] { return std::vector<float>(); },
      [&](std::vector<float>& widened, int64_t s) {
        product_blocks(parts, layouts, k, x, n, blocks * s / shares, blocks * (s + 1) / shares,
                       widened);
      });
}

void frozen_short_gemm(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta) {
  frozen_short_gemm(w, x, n, y, beta, gemv_isa());
}

namespace {

// frozen_short_gemm's blocking. x transposed, [cols, tokens], is as large as a Zen 3 core's L2 at
// 2048 columns and 64 tokens: a block of rows that went past all of it at once read it from L3,
// block after block. So a block's widened rows go past x a chunk of columns at a time, and every
// register tile of the block (up to kShortGemmTiles, fewer where the threads would run out of
// blocks) multiplies a chunk while it is in L1 and L2.
constexpr int64_t kShortGemmTiles = 4;
constexpr int64_t kShortGemmChunk = 256;

int64_t short_gemm_tiles(int64_t rows, int64_t tile_rows) {
  const int64_t tiles = (rows + tile_rows - 1) / tile_rows;
  return std::clamp<int64_t>(tiles / (4 * team_size()), 1, kShortGemmTiles);
}

}  // namespace

void frozen_short_gemm(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                       GemvIsa isa) {
  const gemv::Kernels& k = runnable_kernels(isa, "frozen_short_gemm");
  const int64_t rows = w.rows, cols = w.cols;
  if (n <= 0 || rows == 0) return;
  // Tokens padded to whole vectors: tile_gemm takes them two vectors at a time and a last one.
  const int64_t padded = (n + k.lanes - 1) / k.lanes * k.lanes;
  const int64_t ldx = gemv::odd_line_stride(padded);
  LineAlignedFloats xt(static_cast<std::size_t>(cols * ldx), 0.0f);  // [cols, ldx]
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < cols; ++c) xt[c * ldx + t] = x[t * cols + c];
  const int64_t R = k.tile_rows * short_gemm_tiles(rows, k.tile_rows);
  const int64_t blocks = (rows + R - 1) / R;
  struct Scratch {
    std::vector<float> widened;
    LineAlignedFloats out;
  };
  parallel_for_with_scratch(
      blocks, n * rows * cols >= kParallelWork,
      [&] {
        return Scratch{std::vector<float>(static_cast<std::size_t>(R * cols)),
                       LineAlignedFloats(static_cast<std::size_t>(R * padded))};
      },
      [&](Scratch& s, int64_t b) {
        auto& [widened, out] = s;
        const int64_t r0 = b * R, used = std::min(R, rows - r0);
        w.rows_f32(r0, r0 + used, widened.data());
        std::fill(widened.begin() + used * cols, widened.end(), 0.0f);  // a last, partial block
        for (int64_t c0 = 0; c0 < cols; c0 += kShortGemmChunk)
          k.tile_gemm({.m = R,
                       .n = padded,
                       .k = std::min(kShortGemmChunk, cols - c0),
                       .a = widened.data() + c0,
                       .a_row = cols,
                       .a_col = 1,
                       .b = xt.data() + c0 * ldx,
                       .ldb = ldx,
                       .c = out.data(),
                       .ldc = padded,
                       .accumulate = c0 > 0});
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < used; ++r) {
            float& to = y[t * rows + r0 + r];
            const float dot = out[r * padded + t];
            to = beta == 0.0f ? dot : dot + beta * to;
          }
      });
}

}  // namespace lora
