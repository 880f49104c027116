// Throughput of a model, measured against the machine's ceilings of the same run:
//   prefill: tokens/s of one forward over a fresh prompt; MFU = tokens/s x forward FLOPs per token
//            (at the mean causal context) / the GEMM ceiling of the weights' dtype;
//   decode:  tokens/s of single-token steps after a prompt of `context` tokens; MBU = tokens/s x
//            bytes each step must read (the weights on a token's path, plus the layer states) /
//            the streaming-read bandwidth;
//   train:   tokens/s of forward + backward + AdamW step;
// with the peak tensor memory of each and the inference-state bytes per sequence.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/ceilings.h"
#include "models/language_model.h"

namespace sw::bench {

struct PrefillPoint {
  int64_t len = 0, batch = 1;
  double tokens_per_s = 0, mfu = 0;
  int64_t peak_bytes = 0;
};
struct DecodePoint {
  int64_t context = 0, batch = 1, steps = 0;
  double tokens_per_s = 0, mbu = 0, bytes_per_token = 0;
  double attention_share = -1;  // fraction of decode time inside attention over the KV cache (-1: none)
  int64_t state_bytes = 0;
  // Hybrids: microseconds per decoded token spent in the blocks of each mixer type (mixer, norms
  // and FFN of the block), and the state bytes per sequence by kind ("kv", "recurrent", ...).
  std::map<std::string, double> us_per_token_by_layer;
  std::map<std::string, int64_t> state_bytes_by_kind;
};
struct TrainPoint {
  int64_t len = 0, batch = 1;
  std::string precision = "f32";  // GEMM inputs: f32, or bf16 with f32 master weights
  double tokens_per_s = 0, mfu = 0;
  int64_t peak_bytes = 0;
};

struct ModelBenchConfig {
  std::vector<int64_t> prefill_lengths = {512, 4096};
  std::vector<int64_t> decode_contexts = {512, 4096};
  std::vector<int64_t> train_lengths = {512};
  bool train_bf16 = true;  // also time the training step with bf16 GEMMs (mixed precision)
  std::vector<int64_t> batches = {1};  // every measurement is taken at each batch size
  int64_t decode_steps = 32;
  bool bf16_weights = false;
  double min_seconds = 0.3;  // per measurement
};

// min_trials 0: a single timed run with no warm-up (for long prompts once a short one has warmed
// the code paths; the arena's time budget cannot afford five 16k-token prefills per preset).
PrefillPoint bench_prefill(models::LanguageModel& m, int64_t len, int64_t batch, const Ceilings& c, double min_seconds,
                           int min_trials = 3);
DecodePoint bench_decode(models::LanguageModel& m, int64_t context, int64_t batch, int64_t steps, const Ceilings& c);
TrainPoint bench_train_step(models::LanguageModel& m, int64_t len, int64_t batch, const Ceilings& c, double min_seconds,
                            DType precision = DType::f32);


struct ModelBenchResult {
  std::string preset;
  int64_t params = 0;
  std::vector<PrefillPoint> prefill;
  std::vector<DecodePoint> decode;
  std::vector<TrainPoint> train;
};

ModelBenchResult bench_model(models::LanguageModel& m, const std::string& preset, const ModelBenchConfig& cfg,
                             const Ceilings& c, bool progress);
nlohmann::json to_json(const ModelBenchResult& r);
std::string format_table(const ModelBenchResult& r);

}  // namespace sw::bench
