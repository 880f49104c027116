#include "train/checkpoint.h"

namespace sw::train {
namespace {
constexpr const char* kFormat = "speedwins-checkpoint-v1";
}

void save_checkpoint(const std::string& path, models::LanguageModel& model, const Optimizer* opt,
                     const TrainState& state) {
  io::NamedTensors tensors;
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) { tensors.emplace_back("model." + name, p.var.data()); });
  if (opt)
    for (auto& [name, t] : opt->state()) tensors.emplace_back(name, t);
  nlohmann::json ts = {{"step", state.step},
                       {"tokens", state.tokens},
                       {"sampler_state", state.sampler_state},
                       {"train_config", state.train_config},
                       {"tokenizer", state.tokenizer},
                       {"optimizer_steps", opt ? opt->steps() : 0}};
  if (!state.expert_load.empty()) ts["expert_load"] = state.expert_load;
  io::Metadata meta = {{"format", kFormat},
                       {"config", models::model_config_to_json(model.config()).dump()},
                       {"train_state", ts.dump()}};
  io::save_safetensors(path, tensors, meta);
}

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint c;
  c.file = io::load_safetensors(path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = c.file.metadata.find(key);
    SW_CHECK(it != c.file.metadata.end(), "checkpoint", path, ": metadata has no '", key,
             "' (not a speedwins checkpoint; expected format ", kFormat, ")");
    return it->second;
  };
  SW_CHECK(meta("format") == kFormat, "checkpoint", path, ": format '", meta("format"), "', expected ", kFormat);
  nlohmann::json cfg = nlohmann::json::parse(meta("config"), nullptr, false);
  SW_CHECK(!cfg.is_discarded(), "checkpoint", path, ": metadata 'config' is not valid JSON");
  c.config = models::parse_model_config(cfg, path + ":config");
  nlohmann::json ts = nlohmann::json::parse(meta("train_state"), nullptr, false);
  SW_CHECK(!ts.is_discarded() && ts.is_object(), "checkpoint", path, ": metadata 'train_state' is not a JSON object");
  try {
    c.state.step = ts.at("step").get<int64_t>();
    c.state.tokens = ts.at("tokens").get<int64_t>();
    c.state.sampler_state = ts.at("sampler_state").get<std::string>();
    c.state.train_config = ts.at("train_config");
    c.state.tokenizer = ts.at("tokenizer").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat("[checkpoint] ", path, ": metadata 'train_state' is malformed: ", e.what()));
  }
  for (const auto& [name, t] : c.file.tensors) c.has_optimizer |= name.rfind("opt.", 0) == 0;
  return c;
}

void load_model_weights(models::LanguageModel& model, const Checkpoint& ckpt) {
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    std::string key = "model." + name;
    SW_CHECK(ckpt.file.contains(key), "checkpoint", ckpt.file.path, ": missing tensor '", key, "'");
    const Tensor& t = ckpt.file.at(key);
    SW_CHECK(t.shape() == p.var.shape(), "checkpoint", ckpt.file.path, ": tensor '", key, "' is ", t.describe(),
             ", the model expects ", shape_str(p.var.shape()));
    p.var.mutable_data() = t.to(DType::f32).clone();
  });
}

void load_optimizer_state(Optimizer& opt, const Checkpoint& ckpt) {
  SW_CHECK(ckpt.has_optimizer, "checkpoint", ckpt.file.path, ": has no optimizer state (a weights-only file?)");
  io::NamedTensors named;
  for (const auto& [name, t] : ckpt.file.tensors)
    if (name.rfind("opt.", 0) == 0) named.emplace_back(name, t);
  auto ts = nlohmann::json::parse(ckpt.file.metadata.at("train_state"));
  opt.load_state(named, ts.value("optimizer_steps", ckpt.state.step));
}

}  // namespace sw::train
