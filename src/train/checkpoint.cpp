#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/bounded_json.h"
#include "core/hash.h"

namespace sw::train {
namespace {

constexpr const char* kFormat = "speedwins-checkpoint-v1";
constexpr const char* kHashName = "hash64-fnv1a-4lane";

std::string tensor_checksum(const Tensor& t) {
  Tensor c = t.contiguous();
  return hash64_hex(c.raw_data(), c.nbytes());
}

// The metadata text of `key`, or an error naming the file and the key.
const std::string& meta_text(const io::SafetensorsFile& f, const char* key) {
  auto it = f.metadata.find(key);
  SW_CHECK(it != f.metadata.end(), "checkpoint", f.path, ": metadata has no '", key,
           "' (not a speedwins checkpoint; expected format ", kFormat, ")");
  return it->second;
}

// Typed train_state fields with messages naming the file, the field and the valid range.
int64_t count_field(const nlohmann::json& ts, const char* name, const std::string& path, int64_t fallback = -1) {
  auto it = ts.find(name);
  if (it == ts.end() && fallback >= 0) return fallback;
  SW_CHECK(it != ts.end(), "checkpoint", path, ": train_state.", name, " is missing (expected an integer >= 0)");
  SW_CHECK(it->is_number_integer() && !(it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX) &&
               it->get<int64_t>() >= 0,
           "checkpoint", path, ": train_state.", name, " is ", json_brief(*it), "; expected an integer in [0, 2^63)");
  return it->get<int64_t>();
}

std::string string_field(const nlohmann::json& ts, const char* name, const std::string& path) {
  auto it = ts.find(name);
  SW_CHECK(it != ts.end() && it->is_string(), "checkpoint", path, ": train_state.", name, " is ",
           it == ts.end() ? std::string("missing") : json_brief(*it), "; expected a string");
  return it->get<std::string>();
}

// Verifies the "integrity" metadata when present; returns whether it was.
bool verify_integrity(const io::SafetensorsFile& f) {
  auto it = f.metadata.find("integrity");
  if (it == f.metadata.end()) return false;
  const std::string& path = f.path;
  nlohmann::json j = parse_json_bounded(it->second, path + ": metadata 'integrity'", 4, "checkpoint");
  // Checked field by field: json::value() would throw a raw type_error for a non-string algorithm.
  auto algorithm = j.is_object() ? j.find("algorithm") : j.end();
  SW_CHECK(j.is_object() && algorithm != j.end() && algorithm->is_string() && *algorithm == kHashName &&
               j.contains("tensors") && j["tensors"].is_object(),
           "checkpoint", path, ": metadata 'integrity' is malformed (expected {\"algorithm\": \"", kHashName,
           "\", \"tensors\": {...}, \"config\", \"train_state\"})");
  const nlohmann::json& sums = j["tensors"];
  SW_CHECK(sums.size() == f.tensors.size(), "checkpoint", path, ": metadata 'integrity' lists ", sums.size(),
           " tensors but the file holds ", f.tensors.size(), " (tensors added or removed)");
  for (const auto& [name, t] : f.tensors) {
    auto s = sums.find(name);
    SW_CHECK(s != sums.end() && s->is_string(), "checkpoint", path, ": tensor '", cut_text(name),
             "' has no checksum in metadata 'integrity'");
    SW_CHECK(s->get<std::string>() == tensor_checksum(t), "checkpoint", path, ": tensor '", cut_text(name),
             "' fails its checksum (the file is corrupt: its bytes changed after it was written)");
  }
  for (const char* key : {"config", "train_state"}) {
    auto s = j.find(key);
    SW_CHECK(s != j.end() && s->is_string() && s->get<std::string>() == hash64_hex(meta_text(f, key)), "checkpoint",
             path, ": metadata '", key, "' fails its checksum (the file is corrupt: it changed after it was written)");
  }
  return true;
}

}  // namespace

std::string first_nonfinite(const std::string& name, const Tensor& t) {
  if (t.dtype() != DType::f32 && t.dtype() != DType::bf16 && t.dtype() != DType::f64) return "";
  if (t.dtype() == DType::f32 && t.is_contiguous()) {
    const float* p = t.data<float>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return str_cat(name, " element ", i, " (", p[i], ")");
    return "";
  }
  std::vector<double> v = t.to_doubles();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return str_cat(name, " element ", i, " (", v[i], ")");
  return "";
}

std::string first_nonfinite_parameter(models::LanguageModel& model) {
  std::string bad;
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    if (bad.empty()) bad = first_nonfinite("parameter '" + name + "'", p.var.data());
  });
  return bad;
}

void save_checkpoint(const std::string& path, models::LanguageModel& model, const Optimizer* opt,
                     const TrainState& state) {
  io::NamedTensors tensors;
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) { tensors.emplace_back("model." + name, p.var.data()); });
  if (opt)
    for (auto& [name, t] : opt->state()) tensors.emplace_back(name, t);
  // A non-finite checkpoint would replace a good one and poison every resume: refuse it.
  nlohmann::json sums = nlohmann::json::object();
  for (const auto& [name, t] : tensors) {
    const std::string bad = first_nonfinite("tensor '" + name + "'", t);
    SW_CHECK(bad.empty(), "checkpoint", path, ": not saved at step ", state.step, ": ", bad,
             " is not finite (the previous checkpoint is kept)");
    sums[name] = tensor_checksum(t);
  }
  nlohmann::json ts = {{"step", state.step},
                       {"tokens", state.tokens},
                       {"sampler_state", state.sampler_state},
                       {"train_config", state.train_config},
                       {"tokenizer", state.tokenizer},
                       {"optimizer_steps", opt ? opt->steps() : 0}};
  if (!state.expert_load.empty()) ts["expert_load"] = state.expert_load;
  const std::string config_text = models::model_config_to_json(model.config()).dump(), ts_text = ts.dump();
  nlohmann::json integrity = {{"algorithm", kHashName},
                              {"tensors", sums},
                              {"config", hash64_hex(config_text)},
                              {"train_state", hash64_hex(ts_text)}};
  io::Metadata meta = {{"format", kFormat}, {"config", config_text}, {"train_state", ts_text},
                       {"integrity", integrity.dump()}};
  io::save_safetensors(path, tensors, meta);
}

