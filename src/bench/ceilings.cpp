#include "bench/ceilings.h"

#include <omp.h>

#include <cstdio>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>

#include "core/tensor.h"
#include "core/timer.h"
#include "kernels/gemm/gemm.h"

namespace sw::bench {
namespace {

// oneDNN called directly: one primitive and memory objects made once, executed in a loop. This is
// the best our wrapper could do; the table shows how close it gets.
double direct_onednn_seconds(int64_t m, int64_t n, int64_t k, DType t, void* a, void* b, float* c, bool quick) {
  using dnnl::memory;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  auto dt = t == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  // B is stored [n, k] (format ba of the logical [k, n]): the layout of every Linear's weight.
  memory::desc amd({m, k}, dt, memory::format_tag::ab), bmd({k, n}, dt, memory::format_tag::ba),
      cmd({m, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul mm(dnnl::matmul::primitive_desc(dnnl::matmul::desc(amd, bmd, cmd), eng));
  memory am(amd, eng, a), bm(bmd, eng, b), cm(cmd, eng, c);
  return time_median(
      [&] {
        mm.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
        strm.wait();
      },
      quick ? 0.05 : 0.4);
}

}  // namespace

std::vector<GemmPoint> gemm_table(bool quick) {
  const int64_t shapes[][3] = {{512, 768, 768}, {512, 2048, 768}, {2048, 2048, 2048}, {1, 2048, 768}};
  std::vector<GemmPoint> out;
  for (DType t : {DType::f32, DType::bf16}) {
    for (auto& s : shapes) {
      GemmPoint p{s[0], s[1], s[2], t};
      // Activations [m, k] times a weight stored [n, k], as nn::Linear multiplies (y = x W^T).
      Tensor a = Tensor::full({p.m, p.k}, 0.5, t), b = Tensor::full({p.n, p.k}, 0.25, t);
      Tensor c = Tensor::zeros({p.m, p.n});
      double flops = 2.0 * p.m * p.n * p.k;
      kernels::GemmArgs g;
      g.m = p.m, g.n = p.n, g.k = p.k;
      g.a = a.raw_data(), g.a_type = t, g.lda = p.k;
      g.b = b.raw_data(), g.b_type = t, g.trans_b = true, g.ldb = p.k;
      g.c = c.data<float>(), g.ldc = p.n;
      // Alternate the two measurements so that frequency drift or a busy neighbour hits both alike.
      // Without a bf16 matmul in oneDNN on this CPU, the wrapper widens bf16 to f32 (its bf16 rate
      // is then the machine's bf16 ceiling) and there is no direct bf16 call to compare with.
      const bool direct = t != DType::bf16 || kernels::gemm_bf16_native();
      double tw = 1e30, td = 1e30;
      for (int rep = 0; rep < 2; ++rep) {
        tw = std::min(tw, time_median([&] { kernels::gemm(g); }, quick ? 0.05 : 0.4));
        if (direct)
          td = std::min(td, direct_onednn_seconds(p.m, p.n, p.k, t, a.raw_data(), b.raw_data(), c.data<float>(), quick));
      }
      p.wrapper_gflops = flops / tw * 1e-9;
      p.direct_gflops = direct ? flops / td * 1e-9 : 0;
      out.push_back(p);
    }
  }
  return out;
}

void measure_bandwidth(Ceilings& c, bool quick) {
  // 3 x 64 MiB (or 3 x 16 MiB quick): far past the last-level cache.
  int64_t n = (quick ? 4 : 16) * (1 << 20);
  Tensor ta = Tensor::zeros({n}), tb = Tensor::full({n}, 1.0), tc = Tensor::full({n}, 2.0);
  float* a = ta.data<float>();
  const float* b = tb.data<float>();
  const float* cc = tc.data<float>();
  double t = time_median(
      [&] {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) a[i] = b[i] + 3.f * cc[i];
      },
      quick ? 0.1 : 0.5);
  c.triad_gbs = 3.0 * n * sizeof(float) / t * 1e-9;
  // Streaming read: 16 independent accumulators per thread so the adds vectorise and pipeline (a
  // single running sum is one dependent add chain and measures add latency, not memory).
  volatile float sink = 0;
  t = time_median(
      [&] {
        float total = 0;
#pragma omp parallel reduction(+ : total)
        {
          float acc[16] = {};
#pragma omp for schedule(static)
          for (int64_t i = 0; i < n / 16; ++i)
#pragma omp simd
            for (int j = 0; j < 16; ++j) acc[j] += b[i * 16 + j];
          for (float x : acc) total += x;
        }
        sink = total;
      },
      quick ? 0.1 : 0.5);
  (void)sink;
  c.read_gbs = static_cast<double>(n / 16 * 16) * sizeof(float) / t * 1e-9;
}

Ceilings measure_ceilings(bool quick) {
  Ceilings c;
  c.threads = omp_get_max_threads();
  c.gemm = gemm_table(quick);
  for (const GemmPoint& p : c.gemm) {
    if (p.m == 1) continue;  // the GEMV shape is bandwidth-bound, not a compute ceiling
    double& best = p.dtype == DType::bf16 ? c.bf16_gflops : c.f32_gflops;
    best = std::max(best, p.wrapper_gflops);
  }
  measure_bandwidth(c, quick);
  return c;
}

nlohmann::json to_json(const Ceilings& c) {
  nlohmann::json j;
  j["threads"] = c.threads;
  j["f32_gemm_gflops"] = c.f32_gflops;
  j["bf16_gemm_gflops"] = c.bf16_gflops;
  j["triad_gbs"] = c.triad_gbs;
  j["read_gbs"] = c.read_gbs;
  for (const GemmPoint& p : c.gemm)
    j["gemm"].push_back({{"m", p.m}, {"n", p.n}, {"k", p.k}, {"dtype", dtype_name(p.dtype)},
                         {"wrapper_gflops", p.wrapper_gflops},
                         {"direct_gflops", p.direct_gflops > 0 ? nlohmann::json(p.direct_gflops) : nlohmann::json()},
                         {"wrapper_over_direct", p.direct_gflops > 0 ? nlohmann::json(p.wrapper_gflops / p.direct_gflops)
                                                                     : nlohmann::json()}});
  j["bf16_native"] = kernels::gemm_bf16_native();
  return j;
}

std::string format_table(const Ceilings& c) {
  std::ostringstream os;
  char line[160];
  os << "GEMM through speedwins' wrapper vs oneDNN called directly (" << c.threads << " threads)\n";
  os << "  dtype  M     N     K     wrapper GFLOP/s  direct GFLOP/s  wrapper/direct\n";
  for (const GemmPoint& p : c.gemm) {
    if (p.direct_gflops > 0)
      std::snprintf(line, sizeof line, "  %-5s  %-5lld %-5lld %-5lld %15.1f %15.1f %14.1f%%\n", dtype_name(p.dtype),
                    static_cast<long long>(p.m), static_cast<long long>(p.n), static_cast<long long>(p.k),
                    p.wrapper_gflops, p.direct_gflops, 100.0 * p.wrapper_gflops / p.direct_gflops);
    else
      std::snprintf(line, sizeof line, "  %-5s  %-5lld %-5lld %-5lld %15.1f %15s %15s\n", dtype_name(p.dtype),
                    static_cast<long long>(p.m), static_cast<long long>(p.n), static_cast<long long>(p.k),
                    p.wrapper_gflops, "n/a", "(widened)");
    os << line;
  }
  if (!kernels::gemm_bf16_native())
    os << "  (this CPU has no oneDNN bf16 matmul: bf16 operands are widened to f32, exact but not faster)\n";
  std::snprintf(line, sizeof line,
                "Ceilings: f32 GEMM %.1f GFLOP/s, bf16 GEMM %.1f GFLOP/s, triad %.1f GB/s, read %.1f GB/s\n",
                c.f32_gflops, c.bf16_gflops, c.triad_gbs, c.read_gbs);
  os << line;
  return os.str();
}

}  // namespace sw::bench
