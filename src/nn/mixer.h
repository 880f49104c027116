// The sequence-mixer slot and the one inference-state interface.
//
// Every token mixer (softmax attention, linear attention, SSMs, delta rules, ...) implements Mixer;
// a block holds any of them. Inference state (a KV cache, a recurrent state, a conv state, or a
// composite for hybrid heads) lives behind LayerState, so generation treats every architecture
// alike: prefill calls forward() with a state on the whole prompt, decode calls it on one token.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "nn/module.h"

namespace sw::nn {

class LayerState {
 public:
  virtual ~LayerState() = default;
  virtual int64_t bytes() const = 0;     // memory held now
  virtual const char* kind() const = 0;  // "kv", "recurrent", ...
  // Bytes held now by kind; a composite state (parallel heads) reports each of its parts.
  virtual void add_bytes_by_kind(std::map<std::string, int64_t>& out) const { out[kind()] += bytes(); }
};

// The state of a mixer that keeps none of its own (a cross-decoder reads the model's shared cache).
class NoState : public LayerState {
 public:
  int64_t bytes() const override { return 0; }
  const char* kind() const override { return "none"; }
};

struct CrossKv;  // the one KV cache a YOCO cross-decoder shares (nn/hybrid/cross_decoder.h)

// Where a mixer sits in the model: layers whose parametrisation depends on depth (Lightning's decay
// slopes, RWKV's init schedules) take it in their constructor.
struct MixerSite {
  int64_t layer_index = 0;  // 0-based block index
  int64_t n_layers = 1;     // blocks in the model
};

struct MixerContext {
  int64_t position = 0;         // absolute position of the first token (tokens already seen)
  LayerState* state = nullptr;  // null in training: the whole sequence, no state kept
  const CrossKv* cross_kv = nullptr;  // set by the model for mixers that read_cross_kv()
  // Per-row absolute positions i32 [B, T] of the tokens of x, given when they are not position + t:
  // a Mixture-of-Depths block (models/mixture_of_depths.h) sees only the tokens routed to it, in
  // their original order, at their original positions (which then differ between rows). Softmax
  // attention's RoPE reads them; mixers that encode no positions (recurrent ones) simply see a
  // shorter sequence. Undefined: the t-th token of every row sits at position + t.
  Tensor positions = Tensor();
};

class Mixer : public Module {
 public:
  // x [B, T, D] -> [B, T, D]. With a state, consumes and updates it (prefill or decode).
  virtual Variable forward(const Variable& x, const MixerContext& ctx) = 0;
  virtual std::unique_ptr<LayerState> new_state(int64_t batch) const = 0;
  virtual bool causal() const { return true; }
  // Bytes of inference state per sequence after `context` tokens: grows for a KV cache, flat for a
  // recurrent state. Reported by bench and arena.
  virtual int64_t state_bytes(int64_t context) const = 0;
  // FLOPs per token outside the layer's weight GEMMs at this context (attention scores, state
  // updates), so MFU counts the work actually required.
  virtual double extra_flops_per_token(int64_t context) const { return 0; }
  // state_bytes(context) by state kind ("kv", "recurrent", ...), for per-kind memory reports.
  virtual void add_state_bytes_by_kind(int64_t context, std::map<std::string, int64_t>& out) const {
    out[new_state(1)->kind()] += state_bytes(context);
  }
  // True for YOCO cross-decoders: they attend over the model's one shared KV cache.
  virtual bool reads_cross_kv() const { return false; }
};

}  // namespace sw::nn