Checkpoint read_checkpoint(const std::string& path) { return checkpoint_from(io::load_safetensors(path)); }

Checkpoint checkpoint_from(io::SafetensorsFile file) {
  Checkpoint c;
  c.file = std::move(file);
  const std::string path = c.file.path;
  SW_CHECK(meta_text(c.file, "format") == kFormat, "checkpoint", path, ": metadata 'format' is '",
           cut_text(meta_text(c.file, "format")), "', expected ", kFormat);
  c.verified = verify_integrity(c.file);
  nlohmann::json cfg = parse_json_bounded(meta_text(c.file, "config"), path + ": metadata 'config'", kMaxJsonDepth,
                                          "checkpoint");
  c.config = models::parse_model_config(cfg, path + ":config");
  nlohmann::json ts = parse_json_bounded(meta_text(c.file, "train_state"), path + ": metadata 'train_state'",
                                         kMaxJsonDepth, "checkpoint");
  SW_CHECK(ts.is_object(), "checkpoint", path, ": metadata 'train_state' is ", json_brief(ts), "; expected a JSON object");
  c.state.step = count_field(ts, "step", path);
  c.state.tokens = count_field(ts, "tokens", path);
  c.state.optimizer_steps = count_field(ts, "optimizer_steps", path, c.state.step);
  c.state.sampler_state = string_field(ts, "sampler_state", path);
  c.state.tokenizer = string_field(ts, "tokenizer", path);
  SW_CHECK(ts.contains("train_config") && ts["train_config"].is_object(), "checkpoint", path,
           ": train_state.train_config is missing or not an object");
  c.state.train_config = ts["train_config"];
  SW_CHECK(c.state.tokenizer.find('/') == std::string::npos && c.state.tokenizer != ".." && c.state.tokenizer.size() < 256,
           "checkpoint", path, ": train_state.tokenizer '", cut_text(c.state.tokenizer),
           "' must be a file name in the checkpoint's folder (no '/')");
  for (const auto& [name, t] : c.file.tensors) {
    c.has_optimizer |= name.rfind("opt.", 0) == 0;
    const std::string bad = first_nonfinite("tensor '" + cut_text(name) + "'", t);
    SW_CHECK(bad.empty(), "checkpoint", path, ": ", bad, " is not finite (expected finite weights and optimizer state)");
  }
  return c;
}

void load_model_weights(models::LanguageModel& model, const Checkpoint& ckpt) {
  model.visit_parameters([&](const std::string& name, nn::Parameter& p) {
    std::string key = "model." + name;
    SW_CHECK(ckpt.file.contains(key), "checkpoint", ckpt.file.path, ": missing tensor '", key, "'");
    const Tensor& t = ckpt.file.at(key);
    SW_CHECK(t.shape() == p.var.shape() && t.dtype() == DType::f32, "checkpoint", ckpt.file.path, ": tensor '", key,
             "' is ", t.describe(), ", the model expects f32", shape_str(p.var.shape()));
    p.var.mutable_data() = t.clone();
  });
}

void load_optimizer_state(Optimizer& opt, const Checkpoint& ckpt) {
  SW_CHECK(ckpt.has_optimizer, "checkpoint", ckpt.file.path, ": has no optimizer state (a weights-only file?)");
  io::NamedTensors named;
  for (const auto& [name, t] : ckpt.file.tensors)
    if (name.rfind("opt.", 0) == 0) named.emplace_back(name, t);
  try {
    opt.load_state(named, ckpt.state.optimizer_steps);
  } catch (const Error& e) {
    throw Error(str_cat("[checkpoint] ", ckpt.file.path, ": ", e.what()));
  }
}

namespace {
std::string kept_name(const std::filesystem::path& p, int64_t step) {
  return (p.parent_path() / (p.stem().string() + ".step-" + std::to_string(step) + p.extension().string())).string();
}
// The step of a kept file's name, -1 when it is not one of path's kept files.
int64_t kept_step(const std::filesystem::path& p, const std::string& file) {
  const std::string prefix = p.stem().string() + ".step-", suffix = p.extension().string();
  if (file.size() <= prefix.size() + suffix.size() || file.rfind(prefix, 0) != 0 ||
      file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits = file.substr(prefix.size(), file.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}
}  // namespace

std::vector<std::string> previous_checkpoints(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(p.parent_path().empty() ? "." : p.parent_path(), ec)) {
    int64_t s = kept_step(p, e.path().filename().string());
    if (s >= 0) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [s, f] : found) out.push_back(f);
  return out;
}

void keep_previous_checkpoint(const std::string& path, int64_t previous_step, int64_t keep) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (keep > 1 && previous_step >= 0 && fs::exists(path, ec)) {
    const std::string kept = kept_name(path, previous_step);
    fs::remove(kept, ec);
    if (::link(path.c_str(), kept.c_str()) != 0) fs::copy_file(path, kept, ec);  // no hard links: a copy
  }
  std::vector<std::string> old = previous_checkpoints(path);
  const size_t allowed = static_cast<size_t>(std::max<int64_t>(0, keep - 1));
  for (size_t i = 0; i + allowed < old.size(); ++i) fs::remove(old[i], ec);
}

}  // namespace sw::train
