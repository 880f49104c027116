#include "infer/diffusion_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/timer.h"

namespace sw::infer {
namespace {

// A uniform double in (0, 1): 53 random bits, centred in their cell so log(u) is finite.
double open_unit(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; }

}  // namespace

void validate_diffusion_sampler(const DiffusionSamplerConfig& c, const std::string& where) {
  SW_CHECK(c.gen_length >= 1 && c.gen_length <= (int64_t{1} << 20), "generate", where, ": gen_length ", c.gen_length,
           ": expected an integer in [1, 2^20]");
  SW_CHECK(c.block_length >= 1 && c.block_length <= c.gen_length && c.gen_length % c.block_length == 0, "generate",
           where, ": block_length ", c.block_length, ": expected a divisor of gen_length ", c.gen_length);
  const int64_t blocks = c.gen_length / c.block_length;
  if (c.threshold == 0)
    SW_CHECK(c.steps >= blocks && c.steps <= c.gen_length && c.steps % blocks == 0, "generate", where, ": steps ",
             c.steps, ": expected a multiple of the number of blocks (gen_length / block_length = ", blocks,
             ") in [", blocks, ", ", c.gen_length, "] (gen_length)");
  SW_CHECK(std::isfinite(c.temperature) && c.temperature >= 0 && c.temperature <= 100, "generate", where,
           ": temperature ", c.temperature, ": expected a number in [0, 100]");
  SW_CHECK(c.remasking == "low_confidence" || c.remasking == "random", "generate", where, ": remasking '",
           c.remasking.substr(0, 64), "': expected low_confidence or random");
  SW_CHECK(std::isfinite(c.threshold) && c.threshold >= 0 && c.threshold <= 1, "generate", where, ": threshold ",
           c.threshold, ": expected a number in [0, 1] (0 = off)");
  SW_CHECK(std::isfinite(c.cfg_scale) && c.cfg_scale >= 0 && c.cfg_scale <= 100, "generate", where, ": cfg_scale ",
           c.cfg_scale, ": expected a number in [0, 100] (0 = off)");
}

std::vector<int64_t> num_transfer_tokens(int64_t masked, int64_t steps) {
  SW_CHECK(masked >= 0 && steps >= 1, "generate", "num_transfer_tokens: masked ", masked, " and steps ", steps,
           ": expected masked >= 0 and steps >= 1");
  std::vector<int64_t> n(static_cast<size_t>(steps), masked / steps);
  for (int64_t i = 0; i < masked % steps; ++i) ++n[i];
  return n;
}

DiffusionResult diffusion_generate(const DiffusionLogitsFn& logits_fn, const std::vector<int32_t>& prompt,
                                   int32_t mask_id, int64_t vocab, const DiffusionSamplerConfig& cfg,
                                   const std::function<void(const DiffusionStep&)>& on_step) {
  validate_diffusion_sampler(cfg);
  SW_CHECK(vocab >= 2 && mask_id >= 0 && mask_id < vocab, "generate", "mask id ", mask_id, " outside the vocabulary [0, ",
           vocab, ") (which must hold a token besides it)");
  for (size_t i = 0; i < prompt.size(); ++i)
    SW_CHECK(prompt[i] >= 0 && prompt[i] < vocab && prompt[i] != mask_id, "generate", "prompt token ", i, " is ",
             prompt[i], ": expected an id in [0, ", vocab, ") other than the [MASK] id ", mask_id);
  const double t0 = now_seconds();
  const int64_t P = static_cast<int64_t>(prompt.size()), L = P + cfg.gen_length, V = vocab;
  DiffusionResult r;
  r.canvas = prompt;
  r.canvas.resize(static_cast<size_t>(L), mask_id);
  std::vector<int32_t>& x = r.canvas;
  std::mt19937_64 rng(cfg.seed);
  const int64_t blocks = cfg.gen_length / cfg.block_length;
  const int64_t steps_per_block = cfg.threshold > 0 ? 0 : cfg.steps / blocks;
  auto eval = [&](const std::vector<int32_t>& canvas) {
    std::vector<float> lg = logits_fn(canvas);
    SW_CHECK(static_cast<int64_t>(lg.size()) == L * V, "generate", "the logits function gave ", lg.size(),
             " values; expected canvas length x vocab = ", L, " x ", V);
    return lg;
  };
  struct Candidate {
    double conf;
    int64_t pos;
    int32_t token;
  };
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t start = P + blk * cfg.block_length, end = start + cfg.block_length;
    auto masked_in_block = [&] {
      int64_t n = 0;
      for (int64_t p = start; p < end; ++p) n += x[p] == mask_id;
      return n;
    };
    const std::vector<int64_t> schedule =
        cfg.threshold > 0 ? std::vector<int64_t>{} : num_transfer_tokens(masked_in_block(), steps_per_block);
    for (int64_t i = 0; cfg.threshold > 0 || i < steps_per_block; ++i) {
      if (masked_in_block() == 0) break;
      std::vector<float> lg = eval(x);
      if (cfg.cfg_scale > 0) {  // unconditional: the prompt masked out
        std::vector<int32_t> un = x;
        std::fill(un.begin(), un.begin() + P, mask_id);
        const std::vector<float> lu = eval(un);
        for (size_t j = 0; j < lg.size(); ++j)
          lg[j] = static_cast<float>(lu[j] + (cfg.cfg_scale + 1) * (static_cast<double>(lg[j]) - lu[j]));
      }
      ++r.steps;
      std::vector<Candidate> cand;
      for (int64_t p = start; p < end; ++p) {
        if (x[p] != mask_id) continue;
        const float* l = lg.data() + p * V;
        int32_t best = mask_id == 0 ? 1 : 0;
        double best_score = -std::numeric_limits<double>::infinity(), mx = -std::numeric_limits<double>::infinity();
        for (int64_t v = 0; v < V; ++v) {
          if (v == mask_id) continue;  // never predicted (MDLM's SUBS: the mask logit is -inf)
          double s = l[v];
          mx = std::max(mx, s);
          if (cfg.temperature > 0) s -= cfg.temperature * std::log(-std::log(open_unit(rng)));
          if (s > best_score) best_score = s, best = static_cast<int32_t>(v);  // first maximum on ties
        }
        double conf;
        if (cfg.remasking == "low_confidence") {
          double z = 0;
          for (int64_t v = 0; v < V; ++v)
            if (v != mask_id) z += std::exp(static_cast<double>(l[v]) - mx);
          conf = std::exp(static_cast<double>(l[best]) - mx) / z;
        } else {
          conf = open_unit(rng);
        }
        cand.push_back({conf, p, best});
      }
      std::stable_sort(cand.begin(), cand.end(), [](const Candidate& a, const Candidate& b) { return a.conf > b.conf; });
      int64_t k;
      if (cfg.threshold > 0) {
        k = 1;  // the most confident always, and every other one at or above the threshold
        while (k < static_cast<int64_t>(cand.size()) && cand[k].conf >= cfg.threshold) ++k;
      } else {
        k = std::min<int64_t>(schedule[i], static_cast<int64_t>(cand.size()));
      }
      DiffusionStep st;
      st.step = r.steps, st.block = blk, st.block_start = start, st.block_end = end, st.canvas = &x;
      for (int64_t j = 0; j < k; ++j) {
        x[cand[j].pos] = cand[j].token;
        st.committed.push_back(cand[j].pos);
      }
      r.committed_per_step.push_back(k);
      if (on_step) on_step(st);
    }
  }
  r.generated.assign(x.begin() + P, x.end());
  r.seconds = now_seconds() - t0;
  return r;
}

DiffusionLogitsFn model_logits_fn(models::LanguageModel& model) {
  return [&model](const std::vector<int32_t>& canvas) {
    NoGradGuard g;
    const int64_t L = static_cast<int64_t>(canvas.size());
    Tensor ids = Tensor::from_vector(canvas, {1, L});
    Variable h = model.hidden(ids);
    return model.logits(h.data().reshape({L, model.config().d_model})).to_floats();
  };
}

std::string render_canvas(const std::vector<int32_t>& ids, int32_t mask_id,
                          const std::function<std::string(const std::vector<int32_t>&)>& decode, char placeholder) {
  std::string out;
  std::vector<int32_t> run;
  auto flush = [&] {
    if (!run.empty()) out += decode(run);
    run.clear();
  };
  for (int32_t id : ids) {
    if (id == mask_id) {
      flush();
      out += placeholder;
    } else {
      run.push_back(id);
    }
  }
  flush();
  for (char& c : out)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';  // one progress line
  return out;
}

}  // namespace sw::infer
