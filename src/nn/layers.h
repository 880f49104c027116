// Basic layers: Linear, RMSNorm, Embedding and the dense MLPs of the FFN slot (SwiGLU, GELU).
#pragma once

#include <vector>

#include "nn/module.h"

namespace sw::nn {

// GEMM input precision for every Linear in this thread: f32, or bf16 (AVX512-BF16, fp32 master
// weights and accumulation) for mixed-precision training. Set by the trainer.
DType matmul_dtype();
void set_matmul_dtype(DType t);

class Linear : public Module {
 public:
  // weight [out, in] ~ N(0, std); bias zero-initialised when requested.
  Linear(int64_t in, int64_t out, bool bias, double std, std::mt19937_64& rng);
  Variable forward(const Variable& x);  // x [..., in] -> [..., out]
  Variable& weight() { return *w_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_, out_;
  Variable* w_;
  Variable* b_ = nullptr;
};

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps);
  Variable forward(const Variable& x);

 private:
  Variable* w_;
  double eps_;
};

class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, double std, std::mt19937_64& rng);
  Variable forward(const Tensor& ids);  // ids i32 [...] -> [..., dim]
  Variable& table() { return *table_; }

 private:
  Variable* table_;
};

// The FFN slot's interface: any position-wise map [B, T, D] -> [B, T, D] (a dense MLP, or an MoE
// later, which also reports its auxiliary losses through aux_loss()).
class Ffn : public Module {
 public:
  virtual Variable forward(const Variable& x) = 0;
  virtual Variable aux_loss() { return Variable(); }  // undefined when the FFN has none
  // Routed FFNs (MoE): the fraction of routed assignments each expert received in the last
  // forward (empty for dense FFNs), and the hook the trainer calls after every optimizer step
  // (auxiliary-loss-free balancing moves its selection bias there).
  virtual std::vector<double> expert_load() const { return {}; }
  virtual void end_step() {}
  // Parameters one token uses (a routed FFN: the router, its top-k experts, shared experts).
  virtual int64_t active_parameters() { return num_parameters(); }
  // Bytes of weights the last forward read (a routed FFN: only the experts some token chose), so
  // decode bandwidth is measured on what decode actually streams.
  virtual double last_weight_bytes();
  // GEMM weights on the path of one token (2 FLOPs each): a routed FFN counts its top-k experts.
  virtual double gemm_weights_per_token();
  // While set, every forward appends a copy of its input rows [N, D] to *sink (conversions that
  // need activation statistics, e.g. MoEfication's calibration pass). Null turns it off.
  void set_input_capture(std::vector<Tensor>* sink) { capture_ = sink; }

 protected:
  void capture_input(const Variable& x);

 private:
  std::vector<Tensor>* capture_ = nullptr;
};

// Llama's MLP: down(silu(gate x) * up x).
class SwiGluMlp : public Ffn {
 public:
  SwiGluMlp(int64_t dim, int64_t hidden, double std, double out_std, std::mt19937_64& rng);
  Variable forward(const Variable& x) override;

 private:
  Linear *gate_, *up_, *down_;
};

// GPT-2 / BERT MLP: down(gelu(up x)) with the exact (erf) GELU.
class GeluMlp : public Ffn {
 public:
  GeluMlp(int64_t dim, int64_t hidden, double std, double out_std, std::mt19937_64& rng);
  Variable forward(const Variable& x) override;

 private:
  Linear *up_, *down_;
};

}  // namespace sw::nn
