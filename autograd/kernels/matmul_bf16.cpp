#include "autograd/kernels/matmul_bf16.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/kernels/kernel_variants.h"
#include "autograd/parallel.h"

namespace lora {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

const dnnl::engine& cpu_engine() {
  (void)active_cpu_features();  // caps oneDNN's ISA (LORA_CPU) before its first primitive
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Rounds n f32 values to bf16 (nearest even) on the calling thread: the AVX512-BF16 conversion
// where the CPU (and LORA_CPU) allows it, chosen once.
using RoundBlock = void (*)(const float*, int64_t, uint16_t*);
RoundBlock round_block() {
  static const RoundBlock chosen = active_cpu_features().avx512_bf16
                                       ? RoundBlock{kernels::avx512bf16::round_to_bf16}
                                       : RoundBlock{[](const float* x, int64_t n, uint16_t* y) {
                                           for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
                                         }};
  return chosen;
}

// The same in parallel: this runs on every activation that enters a bf16 product, so it must cost
// far less than the product itself.
void round_to_bf16(const float* in, int64_t count, uint16_t* out) {
  const RoundBlock round = round_block();
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  parallel_for(blocks, blocks > 1, [&](int64_t b) {
    const int64_t begin = b * kBlock;
    round(in + begin, std::min(count, begin + kBlock) - begin, out + begin);
  });
}

// The logical [K, N] weight operand of out[M, N] = in[M, K] * B for each product, over a
// row-major W [rows, cols]: XWt reads W^T (K = cols, N = rows), GW reads W (K = rows, N = cols).
dnnl::memory::dims weight_dims(Bf16Product p, int64_t rows, int64_t cols) {
  return p == Bf16Product::XWt ? dnnl::memory::dims{cols, rows} : dnnl::memory::dims{rows, cols};
}
tag plain_weight_tag(Bf16Product p) { return p == Bf16Product::XWt ? tag::ba : tag::ab; }

dnnl::primitive_attr product_attr(float beta) {
  dnnl::primitive_attr attr;
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  return attr;
}

dnnl::matmul::primitive_desc product_desc(int64_t m, int64_t k, int64_t n,
                                          const dnnl::memory::desc& weights, float beta) {
  const dnnl::memory::desc src({m, k}, dt::bf16, tag::ab);
  const dnnl::memory::desc dst({m, n}, dt::f32, tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), product_attr(beta),
                                      cpu_engine());
}

void run_product(const dnnl::matmul& mm, const dnnl::matmul::primitive_desc& pd,
                 const uint16_t* in_bf16, const dnnl::memory& weights, float* out) {
  const dnnl::engine& eng = cpu_engine();
  dnnl::stream stream(eng);
  dnnl::memory src(pd.src_desc(), eng, const_cast<uint16_t*>(in_bf16));
  dnnl::memory dst(pd.dst_desc(), eng, out);
  mm.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
  stream.wait();
}

void check_shape(int64_t rows, int64_t cols, const char* what) {
  if (rows <= 0 || cols <= 0)
    throw std::invalid_argument(std::string(what) + ": weight [" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "] must be non-empty");
}

}  // namespace

bool bf16_matmul_available() {
  static const bool available = [] {
    if (!active_cpu_features().bf16_units()) return false;
    const auto isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  }();
  return available;
}

std::string bf16_matmul_isa() {
  const bool units = active_cpu_features().bf16_units();
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx:
      return units ? "avx512_core_amx" : "avx512_core_amx (bf16 units off)";
    case dnnl::cpu_isa::avx512_core_bf16:
      return units ? "avx512_core_bf16" : "avx512_core_bf16 (bf16 units off)";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni (no native bf16)";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core (no native bf16)";
    case dnnl::cpu_isa::avx2:
      return "avx2 (no native bf16)";
    default:
      return "no native bf16";
  }
}

struct PackedBf16Weight::Impl {
  int64_t rows = 0, cols = 0;
  Bf16Product product = Bf16Product::XWt;
  int64_t k = 0, n = 0;  // the [K, N] weight operand
  dnnl::memory::desc packed_desc;
  dnnl::memory packed;
  // Primitives per (rows of input, beta != 0): the step loop reuses a handful of shapes.
  struct Prepared {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul mm;
  };
  std::mutex mutex;  // guards the caches below (products may be issued from several threads)
  std::map<std::pair<int64_t, float>, Prepared> prepared;
  std::vector<uint16_t> input;  // the bf16-rounded input, reused across calls

