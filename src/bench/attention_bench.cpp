#include "bench/attention_bench.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/timer.h"
#include "kernels/attention/flash_attention.h"
#include "kernels/attention/sage_attention.h"

namespace sw::bench {
namespace {

namespace ka = sw::kernels::attention;

std::vector<float> normal(size_t n, std::mt19937_64& rng, float stddev = 1.f) {
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> x(n);
  for (auto& e : x) e = dist(rng);
  return x;
}

AttentionTiming summarise(std::vector<double> t, double flops, int64_t len, const Ceilings& c) {
  AttentionTiming r;
  std::sort(t.begin(), t.end());
  r.median_s = t[t.size() / 2];
  r.min_s = t.front();
  r.max_s = t.back();
  r.tokens_per_s = static_cast<double>(len) / r.median_s;
  r.gflops = flops / r.median_s / 1e9;
  r.mfu = c.f32_gflops > 0 ? r.gflops / c.f32_gflops : 0;
  return r;
}

}  // namespace

std::vector<AttentionBenchPoint> bench_attention(const AttentionBenchConfig& cfg, const Ceilings& c, bool progress) {
  SW_CHECK(!cfg.lengths.empty(), "bench", "attention: no sequence lengths given");
  SW_CHECK(cfg.repeats >= 5, "bench", "attention: at least 5 repeats, got ", cfg.repeats);
  std::vector<AttentionBenchPoint> out;
  for (const auto& [hq, hkv] : cfg.heads) {
    for (int64_t len : cfg.lengths) {
      SW_CHECK(len > 0 && len <= (1 << 20), "bench", "attention: sequence length must be in [1, 2^20], got ", len);
      ka::AttentionDims d;
      d.B = 1, d.Tq = static_cast<int>(len), d.Tk = static_cast<int>(len), d.Hq = hq, d.Hkv = hkv;
      d.Dk = d.Dv = cfg.head_dim;
      ka::AttentionParams p;  // causal, default scale
      std::mt19937_64 rng(1234 + len);
      const size_t nq = static_cast<size_t>(len) * hq * d.Dk, nk = static_cast<size_t>(len) * hkv * d.Dk;
      std::vector<float> q = normal(nq, rng), k = normal(nk, rng), v = normal(nk, rng, 0.5f);
      std::vector<float> bias = normal(d.Dk, rng, 2.f);  // a per-channel key bias (what smoothing removes)
      for (size_t i = 0; i < nk; ++i) k[i] += bias[i % d.Dk];
      std::vector<float> o(static_cast<size_t>(len) * hq * d.Dv), lse(static_cast<size_t>(hq) * len);

      AttentionBenchPoint pt;
      pt.len = len, pt.hq = hq, pt.hkv = hkv, pt.head_dim = cfg.head_dim;
      pt.flops = 4.0 * static_cast<double>(len) * static_cast<double>(len) / 2 * d.Dk * hq;
      pt.sage_isa = ka::sage_isa_name(ka::sage_resolve_isa(ka::SageIsa::kAuto));
      auto flash = [&] { ka::flash_attention_forward(q.data(), k.data(), v.data(), d, p, o.data(), lse.data()); };
      auto sage = [&] { ka::sage_attention_forward(q.data(), k.data(), v.data(), d, p, true, o.data(), lse.data()); };
      flash();  // warm: scratch buffers, page faults
      sage();
      std::vector<double> tf, ts, ratio;
      const double start = now_seconds();
      while (static_cast<int>(tf.size()) < cfg.repeats || (now_seconds() - start < cfg.min_seconds && tf.size() < 100)) {
        double t0 = now_seconds();
        flash();
        double t1 = now_seconds();
        sage();
        double t2 = now_seconds();
        tf.push_back(t1 - t0);
        ts.push_back(t2 - t1);
        ratio.push_back((t1 - t0) / (t2 - t1));
        if (progress)
          std::fprintf(stderr, "\rattention T=%lld Hq=%d Hkv=%d: repeat %zu   ", static_cast<long long>(len), hq, hkv,
                       tf.size());
      }
      pt.repeats = static_cast<int>(tf.size());
      pt.flash = summarise(tf, pt.flops, len, c);
      pt.sage = summarise(ts, pt.flops, len, c);
      pt.speedup = pt.flash.median_s / pt.sage.median_s;
      pt.speedup_min = *std::min_element(ratio.begin(), ratio.end());
      pt.speedup_max = *std::max_element(ratio.begin(), ratio.end());
      out.push_back(pt);
    }
  }
  if (progress) std::fprintf(stderr, "\n");
  return out;
}

nlohmann::json to_json(const std::vector<AttentionBenchPoint>& r) {
  nlohmann::json j = nlohmann::json::array();
  auto timing = [](const AttentionTiming& t) {
    return nlohmann::json{{"median_s", t.median_s}, {"min_s", t.min_s},   {"max_s", t.max_s},
                          {"tokens_per_s", t.tokens_per_s}, {"gflops", t.gflops}, {"mfu", t.mfu}};
  };
  for (const AttentionBenchPoint& p : r)
    j.push_back({{"name", "T" + std::to_string(p.len) + "_h" + std::to_string(p.hq) + "x" + std::to_string(p.hkv)},
                 {"len", p.len},
                 {"batch", 1},
                 {"hq", p.hq},
                 {"hkv", p.hkv},
                 {"head_dim", p.head_dim},
                 {"causal", true},
                 {"repeats", p.repeats},
                 {"flops", p.flops},
                 {"flash_f32", timing(p.flash)},
                 {"sage_int8", timing(p.sage)},
                 {"sage_isa", p.sage_isa},
                 {"speedup_sage_over_flash", p.speedup},
                 {"speedup_min", p.speedup_min},
                 {"speedup_max", p.speedup_max}});
  return j;
}

std::string format_table(const std::vector<AttentionBenchPoint>& r) {
  std::ostringstream os;
  char line[240];
  os << "Attention prefill (B=1, causal; median of repeats, min..max in ms; GFLOP/s counts 4*T*T/2*D*Hq)\n";
  std::snprintf(line, sizeof line, "  %-7s %-7s %-4s %-22s %10s %8s %6s  %-22s %10s %8s %6s  %s\n", "T", "Hq/Hkv", "D",
                "flash fp32 ms", "tok/s", "GFLOP/s", "MFU", "sage int8 ms", "tok/s", "GFLOP/s", "MFU",
                "sage/flash speed (min..max)");
  os << line;
  for (const AttentionBenchPoint& p : r) {
    char fl[40], sg[40], hh[16];
    std::snprintf(fl, sizeof fl, "%.1f (%.1f..%.1f)", p.flash.median_s * 1e3, p.flash.min_s * 1e3, p.flash.max_s * 1e3);
    std::snprintf(sg, sizeof sg, "%.1f (%.1f..%.1f)", p.sage.median_s * 1e3, p.sage.min_s * 1e3, p.sage.max_s * 1e3);
    std::snprintf(hh, sizeof hh, "%d/%d", p.hq, p.hkv);
    std::snprintf(line, sizeof line,
                  "  %-7lld %-7s %-4d %-22s %10.0f %8.1f %5.1f%%  %-22s %10.0f %8.1f %5.1f%%  %.2fx (%.2f..%.2f) [%s, %d reps]\n",
                  static_cast<long long>(p.len), hh, p.head_dim, fl, p.flash.tokens_per_s, p.flash.gflops,
                  100 * p.flash.mfu, sg, p.sage.tokens_per_s, p.sage.gflops, 100 * p.sage.mfu, p.speedup,
                  p.speedup_min, p.speedup_max, p.sage_isa.c_str(), p.repeats);
    os << line;
  }
  return os.str();
}

}  // namespace sw::bench
