#include "nn/hybrid/parallel_mixer.h"

#include "ops/ops.h"

namespace sw::nn {

int64_t ParallelState::bytes() const {
  int64_t b = 0;
  for (const auto& p : parts) b += p->bytes();
  return b;
}

void ParallelState::add_bytes_by_kind(std::map<std::string, int64_t>& out) const {
  for (const auto& p : parts) p->add_bytes_by_kind(out);
}

ParallelMixer::ParallelMixer(int64_t d_model, std::vector<std::unique_ptr<Mixer>> branches, double norm_eps) {
  SW_CHECK(branches.size() >= 2 && branches.size() <= 8, "parallel", "expected 2..8 branches, got ", branches.size());
  for (size_t i = 0; i < branches.size(); ++i) {
    branches_.push_back(add_module("branches." + std::to_string(i), std::move(branches[i])));
    norms_.push_back(add_module("norms." + std::to_string(i), std::make_unique<RMSNorm>(d_model, norm_eps)));
  }
}

Variable ParallelMixer::forward(const Variable& x, const MixerContext& ctx) {
  auto* st = static_cast<ParallelState*>(ctx.state);
  SW_CHECK(!st || st->parts.size() == branches_.size(), "parallel", "state has ", st ? st->parts.size() : 0,
           " parts for ", branches_.size(), " branches");
  Variable sum;
  for (size_t i = 0; i < branches_.size(); ++i) {
    MixerContext c = ctx;
    c.state = st ? st->parts[i].get() : nullptr;
    Variable y = norms_[i]->forward(branches_[i]->forward(x, c));
    sum = sum.defined() ? ops::add(sum, y) : y;
  }
  return ops::scale(sum, 1.0 / static_cast<double>(branches_.size()));
}

std::unique_ptr<LayerState> ParallelMixer::new_state(int64_t batch) const {
  auto s = std::make_unique<ParallelState>();
  for (const Mixer* b : branches_) s->parts.push_back(b->new_state(batch));
  return s;
}

int64_t ParallelMixer::state_bytes(int64_t context) const {
  int64_t b = 0;
  for (const Mixer* m : branches_) b += m->state_bytes(context);
  return b;
}

double ParallelMixer::extra_flops_per_token(int64_t context) const {
  double f = 0;
  for (const Mixer* m : branches_) f += m->extra_flops_per_token(context);
  return f;
}

void ParallelMixer::add_state_bytes_by_kind(int64_t context, std::map<std::string, int64_t>& out) const {
  for (const Mixer* m : branches_) m->add_state_bytes_by_kind(context, out);
}

bool ParallelMixer::causal() const {
  for (const Mixer* m : branches_)
    if (!m->causal()) return false;
  return true;
}

}  // namespace sw::nn
