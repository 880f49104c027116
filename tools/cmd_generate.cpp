// `speedwins generate` (sample text from a checkpoint, streamed) and `speedwins eval` (held-out
// loss, perplexity and bits per byte of a checkpoint on a corpus). A masked-diffusion checkpoint
// (objective masked_diffusion) generates with the LLaDA sampler (infer/diffusion_sampler.h), its
// canvas filling in on a progress line, and evaluates by the Monte-Carlo likelihood bound.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "infer/diffusion_sampler.h"
#include "infer/generate.h"
#include "models/model_limits.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace sw::tools {
namespace {

struct GenArgs {
  std::string checkpoint, prompt = "The ";
  int64_t max_new = 200;
  infer::SamplerConfig s;
  std::vector<std::string> stops;
  bool bf16_weights = false;
  // Masked diffusion only (0 = the default: steps = max-new, block = 32 when it divides max-new).
  int64_t steps = 0, block_length = 0;
  std::string remasking = "low_confidence";
  double threshold = 0, cfg_scale = 0;
  bool quiet = false;
  nn::KvPolicyConfig kv;  // autoregressive attention models: the KV-cache policy
};

// The diffusion sampler's settings from the flags (max-new is the generation length).
infer::DiffusionSamplerConfig diffusion_config(const GenArgs& a) {
  infer::DiffusionSamplerConfig d;
  d.gen_length = a.max_new;
  d.block_length = a.block_length > 0 ? a.block_length : (a.max_new % 32 == 0 ? 32 : a.max_new);
  d.steps = a.steps > 0 ? a.steps : a.max_new;
  d.temperature = a.s.temperature;
  d.remasking = a.remasking;
  d.threshold = a.threshold;
  d.cfg_scale = a.cfg_scale;
  d.seed = a.s.seed;
  return d;
}

void validate_generate(const GenArgs& a) {
  SW_CHECK(a.max_new >= 0 && a.max_new <= (int64_t{1} << 20), "generate", "--max-new ", a.max_new,
           ": expected an integer in [0, 2^20]");
  SW_CHECK(std::isfinite(a.s.temperature) && a.s.temperature >= 0 && a.s.temperature <= 100, "generate",
           "--temperature ", a.s.temperature, ": expected a number in [0, 100]");
  SW_CHECK(a.s.top_k >= 0, "generate", "--top-k ", a.s.top_k, ": expected an integer >= 0");
  SW_CHECK(std::isfinite(a.s.top_p) && a.s.top_p > 0 && a.s.top_p <= 1, "generate", "--top-p ", a.s.top_p,
           ": expected a number in (0, 1]");
  SW_CHECK(std::isfinite(a.s.repetition_penalty) && a.s.repetition_penalty > 0 && a.s.repetition_penalty <= 100,
           "generate", "--repetition-penalty ", a.s.repetition_penalty, ": expected a number in (0, 100]");
  SW_CHECK(a.steps >= 0 && a.block_length >= 0, "generate", "--steps ", a.steps, " / --block-length ", a.block_length,
           ": expected integers >= 0 (0 = default)");
  if (a.max_new > 0 && (a.steps || a.block_length || a.threshold || a.cfg_scale || a.remasking != "low_confidence"))
    infer::validate_diffusion_sampler(diffusion_config(a), "command line");
}

// The generated text up to the first EOS and the first stop string (both kept out).
std::string cut_generated(const GenArgs& a, const io::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> kept;
  for (int32_t id : ids) {
    if (id == tok.eos_id()) break;
    kept.push_back(id);
  }
  std::string text = tok.decode(kept);
  for (const std::string& s : a.stops) {
    const size_t at = s.empty() ? std::string::npos : text.find(s);
    if (at != std::string::npos) text.resize(at + s.size());
  }
  return text;
}

int run_diffusion_generate(const GenArgs& a, Loaded& l, const std::vector<int32_t>& prompt) {
  SW_CHECK(a.s.top_k == 0 && a.s.top_p == 1 && a.s.repetition_penalty == 1, "generate", a.checkpoint,
           ": a masked-diffusion model samples with the LLaDA sampler, which has no --top-k, --top-p or ",
           "--repetition-penalty (use --temperature, --steps, --block-length, --remasking, --threshold, --cfg)");
  if (a.max_new == 0) {  // nothing to generate: the prompt alone, as for an autoregressive model
    std::printf("%s\n", a.prompt.c_str());
    return 0;
  }
  const infer::DiffusionSamplerConfig d = diffusion_config(a);
  const int32_t mask = l.model->config().resolved_mask_id();
  auto decode = [&](const std::vector<int32_t>& ids) { return l.tok->decode(ids); };
  const int64_t P = static_cast<int64_t>(prompt.size());
  infer::DiffusionResult r = infer::diffusion_generate(
      infer::model_logits_fn(*l.model), prompt, mask, l.model->config().vocab_size, d,
      [&](const infer::DiffusionStep& st) {
        if (a.quiet) return;
        // The generated part of the canvas, masks as '_', at most the 100 characters up to the block's end.
        std::vector<int32_t> gen(st.canvas->begin() + P, st.canvas->begin() + st.block_end);
        std::string shown = infer::render_canvas(gen, mask, decode);
        if (shown.size() > 100) shown = "..." + shown.substr(shown.size() - 97);
        std::fprintf(stderr, "\r\033[Kstep %lld | block %lld/%lld | %s", static_cast<long long>(st.step),
                     static_cast<long long>(st.block + 1), static_cast<long long>(d.gen_length / d.block_length),
                     shown.c_str());
        std::fflush(stderr);
      });
  if (!a.quiet) std::fprintf(stderr, "\n");
  std::printf("%s%s\n", a.prompt.c_str(), cut_generated(a, *l.tok, r.generated).c_str());
  const double per_step = r.steps ? static_cast<double>(d.gen_length) / static_cast<double>(r.steps) : 0.0;
  std::fprintf(stderr,
               "masked diffusion: %lld tokens in %lld steps (%.2f tokens/step; block %lld, %s remasking%s) in %.3fs "
               "(%.1f tok/s)\n",
               static_cast<long long>(d.gen_length), static_cast<long long>(r.steps), per_step,
               static_cast<long long>(d.block_length), d.remasking.c_str(),
               d.threshold > 0 ? str_cat(", threshold ", d.threshold).c_str() : "", r.seconds,
               static_cast<double>(d.gen_length) / std::max(1e-9, r.seconds));
  return 0;
}

int run_generate(GenArgs& a) {
  Loaded l = load_run(a.checkpoint, a.kv);
  if (a.bf16_weights) l.model->to_bf16_weights();
  std::vector<int32_t> prompt = l.tok->encode(a.prompt);
  if (l.model->config().masked_diffusion()) return run_diffusion_generate(a, l, prompt);
  SW_CHECK(a.steps == 0 && a.block_length == 0 && a.threshold == 0 && a.cfg_scale == 0 && a.remasking == "low_confidence",
           "generate", a.checkpoint, ": --steps, --block-length, --remasking, --threshold and --cfg are for ",
           "masked-diffusion checkpoints; this model is autoregressive");
  infer::GenerateConfig g;
  g.max_new_tokens = a.max_new;
  g.sampler = a.s;
  g.stop_tokens = {l.tok->eos_id()};
  std::printf("%s", a.prompt.c_str());
  std::fflush(stdout);
  std::vector<int32_t> out;
  std::string text;
  infer::GenerateStats st = infer::generate(*l.model, prompt, g, [&](int32_t id) {
    if (l.tok->is_special(id)) return true;
    out.push_back(id);
    // Byte-level tokens may split a UTF-8 character: print the decoded text's new suffix.
    std::string now = l.tok->decode(out);
    std::string piece = now.substr(std::min(text.size(), now.size()));
    text = now;
    std::printf("%s", piece.c_str());
    std::fflush(stdout);
    for (const std::string& s : a.stops)
      if (!s.empty() && text.size() >= s.size() && text.compare(text.size() - s.size(), s.size(), s) == 0) return false;
    return true;
  });
  std::printf("\n");
  std::fprintf(stderr, "prompt %lld tokens in %.3fs (%.0f tok/s); %lld new tokens in %.3fs (%.1f tok/s); state %.1f KiB\n",
               static_cast<long long>(st.prompt_tokens), st.prefill_seconds, st.prompt_tokens / std::max(1e-9, st.prefill_seconds),
               static_cast<long long>(st.new_tokens), st.decode_seconds, st.new_tokens / std::max(1e-9, st.decode_seconds),
               st.state_bytes / 1024.0);
  return 0;
}

struct EvalArgs {
  std::string checkpoint, data = "brown";
  int64_t batch = 8, seq_len = 256, max_batches = 0, mc = 4;
};

void validate_eval(const EvalArgs& a) {
  SW_CHECK(a.batch >= 1 && a.batch <= (1 << 16), "eval", "--batch ", a.batch, ": expected an integer in [1, 65536]");
  SW_CHECK(a.seq_len >= 1 && a.seq_len <= (1 << 20), "eval", "--seq-len ", a.seq_len,
           ": expected an integer in [1, 1048576]");
  SW_CHECK(a.max_batches >= 0, "eval", "--max-batches ", a.max_batches, ": expected an integer >= 0");
  SW_CHECK(a.mc >= 1 && a.mc <= 4096, "eval", "--mc ", a.mc, ": expected an integer in [1, 4096]");
}

int run_eval(const EvalArgs& a) {
  Loaded l = load_run(a.checkpoint);
  train::TextSource text = train::load_text_source(a.data);
  EncodedText enc = encode_text(*l.tok, text.text);
  train::TokenDataset data(std::move(enc.tokens), 0.05, l.tok->vocab_size());
  train::EvalResult e = train::evaluate(*l.model, data, a.batch, a.seq_len, a.max_batches, enc.bytes_per_token, a.mc);
  std::printf("%s on %s (validation split, %lld tokens): loss %.4f, perplexity %.3f, bits/byte %.4f%s\n",
              a.checkpoint.c_str(), text.name.c_str(), static_cast<long long>(e.tokens), e.loss, e.perplexity,
              e.bits_per_byte,
              l.model->config().masked_diffusion()
                  ? str_cat(" (masked diffusion: the likelihood bound, ", a.mc, " Monte-Carlo draws per window)").c_str()
                  : "");
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app) {
  static GenArgs a;
  CLI::App* s = app.add_subcommand("generate", "Generate text from a checkpoint (streamed)");
  s->add_option("--checkpoint", a.checkpoint, "checkpoint.safetensors of a training run")->required();
  s->add_option("--prompt", a.prompt, "Prompt text")->capture_default_str();
  s->add_option("--max-new", a.max_new, "Tokens to generate")->capture_default_str();
  s->add_option("--temperature", a.s.temperature, "0 = greedy")->capture_default_str();
  s->add_option("--top-k", a.s.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  s->add_option("--top-p", a.s.top_p, "Nucleus sampling mass (1 = off)")->capture_default_str();
  s->add_option("--repetition-penalty", a.s.repetition_penalty, "Penalty on tokens already seen (1 = off)")
      ->capture_default_str();
  s->add_option("--seed", a.s.seed, "Sampling seed")->capture_default_str();
  s->add_option("--stop", a.stops, "Stop after this string (repeatable)");
  s->add_flag("--bf16-weights", a.bf16_weights, "Run with bf16 weights");
  add_kv_policy_flags(s, a.kv);
  s->add_option("--steps", a.steps, "Masked diffusion: sampling steps in all (0 = max-new, one token per step)");
  s->add_option("--block-length", a.block_length,
                "Masked diffusion: semi-autoregressive block length, a divisor of max-new (0 = 32 when it divides, else max-new)");
  s->add_option("--remasking", a.remasking, "Masked diffusion: low_confidence | random")->capture_default_str();
  s->add_option("--threshold", a.threshold,
                "Masked diffusion: Fast-dLLM parallel decoding, commit every position this confident (0 = off)");
  s->add_option("--cfg", a.cfg_scale, "Masked diffusion: classifier-free guidance scale (0 = off)");
  s->add_flag("--quiet", a.quiet, "Masked diffusion: no progress line");
  set_runner(s, [] { return run_generate(a); });
  set_validator(s, [] { validate_generate(a); });

  static EvalArgs e;
  CLI::App* ev = app.add_subcommand("eval", "Held-out loss, perplexity and bits per byte of a checkpoint");
  ev->add_option("--checkpoint", e.checkpoint, "checkpoint.safetensors")->required();
  ev->add_option("--data", e.data, "brown | synthetic | a text file or folder")->capture_default_str();
  ev->add_option("--batch", e.batch, "Sequences per batch")->capture_default_str();
  ev->add_option("--seq-len", e.seq_len, "Tokens per sequence")->capture_default_str();
  ev->add_option("--max-batches", e.max_batches, "Limit (0 = the whole split)")->capture_default_str();
  ev->add_option("--mc", e.mc, "Masked diffusion: Monte-Carlo draws of the likelihood bound per window")
      ->capture_default_str();
  set_runner(ev, [] { return run_eval(e); });
  set_validator(ev, [] { validate_eval(e); });
}

}  // namespace sw::tools
