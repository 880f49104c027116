#include "models/model_limits.h"

#include <algorithm>
#include <cstdio>

#include "core/allocator.h"
#include "models/schedule.h"

namespace sw::models {
namespace {

double field(const nlohmann::json& j, const char* name, double fallback) {
  auto it = j.find(name);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

struct Term {
  double parameters;
  std::string fields;
};

}  // namespace

SizeEstimate estimate_parameters(const ModelConfig& c, const std::string& where) {
  // Doubles: the estimate must not overflow for any config within the field bounds.
  const double D = static_cast<double>(c.d_model), V = static_cast<double>(c.vocab_size);
  const double H = static_cast<double>(c.resolved_ffn_hidden());
  std::vector<Term> terms;
  terms.push_back({V * D * (c.tie_embeddings ? 1 : 2), "vocab_size x d_model"});
  double mixers = 0, ffns = 0, experts = 0;
  for (const LayerSpec& s : resolve_schedule(c, where)) {
    // q, k, v, o (or the in/out projections of a recurrent mixer): at least 4 d_model x width.
    const double width = field(s.mixer, "n_heads", 0) * field(s.mixer, "head_dim", 0);
    mixers += 4 * D * std::max(D, width);
    auto type_it = s.ffn.find("type");
    const std::string type = type_it != s.ffn.end() && type_it->is_string() ? type_it->get<std::string>() : "swiglu";
    if (type == "none") continue;
    if (type == "moe") {
      const double eh = field(s.ffn, "expert_hidden", 0) > 0 ? field(s.ffn, "expert_hidden", 0) : H;
      experts += 3 * D * eh * (field(s.ffn, "n_experts", 8) + field(s.ffn, "n_shared", 0));
    } else {
      ffns += (type == "gelu" ? 2 : 3) * D * H;
    }
  }
  terms.push_back({mixers, "n_layers x d_model^2 (mixers)"});
  terms.push_back({ffns, "n_layers x d_model x ffn_hidden (FFNs)"});
  terms.push_back({experts, "n_layers x n_experts x d_model x expert_hidden (MoE)"});
  SizeEstimate e;
  const Term* top = &terms[0];
  for (const Term& t : terms) {
    e.parameters += t.parameters;
    if (t.parameters > top->parameters) top = &t;
  }
  e.dominant = top->fields;
  return e;
}

void admit_memory(const SizeEstimate& e, double bytes_per_parameter, double extra_bytes, const std::string& what,
                  const std::string& where) {
  const double need = e.parameters * bytes_per_parameter + extra_bytes;
  const double limit = static_cast<double>(memory_limit_bytes());
  auto fmt = [](double b) { return format_bytes(b > 9e18 ? INT64_MAX : static_cast<int64_t>(b)); };
  char params[32];
  std::snprintf(params, sizeof params, "%.3g", e.parameters);
  SW_CHECK(need <= limit, "memory", where, ": about ", params, " parameters need ", fmt(need), " for ",
           what, ", more than this machine's ", fmt(limit), " of memory; the largest term is ", e.dominant,
           " (README: Resource limits)");
}

std::unique_ptr<LanguageModel> build_model(const ModelConfig& c, const std::string& where) {
  admit_memory(estimate_parameters(c, where), 4, 0, "f32 weights", where);
  try {
    return std::make_unique<LanguageModel>(c, where);
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find(where) != std::string::npos) throw;
    throw Error(str_cat("[config] ", where, ": cannot build the model: ", msg));
  }
}

}  // namespace sw::models
