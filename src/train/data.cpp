// Token datasets, the resumable random batch sampler and validation windows (see data.h).
#include "train/data.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"

namespace sw::train {
namespace {

constexpr const char* kStateMagic = "speedwins-batch-sampler";
constexpr int kStateVersion = 1;

}  // namespace

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  SW_ASSERT(n > 0);
  // Draws below 2^64 mod n would make the low residues more likely; rejecting them leaves a
  // multiple of n equally likely values.
  uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

double uniform_unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

TokenDataset::TokenDataset(std::vector<int32_t> tokens, double val_fraction, int32_t vocab_size)
    : tokens_(std::move(tokens)), val_fraction_(val_fraction) {
  SW_CHECK(!tokens_.empty(), "data", "token dataset: no tokens (expected a non-empty token stream)");
  SW_CHECK(val_fraction >= 0 && val_fraction < 1, "data", "token dataset: val_fraction ", val_fraction,
           ", expected a number in [0, 1)");
  for (size_t i = 0; i < tokens_.size(); ++i) {
    int32_t id = tokens_[i];
    SW_CHECK(id >= 0 && (vocab_size <= 0 || id < vocab_size), "data", "token dataset: id ", id, " at position ", i,
             " is out of range, expected [0, ", vocab_size > 0 ? std::to_string(vocab_size) : "inf", ")");
  }
  size_t n_val = static_cast<size_t>(std::floor(val_fraction * static_cast<double>(tokens_.size())));
  train_size_ = tokens_.size() - n_val;
}

BatchSampler::BatchSampler(const TokenDataset& data, int64_t batch, int64_t seq_len, uint64_t seed)
    : data_(data), batch_(batch), seq_len_(seq_len), seed_(seed), rng_(seed) {
  SW_CHECK(batch > 0 && seq_len > 0, "data", "batch sampler: batch ", batch, " and seq_len ", seq_len,
           ", expected both > 0");
  SW_CHECK(static_cast<int64_t>(data.train().size()) >= seq_len + 1, "data", "batch sampler: the training part has ",
           data.train().size(), " tokens, expected at least seq_len + 1 = ", seq_len + 1);
}

Batch BatchSampler::next() {
  std::span<const int32_t> train = data_.train();
  uint64_t starts = train.size() - static_cast<uint64_t>(seq_len_);  // offsets 0 .. size - T - 1
  Batch b{Tensor::empty({batch_, seq_len_}, DType::i32), Tensor::empty({batch_, seq_len_}, DType::i32)};
  int32_t* in = b.inputs.data<int32_t>();
  int32_t* tg = b.targets.data<int32_t>();
  for (int64_t r = 0; r < batch_; ++r) {
    const int32_t* w = train.data() + uniform_below(rng_, starts);
    std::copy(w, w + seq_len_, in + r * seq_len_);
    std::copy(w + 1, w + seq_len_ + 1, tg + r * seq_len_);
  }
  ++drawn_;
  return b;
}

std::string BatchSampler::state() const {
  std::ostringstream os;
  os << kStateMagic << ' ' << kStateVersion << '\n'
     << "batch " << batch_ << '\n'
     << "seq_len " << seq_len_ << '\n'
     << "train_tokens " << data_.train().size() << '\n'
     << "seed " << seed_ << '\n'
     << "drawn " << drawn_ << '\n'
     << "rng " << rng_ << '\n';
  return os.str();
}

void BatchSampler::restore(const std::string& state) {
  std::istringstream is(state);
  // Reads "<name> <value>" and checks the name; every failure names the field and what was expected.
  auto read = [&](const char* name, auto& value, const char* expected) {
    std::string key;
    is >> key;
    SW_CHECK(is && key == name, "data", "batch sampler state: field '", name, "': found '", key.substr(0, 40),
             "', expected '", name, " <", expected, ">'");
    is >> value;
    SW_CHECK(static_cast<bool>(is), "data", "batch sampler state: field '", name, "': expected ", expected);
  };
  int version = 0;
  int64_t batch = 0, seq_len = 0, drawn = 0;
  uint64_t train_tokens = 0, seed = 0;
  std::mt19937_64 rng;
  read(kStateMagic, version, "format version");
  SW_CHECK(version == kStateVersion, "data", "batch sampler state: version ", version, ", expected ", kStateVersion);
  read("batch", batch, "integer");
  read("seq_len", seq_len, "integer");
  read("train_tokens", train_tokens, "integer");
  read("seed", seed, "integer");
  read("drawn", drawn, "integer");
  read("rng", rng, "the 312 words of an mt19937_64 state");
  is >> std::ws;
  SW_CHECK(is.eof(), "data", "batch sampler state: unexpected text after field 'rng', expected the end");
  SW_CHECK(batch == batch_ && seq_len == seq_len_, "data", "batch sampler state: fields 'batch'/'seq_len' are ",
           batch, "/", seq_len, ", expected ", batch_, "/", seq_len_, " (the run's settings changed)");
  SW_CHECK(train_tokens == data_.train().size(), "data", "batch sampler state: field 'train_tokens' is ",
           train_tokens, ", expected ", data_.train().size(), " (the data or its split changed)");
  SW_CHECK(drawn >= 0, "data", "batch sampler state: field 'drawn' is ", drawn, ", expected >= 0");
  seed_ = seed;
  drawn_ = drawn;
  rng_ = rng;
}

ValidationBatches::ValidationBatches(const TokenDataset& data, int64_t batch, int64_t seq_len)
    : val_(data.validation()), batch_(batch), seq_len_(seq_len) {
  SW_CHECK(batch > 0 && seq_len > 0, "data", "validation batches: batch ", batch, " and seq_len ", seq_len,
           ", expected both > 0");
  SW_CHECK(val_.size() >= 2, "data", "validation batches: the validation part has ", val_.size(),
           " tokens, expected at least 2 (raise val_fraction above ", data.val_fraction(), ")");
  int64_t targets = static_cast<int64_t>(val_.size()) - 1;
  windows_ = (targets + seq_len - 1) / seq_len;
}

int64_t ValidationBatches::num_targets() const { return static_cast<int64_t>(val_.size()) - 1; }

Batch ValidationBatches::get(int64_t index) const {
  SW_CHECK(index >= 0 && index < num_batches(), "data", "validation batch ", index, " out of range, expected [0, ",
           num_batches(), ")");
  const int64_t n = static_cast<int64_t>(val_.size()), T = seq_len_;
  int64_t first = index * batch_, rows = std::min(batch_, windows_ - first);
  Batch b{Tensor::empty({rows, T}, DType::i32), Tensor::empty({rows, T}, DType::i32)};
  for (int64_t r = 0; r < rows; ++r) {
    int32_t* in = b.inputs.data<int32_t>() + r * T;
    int32_t* tg = b.targets.data<int32_t>() + r * T;
    int64_t covered = (first + r) * T;  // targets so far: tokens 1 .. covered
    int64_t start = std::max<int64_t>(0, std::min(covered, n - T - 1));
    for (int64_t j = 0; j < T; ++j) {
      int64_t t = start + j + 1;  // the token this position predicts
      in[j] = t - 1 < n ? val_[t - 1] : 0;
      tg[j] = (t < n && t > covered) ? val_[t] : -1;
    }
  }
  return b;
}

}  // namespace sw::train
