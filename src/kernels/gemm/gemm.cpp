#include "kernels/gemm/gemm.h"

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/scratch.h"

namespace sw::kernels {
namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

memory::data_type dnnl_type(DType t) { return t == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32; }

struct Key {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc, batch, sa, sb, sc;
  DType at, bt;
  float alpha, beta;
  auto tie() const { return std::tie(ta, tb, m, n, k, lda, ldb, ldc, batch, sa, sb, sc, at, bt, alpha, beta); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct Prim {
  dnnl::matmul matmul;
  memory::desc a_md, b_md, c_md, scratch_md;
};

// Memory descriptor of a [batch, rows, cols] view with explicit strides (a transposed operand is a
// [rows, cols] view with column-major strides).
memory::desc view_md(int64_t batch, int64_t rows, int64_t cols, bool transposed, int64_t ld, int64_t bstride,
                     DType t) {
  memory::dims dims = {batch, rows, cols};
  memory::dims strides = transposed ? memory::dims{bstride, 1, ld} : memory::dims{bstride, ld, 1};
  if (batch == 1 && bstride == 0) strides[0] = rows * cols;  // any value is fine for a single item
  return memory::desc(dims, dnnl_type(t), strides);
}

std::mutex g_mutex;
std::map<Key, Prim> g_cache;

const Prim& get_prim(const Key& key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second;
  Prim p;
  p.a_md = view_md(key.batch, key.m, key.k, key.ta, key.lda, key.sa, key.at);
  // A shared B (stride 0) is broadcast over the batch by oneDNN when its batch dim is 1.
  int64_t b_batch = key.sb == 0 ? 1 : key.batch;
  p.b_md = view_md(b_batch, key.k, key.n, key.tb, key.ldb, key.sb, key.bt);
  p.c_md = view_md(key.batch, key.m, key.n, false, key.ldc, key.sc, DType::f32);
  dnnl::primitive_attr attr;
  // Each call brings its own scratchpad: with the library's shared one (Debian's oneDNN is built
  // without DNNL_ENABLE_CONCURRENT_EXEC), two matmuls executed at once from different threads (the
  // MoE experts' GEMMs run concurrently) would overwrite each other's scratch.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (key.alpha != 1.f) attr.set_output_scales(0, {key.alpha});
  if (key.beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(key.beta);
    attr.set_post_ops(po);
  }
  auto pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a_md, p.b_md, p.c_md), attr, cpu_engine());
  p.matmul = dnnl::matmul(pd);
  p.scratch_md = pd.scratchpad_desc();
  return g_cache.emplace(key, std::move(p)).first->second;
}

// Whether oneDNN runs bf16 matmuls on this CPU (AVX512-BF16 / AMX, or AVX512 emulation). Older
// x86 (e.g. Zen1/2, AVX2 only) has no bf16 path: there bf16 operands are widened to f32, which is
// exact (a bf16 is the upper half of an f32), so the product and the f32 accumulation are the same
// as on the bf16 units, only not faster.
bool bf16_matmul_supported() {
  static const bool ok = [] {
    try {
      memory::desc a({1, 2, 2}, memory::data_type::bf16, memory::dims{4, 2, 1});
      memory::desc c({1, 2, 2}, memory::data_type::f32, memory::dims{4, 2, 1});
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), dnnl::primitive_attr(), cpu_engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

// The bf16 operand [batch?, stored rows, ld] widened into a contiguous f32 buffer of the same
// strides (so lda/ldb and batch strides stay valid).
const float* widen_bf16(const void* src, int64_t rows, int64_t cols, bool trans, int64_t ld, int64_t bstride,
                        int64_t batch, std::vector<float>& buf) {
  const int64_t sr = trans ? cols : rows, sc = trans ? rows : cols;
  const int64_t items = bstride == 0 ? 1 : batch;
  const int64_t span = (items - 1) * bstride + (sr - 1) * ld + sc;
  buf.resize(static_cast<size_t>(span));
  const bf16* s = static_cast<const bf16*>(src);
#pragma omp parallel for collapse(2) schedule(static) if (items * sr * sc > (1 << 15))
  for (int64_t b = 0; b < items; ++b)
    for (int64_t r = 0; r < sr; ++r) {
      const int64_t off = b * bstride + r * ld;
      for (int64_t j = 0; j < sc; ++j) buf[static_cast<size_t>(off + j)] = bf16_to_f32(s[off + j]);
    }
  return buf.data();
}

}  // namespace

bool gemm_bf16_native() { return bf16_matmul_supported(); }

int64_t gemm_primitive_count() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return static_cast<int64_t>(g_cache.size());
}

void gemm(const GemmArgs& g) {
  SW_ASSERT(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 1);
  if (g.m == 0 || g.n == 0) return;
  GemmArgs a = g;
  // oneDNN needs both operands in one type: a mixed pair runs in bf16 (the f32 side is converted).
  if (a.a_type != a.b_type) {
    auto to_bf16 = [&](const void* src, int64_t rows, int64_t cols, bool trans, int64_t ld, int64_t bstride,
                       int64_t batch, int slot) {
      // Pack into a contiguous [batch, stored_rows, stored_cols] bf16 buffer.
      int64_t sr = trans ? cols : rows, sc = trans ? rows : cols;
      bf16* dst = reinterpret_cast<bf16*>(scratch_floats(slot, (batch * sr * sc + 1) / 2 + 1));
#pragma omp parallel for collapse(2) schedule(static) if (batch * sr * sc > (1 << 15))
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t r = 0; r < sr; ++r) {
          const float* s = static_cast<const float*>(src) + b * bstride + r * ld;
          bf16* d = dst + (b * sr + r) * sc;
          for (int64_t j = 0; j < sc; ++j) d[j] = f32_to_bf16(s[j]);
        }
      return std::tuple<const void*, int64_t, int64_t>(dst, sc, sr * sc);
    };
    if (a.a_type == DType::f32) {
      int64_t nb = a.stride_a == 0 ? 1 : a.batch;
      auto [p, ld, st] = to_bf16(a.a, a.m, a.k, a.trans_a, a.lda, a.stride_a, nb, 6);
      a.a = p, a.lda = ld, a.stride_a = a.stride_a == 0 ? 0 : st, a.a_type = DType::bf16;
    } else {
      int64_t nb = a.stride_b == 0 ? 1 : a.batch;
      auto [p, ld, st] = to_bf16(a.b, a.k, a.n, a.trans_b, a.ldb, a.stride_b, nb, 7);
      a.b = p, a.ldb = ld, a.stride_b = a.stride_b == 0 ? 0 : st, a.b_type = DType::bf16;
    }
  }
  if (a.a_type == DType::bf16 && !bf16_matmul_supported()) {
    thread_local std::vector<float> wa, wb;
    a.a = widen_bf16(a.a, a.m, a.k, a.trans_a, a.lda, a.stride_a, a.batch, wa), a.a_type = DType::f32;
    a.b = widen_bf16(a.b, a.k, a.n, a.trans_b, a.ldb, a.stride_b, a.batch, wb), a.b_type = DType::f32;
  }
  if (a.k == 0) {  // empty reduction: C = beta * C
    for (int64_t b = 0; b < a.batch; ++b)
      for (int64_t i = 0; i < a.m; ++i)
        for (int64_t j = 0; j < a.n; ++j) {
          float& c = a.c[b * a.stride_c + i * a.ldc + j];
          c = a.beta == 0.f ? 0.f : a.beta * c;
        }
    return;
  }
  Key key{a.trans_a, a.trans_b, a.m, a.n, a.k, a.lda, a.ldb, a.ldc, a.batch, a.stride_a, a.stride_b, a.stride_c,
          a.a_type, a.b_type, a.alpha, a.beta};
  const Prim& p = get_prim(key);
  memory am(p.a_md, cpu_engine(), const_cast<void*>(a.a));
  memory bm(p.b_md, cpu_engine(), const_cast<void*>(a.b));
  memory cm(p.c_md, cpu_engine(), a.c);
  thread_local dnnl::stream strm(cpu_engine());
  thread_local std::vector<char> scratch;  // per thread, grown to the largest primitive's need
  if (scratch.size() < p.scratch_md.get_size()) scratch.resize(p.scratch_md.get_size());
  memory sm(p.scratch_md, cpu_engine(), scratch.data());
  p.matmul.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
  strm.wait();
}

void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, bool trans_b, float* c, float beta) {
  GemmArgs g;
  g.m = m, g.n = n, g.k = k, g.beta = beta;
  g.a = a, g.lda = k;
  g.b = b, g.trans_b = trans_b, g.ldb = trans_b ? k : n;
  g.c = c, g.ldc = n;
  gemm(g);
}

}  // namespace sw::kernels
