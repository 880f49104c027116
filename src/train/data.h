// Token data for language-model training: a token stream split into train and validation parts,
// seeded random training windows whose sampler state can be saved and restored bit-exactly, and a
// deterministic pass over the validation part.
//
// Windows hold T+1 consecutive tokens: inputs are the first T, targets the last T (next token).
// Random numbers come from our own bounded draws over std::mt19937_64 (whose sequence the standard
// fixes), not from std::uniform_int_distribution (whose mapping differs between libraries), so a
// seed gives the same batches on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sw::train {

// A uniform integer in [0, n), n > 0, by rejection (no modulo bias).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);
// A uniform double in [0, 1) with 53 random bits.
double uniform_unit(std::mt19937_64& rng);

struct Batch {
  Tensor inputs;   // i32 [B, T]
  Tensor targets;  // i32 [B, T]; -1 = ignore (validation tail only)
};

// The last floor(val_fraction * n) tokens are validation, the rest training. Ids must be >= 0 and,
// when vocab_size > 0 is given, below it (sw::Error naming the first bad position otherwise).
class TokenDataset {
 public:
  explicit TokenDataset(std::vector<int32_t> tokens, double val_fraction = 0.05, int32_t vocab_size = 0);

  std::span<const int32_t> train() const { return {tokens_.data(), train_size_}; }
  std::span<const int32_t> validation() const { return {tokens_.data() + train_size_, tokens_.size() - train_size_}; }
  size_t size() const { return tokens_.size(); }
  double val_fraction() const { return val_fraction_; }

 private:
  std::vector<int32_t> tokens_;
  size_t train_size_ = 0;
  double val_fraction_ = 0;
};

// Random windows from the training part: each row starts at a uniform offset in
// [0, train_size - T - 1]. The dataset must outlive the sampler.
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& data, int64_t batch, int64_t seq_len, uint64_t seed);

  Batch next();
  int64_t batches_drawn() const { return drawn_; }

  // The "data position": everything needed to continue the exact batch sequence, as text. restore()
  // rejects (sw::Error naming the field) a state from a different batch, seq_len or training size.
  std::string state() const;
  void restore(const std::string& state);

 private:
  const TokenDataset& data_;
  int64_t batch_, seq_len_;
  uint64_t seed_;
  int64_t drawn_ = 0;
  std::mt19937_64 rng_;
};

// The validation part as consecutive windows: window w starts at w*T, so every validation token
// after the first is a target exactly once. The last window is moved back to end at the last token,
// with targets already covered set to -1; a validation part shorter than T+1 gives one window
// padded with 0 inputs and -1 targets. The last batch may have fewer than `batch` rows.
class ValidationBatches {
 public:
  ValidationBatches(const TokenDataset& data, int64_t batch, int64_t seq_len);

  int64_t num_windows() const { return windows_; }
  int64_t num_batches() const { return (windows_ + batch_ - 1) / batch_; }
  int64_t num_targets() const;  // non-ignored targets over all batches: validation size - 1
  Batch get(int64_t index) const;

 private:
  std::span<const int32_t> val_;
  int64_t batch_, seq_len_, windows_;
};

}  // namespace sw::train
