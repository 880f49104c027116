// The sequence-mixer slot and the one inference-state interface.
//
// Every token mixer (softmax attention, linear attention, SSMs, delta rules, ...) implements Mixer;
// a block holds any of them. Inference state (a KV cache, a recurrent state, a conv state, or a
// composite for hybrid heads) lives behind LayerState, so generation treats every architecture
// alike: prefill calls forward() with a state on the whole prompt, decode calls it on one token.
#pragma once

#include <memory>

#include "nn/module.h"

namespace sw::nn {

class LayerState {
 public:
  virtual ~LayerState() = default;
  virtual int64_t bytes() const = 0;     // memory held now
  virtual const char* kind() const = 0;  // "kv", "recurrent", ...
};

// Where a mixer sits in the model: layers whose parametrisation depends on depth (Lightning's decay
// slopes, RWKV's init schedules) take it in their constructor.
struct MixerSite {
  int64_t layer_index = 0;  // 0-based block index
  int64_t n_layers = 1;     // blocks in the model
};

struct MixerContext {
  int64_t position = 0;         // absolute position of the first token (tokens already seen)
  LayerState* state = nullptr;  // null in training: the whole sequence, no state kept
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
};

}  // namespace sw::nn
