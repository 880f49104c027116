// The mixture-of-experts entry of the FFN slot (survey section 5): {"type": "moe", ...MoeConfig}.
#include <cmath>

#include "models/registry.h"
#include "nn/moe/moe.h"

namespace sw::models {

std::vector<FfnEntry> moe_ffns() {
  return {
      {"moe",
       [](const json& j, const std::string& where) {
         nn::validate_moe_config(parse_mixer_fields<nn::MoeConfig>(j, where), where);
       },
       [](const json& j, const ModelConfig& m, const nn::MixerSite&, std::mt19937_64& rng,
          const std::string& where) {
         nn::MoeConfig c = parse_mixer_fields<nn::MoeConfig>(j, where);
         nn::validate_moe_config(c, where);
         const int64_t hidden = c.expert_hidden ? c.expert_hidden : m.resolved_ffn_hidden();
         SW_CHECK(hidden >= 1 && hidden <= (int64_t{1} << 20), "config", where,
                  ".expert_hidden: expected 1..2^20 (0 = the model's ffn_hidden), got ", hidden);
         const double out_std = m.init_std / std::sqrt(2.0 * static_cast<double>(m.n_layers));
         return std::unique_ptr<nn::Ffn>(std::make_unique<nn::MoeFfn>(m.d_model, hidden, c, m.init_std, out_std, rng));
       }},
  };
}

}  // namespace sw::models