  const Prepared& prepare(int64_t m, float beta) {
    auto it = prepared.find({m, beta});
    if (it != prepared.end()) return it->second;
    auto pd = product_desc(m, k, n, packed_desc, beta);
    Prepared p{pd, dnnl::matmul(pd)};
    return prepared.emplace(std::pair{m, beta}, std::move(p)).first->second;
  }
};

PackedBf16Weight::PackedBf16Weight(const uint16_t* w, int64_t rows, int64_t cols,
                                   Bf16Product product)
    : impl_(std::make_unique<Impl>()) {
  check_shape(rows, cols, "PackedBf16Weight");
  Impl& s = *impl_;
  s.rows = rows;
  s.cols = cols;
  s.product = product;
  const auto dims = weight_dims(product, rows, cols);
  s.k = dims[0];
  s.n = dims[1];
  // Ask oneDNN for the layout it prefers at a typical training shape (a few thousand tokens); the
  // blocked weight layout depends on K and N only, so other input sizes reuse it.
  const dnnl::memory::desc any(dims, dt::bf16, tag::any);
  const auto pd = product_desc(2048, s.k, s.n, any, 0.0f);
  s.packed_desc = pd.weights_desc();
  s.packed = dnnl::memory(s.packed_desc, cpu_engine());
  const dnnl::memory::desc plain_desc(dims, dt::bf16, plain_weight_tag(product));
  dnnl::memory plain(plain_desc, cpu_engine(), const_cast<uint16_t*>(w));
  dnnl::stream stream(cpu_engine());
  dnnl::reorder(plain, s.packed).execute(stream, plain, s.packed);
  stream.wait();
}

PackedBf16Weight::~PackedBf16Weight() = default;
PackedBf16Weight::PackedBf16Weight(PackedBf16Weight&&) noexcept = default;
PackedBf16Weight& PackedBf16Weight::operator=(PackedBf16Weight&&) noexcept = default;

int64_t PackedBf16Weight::rows() const { return impl_->rows; }
int64_t PackedBf16Weight::cols() const { return impl_->cols; }
Bf16Product PackedBf16Weight::product() const { return impl_->product; }
std::size_t PackedBf16Weight::packed_bytes() const { return impl_->packed_desc.get_size(); }

void PackedBf16Weight::multiply(const float* in, int64_t n, float* out, float beta) const {
  if (n <= 0) return;
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  const auto& p = s.prepare(n, beta);
  s.input.resize(static_cast<std::size_t>(n * s.k));
  round_to_bf16(in, n * s.k, s.input.data());
  run_product(p.mm, p.pd, s.input.data(), s.packed, out);
}

void matmul_bf16(Bf16Product product, const uint16_t* w, int64_t rows, int64_t cols,
                 const float* in, int64_t n, float* out, float beta) {
  check_shape(rows, cols, "matmul_bf16");
  if (n <= 0) return;
  const int64_t k = weight_dims(product, rows, cols)[0];
  // Every value is written: no zero-fill pass first.
  const auto input = std::make_unique_for_overwrite<uint16_t[]>(static_cast<std::size_t>(n * k));
  round_to_bf16(in, n * k, input.get());
  matmul_bf16_rounded(product, w, rows, cols, input.get(), n, out, beta);
}

void matmul_bf16_rounded(Bf16Product product, const uint16_t* w, int64_t rows, int64_t cols,
                         const uint16_t* in_bf16, int64_t n, float* out, float beta) {
  check_shape(rows, cols, "matmul_bf16");
  if (n <= 0) return;
  const auto dims = weight_dims(product, rows, cols);
  const dnnl::memory::desc plain_desc(dims, dt::bf16, plain_weight_tag(product));
  // oneDNN's primitive cache makes repeated shapes cheap to set up.
  const auto pd = product_desc(n, dims[0], dims[1], plain_desc, beta);
  dnnl::memory weights(plain_desc, cpu_engine(), const_cast<uint16_t*>(w));
  run_product(dnnl::matmul(pd), pd, in_bf16, weights, out);
}

void round_rows_to_bf16(const float* in, int64_t rows, int64_t cols, int64_t ld_in, uint16_t* out,
                        int64_t ld_out) {
  if (ld_in == cols && ld_out == cols) {
    round_to_bf16(in, rows * cols, out);
    return;
  }
  const RoundBlock round = round_block();  // not round_to_bf16: no serial region per row
  parallel_for(rows, rows * cols >= (int64_t(1) << 14),
               [&](int64_t r) { round(in + r * ld_in, cols, out + r * ld_out); });
}

}  // namespace lora
