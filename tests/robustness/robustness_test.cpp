// Crafted inputs, one group per class of issue 15, each run through the real `speedwins` binary:
// every case must exit with status 1 (a reported error), never a signal, and its message must name
// the file and the field. The kill -9 test injects a divergence (SW_TEST_POISON_STEP) and kills
// training at random moments: the newest checkpoint always loads, is finite, and resuming from it
// is bit-exact. Inputs are generated here (none committed); a shared tiny run provides checkpoints.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/safetensors.h"
#include "process.h"
#include "testing.h"
#include "train/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using sw::io::Metadata;
using sw::io::NamedTensors;

using CliRun = sw::testing::ProcessRun;
using sw::testing::run_cli;
std::string cli() { return sw::testing::cli_binary(); }
CliRun run(const std::string& args, const std::string& env = "") { return run_cli(args, env); }

// Starts the binary without waiting (the shell execs it, so the pid is speedwins').
pid_t spawn(const std::string& args, const std::string& env = "") {
  std::string cmd = "exec env " + env + " " + cli() + " " + args + " >/dev/null 2>&1";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

fs::path dir() {
  static fs::path d = [] {
    fs::path p = fs::temp_directory_path() / ("sw_robust_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

std::string write(const std::string& name, const std::string& text) {
  fs::path p = dir() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A tiny run's folder (2 steps), made once: checkpoints to corrupt.
const std::string kTrainAnyShape = "--preset transformer-tiny --data synthetic --quiet";
const std::string kTrain = kTrainAnyShape + " --batch 2 --seq-len 32";
const fs::path& base_run() {
  static fs::path d = [] {
    fs::path p = dir() / "base";
    CliRun r = run("train " + kTrain + " --steps 2 --out " + p.string());
    EXPECT_EQ(r.status, 0) << r.output;
    return p;
  }();
  return d;
}

// A copy of the base run whose checkpoint is rewritten by `edit` (tensors and metadata).
std::string crafted_checkpoint(const std::string& name, const std::function<void(NamedTensors&, Metadata&)>& edit) {
  fs::path d = dir() / name;
  fs::create_directories(d);
  fs::copy_file(base_run() / "tokenizer.swtok", d / "tokenizer.swtok", fs::copy_options::overwrite_existing);
  sw::io::SafetensorsFile f = sw::io::load_safetensors((base_run() / "checkpoint.safetensors").string());
  NamedTensors t;
  for (auto& [n, x] : f.tensors) t.emplace_back(n, x.clone());
  edit(t, f.metadata);
  std::string path = (d / "checkpoint.safetensors").string();
  sw::io::save_safetensors(path, t, f.metadata);
  return path;
}

// Rewrites one train_state field of the metadata (JSON text).
void set_train_state(Metadata& m, const std::string& key, const nlohmann::json& value) {
  nlohmann::json ts = nlohmann::json::parse(m["train_state"]);
  ts[key] = value;
  m["train_state"] = ts.dump();
}

void expect_reported(const CliRun& r, const std::string& what, const std::vector<std::string>& names) {
  EXPECT_EQ(r.status, 1) << what << ": " << r.output;
  EXPECT_FALSE(r.signaled) << what << ": " << r.output;
  EXPECT_NE(r.output.find("speedwins: error:"), std::string::npos) << what << ": " << r.output;
  for (const std::string& n : names) EXPECT_NE(r.output.find(n), std::string::npos) << what << " must name " << n << ": " << r.output;
  EXPECT_EQ(r.output.find("AddressSanitizer"), std::string::npos) << what;
  EXPECT_EQ(r.output.find("runtime error"), std::string::npos) << what;  // UBSan
  EXPECT_LT(r.output.size(), 4000u) << what << ": messages must stay short";
}

std::string model_config(const std::string& extra, const std::string& mixer = R"({"type": "attention", "n_heads": 4})") {
  return R"({"name": "crafted", "d_model": 64, "n_layers": 2, "mixer": )" + mixer + (extra.empty() ? "" : ", ") + extra +
         "}";
}

void expect_train_refused(const std::string& name, const std::string& config_text, const std::vector<std::string>& names) {
  std::string cfg = write(name + ".json", config_text);
  std::vector<std::string> all = names;
  all.push_back(cfg);
  expect_reported(run("train --preset " + cfg + " --data synthetic --steps 1 --quiet --out " + (dir() / name).string()),
                  name, all);
}

// 1: sizes whose products overflow.
TEST(Robustness, Class1SizeOverflow) {
  expect_train_refused("vocab_2_56", model_config(R"("vocab_size": 72057594037927936)"), {"vocab_size", "[1, "});
  expect_train_refused("ffn_2_56", model_config(R"("ffn_hidden": 72057594037927936)"), {"ffn_hidden"});
  expect_train_refused("head_dim_2_58", model_config("", R"({"type": "attention", "n_heads": 4, "head_dim": 288230376151711744})"),
                       {"mixer.head_dim", "[0, 4096]"});
  expect_train_refused("d_model_neg", model_config(R"("ffn_hidden": -3)"), {"ffn_hidden"});
  std::string ck = crafted_checkpoint("ckpt_vocab", [](NamedTensors&, Metadata& m) {
    nlohmann::json c = nlohmann::json::parse(m["config"]);
    c["vocab_size"] = int64_t{1} << 56;
    m["config"] = c.dump();
    m.erase("integrity");  // an old-format file: the config itself must be refused
  });
  expect_reported(run("generate --checkpoint " + ck + " --max-new 2"), "checkpoint vocab 2^56", {ck, "vocab_size"});
}

// 2: memory admission.
TEST(Robustness, Class2MemoryAdmission) {
  expect_train_refused("huge_model", R"({"name": "huge", "d_model": 20000, "n_layers": 4000, "mixer": {"type": "attention", "n_heads": 4}})",
                       {"[memory]", "of memory", "d_model"});
  CliRun r = run("train " + kTrainAnyShape + " --steps 1 --batch 65536 --seq-len 1048576 --out " + (dir() / "acts").string());
  expect_reported(r, "activations", {"[memory]", "batch x seq_len", "transformer-tiny"});
}

// 3: deep nesting everywhere JSON is read.
TEST(Robustness, Class3DeepJson) {
  expect_train_refused("deep_config", R"({"name": )" + nested(200000) + "}", {"nests deeper"});
  std::string tc = write("deep_train.json", R"({"optimizer": )" + nested(200000) + "}");
  expect_reported(run("train " + kTrain + " --config " + tc + " --out " + (dir() / "deep_train").string()), "deep train config",
                  {tc, "nests deeper"});
  std::string ck = crafted_checkpoint("ckpt_deep", [](NamedTensors&, Metadata& m) {
    m["config"] = R"({"name": )" + nested(200000) + "}";
    m.erase("integrity");
  });
  expect_reported(run("eval --checkpoint " + ck + " --data synthetic"), "deep checkpoint config", {ck, "nests deeper"});
  CliRun i = run("inspect " + ck);  // inspect shows what it can; it must not crash on the nesting
  EXPECT_EQ(i.status, 0) << i.output;
  EXPECT_NE(i.output.find("nests deeper"), std::string::npos) << i.output;
}

// 4: zero, negative and out-of-range values; duplicate keys.
TEST(Robustness, Class4Ranges) {
  struct Flag {
    const char* args;
    const char* names;
  };
  for (const Flag& f : std::vector<Flag>{{"--steps -5", "--steps"},
                                         {"--steps 99999999999", "--steps"},
                                         {"--batch 0", "--batch"},
                                         {"--seq-len 0", "--seq-len"},
                                         {"--lr -1", "--lr"},
                                         {"--grad-accum 0", "--grad-accum"},
                                         {"--keep-checkpoints 0", "--keep-checkpoints"},
                                         {"--max-seconds -1", "--max-seconds"}})
    expect_reported(run("train " + kTrainAnyShape + " " + f.args + " --out " + (dir() / "flags").string()), f.args,
                    {f.names, "expected"});
  struct Config {
    const char* name;
    const char* json;
    const char* field;
  };
  for (const Config& c : std::vector<Config>{{"log0", R"({"log_every": 0})", "log_every"},
                                             {"lrneg", R"({"schedule": {"lr": -1}})", "schedule.lr"},
                                             {"beta2", R"({"optimizer": {"beta1": 2}})", "optimizer.beta1"},
                                             {"warm", R"({"schedule": {"warmup_steps": -1}})", "warmup_steps"},
                                             {"dup", R"({"steps": 3, "steps": 4})", "\"steps\" twice"}}) {
    std::string p = write(std::string(c.name) + "_train.json", c.json);
    expect_reported(run("train " + kTrain + " --config " + p + " --out " + (dir() / c.name).string()), c.name,
                    {p, c.field, "expected"});
  }
  expect_train_refused("window_neg", model_config("", R"({"type": "attention", "n_heads": 4, "window": -1})"),
                       {"mixer.window", "expected"});
  expect_train_refused("heads_3", model_config("", R"({"type": "attention", "n_heads": 3})"),
                       {"mixer.n_heads", "does not divide d_model"});
  expect_train_refused("dup_model", model_config(R"("d_model": 32)"), {"\"d_model\" twice"});
  expect_train_refused("eps0", model_config(R"("norm_eps": 0)"), {"norm_eps", "(0, 1)"});
  expect_reported(run("generate --checkpoint " + (base_run() / "checkpoint.safetensors").string() + " --top-p 0"),
                  "top-p", {"--top-p", "(0, 1]"});
}

// 5: a divergence never destroys the last good checkpoint; kill -9 at random moments.
TEST(Robustness, Class5DivergenceAndKill9) {
  const std::string args = "--preset transformer-tiny --data synthetic --batch 2 --seq-len 32 --quiet --steps 24 "
                           "--save-every 1 --eval-every 0 --keep-checkpoints 3 --out ";
  // The reference: one uninterrupted run.
  fs::path straight = dir() / "straight";
  CliRun s = run("train " + args + straight.string());
  ASSERT_EQ(s.status, 0) << s.output;

  // The same run, poisoned after step 16 and killed at random moments until it stops.
  fs::path chain = dir() / "chain";
  const std::string ckpt = (chain / "checkpoint.safetensors").string();
  std::mt19937 rng(15);
  int kills = 0, final_status = -1;
  for (int attempt = 0; attempt < 40 && final_status < 0; ++attempt) {
    const bool resume = fs::exists(ckpt);
    pid_t pid = spawn("train " + args + chain.string() + (resume ? " --resume" : ""), "SW_TEST_POISON_STEP=16");
    if (kills < 6) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250 + rng() % 500));
      if (::kill(pid, SIGKILL) == 0) ++kills;
    }
    int st = wait_status(pid);
    if (st != 128 + SIGKILL) final_status = st;
    // After every kill the newest checkpoint loads (checksums verified) and is finite.
    if (fs::exists(ckpt)) {
      sw::train::Checkpoint c = sw::train::read_checkpoint(ckpt);  // throws on corruption or non-finite
      EXPECT_TRUE(c.verified);
      EXPECT_LE(c.state.step, 16);
    }
  }
  EXPECT_GE(kills, 1);
  ASSERT_EQ(final_status, 1) << "the poisoned run must stop with a reported error";
  sw::train::Checkpoint last = sw::train::read_checkpoint(ckpt);
  EXPECT_EQ(last.state.step, 15) << "the step-16 model is not finite and must not replace step 15";
  EXPECT_FALSE(sw::train::previous_checkpoints(ckpt).empty());
  EXPECT_LE(sw::train::previous_checkpoints(ckpt).size(), 2u);  // keep 3 = the newest + 2 older
  for (const auto& e : fs::directory_iterator(chain))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left over: " << e.path();

  // Resuming (without the poison) reaches the uninterrupted run's bytes exactly.
  CliRun r = run("train " + args + chain.string() + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  sw::train::Checkpoint a = sw::train::read_checkpoint((straight / "checkpoint.safetensors").string());
  sw::train::Checkpoint b = sw::train::read_checkpoint(ckpt);
  ASSERT_EQ(a.file.tensors.size(), b.file.tensors.size());
  for (size_t i = 0; i < a.file.tensors.size(); ++i) {
    const sw::Tensor &x = a.file.tensors[i].second, &y = b.file.tensors[i].second;
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()), 0) << a.file.tensors[i].first;
  }
  EXPECT_EQ(a.state.sampler_state, b.state.sampler_state);

  // Eval of a non-finite model is an error (an old-format file with a NaN weight).
  std::string nan = crafted_checkpoint("ckpt_nan_old", [](NamedTensors& t, Metadata& m) {
    t[0].second.data<float>()[3] = NAN;
    m.erase("integrity");
  });
  expect_reported(run("eval --checkpoint " + nan + " --data synthetic"), "NaN weight", {nan, "not finite", "tensor 'model."});
}

// 6: checkpoint content: integrity, dtype, ranges, finiteness on load.
TEST(Robustness, Class6CheckpointContent) {
  const std::string good = (base_run() / "checkpoint.safetensors").string();
  {  // a flipped data byte
    std::string bytes;
    {
      std::ifstream f(good, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(f), {});
    }
    bytes[bytes.size() - 5] ^= 0x10;
    fs::create_directories(dir() / "flip");
    fs::copy_file(base_run() / "tokenizer.swtok", dir() / "flip" / "tokenizer.swtok", fs::copy_options::overwrite_existing);
    std::string p = (dir() / "flip" / "checkpoint.safetensors").string();
    std::ofstream(p, std::ios::binary) << bytes;
    expect_reported(run("eval --checkpoint " + p + " --data synthetic"), "flipped byte", {p, "tensor '", "checksum"});
  }
  std::string rng = crafted_checkpoint("ckpt_rng", [](NamedTensors&, Metadata& m) {
    nlohmann::json ts = nlohmann::json::parse(m["train_state"]);
    std::string s = ts["sampler_state"];
    size_t at = s.rfind('1');
    s[at] = '2';  // one digit of the RNG state
    ts["sampler_state"] = s;
    m["train_state"] = ts.dump();
  });
  expect_reported(run("train --resume --out " + fs::path(rng).parent_path().string() + " --quiet"), "RNG digit",
                  {rng, "train_state", "checksum"});
  std::string dtype = crafted_checkpoint("ckpt_dtype", [](NamedTensors& t, Metadata& m) {
    t[0].second = t[0].second.to(sw::DType::bf16);
    m.erase("integrity");
  });
  expect_reported(run("eval --checkpoint " + dtype + " --data synthetic"), "dtype", {dtype, "bf16", "expects f32"});
  std::string step = crafted_checkpoint("ckpt_step", [](NamedTensors&, Metadata& m) {
    set_train_state(m, "step", -3);
    m.erase("integrity");
  });
  expect_reported(run("eval --checkpoint " + step + " --data synthetic"), "negative step", {step, "train_state.step", "[0, 2^63)"});
  std::string inf = crafted_checkpoint("ckpt_inf", [](NamedTensors& t, Metadata& m) {
    t.back().second.data<float>()[0] = INFINITY;  // an optimizer moment
    m.erase("integrity");
  });
  expect_reported(run("train --resume --quiet --out " + fs::path(inf).parent_path().string()), "inf moment",
                  {inf, "not finite", "tensor 'opt."});
  // Found by fuzz_checkpoint: a non-string "algorithm" escaped as a raw json type_error.
  std::string alg = crafted_checkpoint("ckpt_alg", [](NamedTensors&, Metadata& m) {
    m["integrity"] = R"({"algorithm": {}, "tensors": {}})";
  });
  expect_reported(run("eval --checkpoint " + alg + " --data synthetic"), "integrity type", {alg, "integrity"});
  // A file from before checksums still loads, and says the check was skipped.
  std::string old = crafted_checkpoint("ckpt_old", [](NamedTensors&, Metadata& m) { m.erase("integrity"); });
  CliRun r = run("eval --checkpoint " + old + " --data synthetic --max-batches 1");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("integrity not checked"), std::string::npos) << r.output;
}

// 7: data, tokenizer and config are validated together before step 1.
TEST(Robustness, Class7EarlyValidation) {
  std::string tiny = write("tiny.txt", "hello world, this is tiny.");
  CliRun r = run("train --preset transformer-tiny --data " + tiny + " --seq-len 8 --steps 50 --out " + (dir() / "tiny").string());
  expect_reported(r, "tiny corpus", {tiny, "validation"});
  EXPECT_EQ(r.output.find("step 1/"), std::string::npos) << "no step may run: " << r.output;
  std::string big_vocab = write("vocab1000.json", model_config(R"("vocab_size": 1000)"));
  r = run("train --preset " + big_vocab + " --data synthetic --steps 1 --quiet --out " + (dir() / "vocab").string());
  expect_reported(r, "vocab mismatch", {big_vocab, "vocab_size", "tokenizer has 260"});
}

// 8: signals and leftovers.
TEST(Robustness, Class8SignalsAndLeftovers) {
  fs::path d = dir() / "sigterm";
  fs::create_directories(d);
  const std::string stale = (d / "checkpoint.safetensors.tmp.999999999").string();
  write("sigterm/checkpoint.safetensors.tmp.999999999", "partial");
  pid_t pid = spawn("train " + kTrain + " --steps 100000 --out " + d.string());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_status(pid), 128 + SIGTERM) << "SIGTERM: saved, then exit 143";
  sw::train::Checkpoint c = sw::train::read_checkpoint((d / "checkpoint.safetensors").string());
  EXPECT_GT(c.state.step, 0);
  EXPECT_FALSE(fs::exists(stale)) << "a dead process's temporary file is swept on start";

  CliRun r = run("train --resume --steps 1 --quiet --out " + d.string());
  expect_reported(r, "resume below", {"checkpoint.safetensors", "steps", "expected steps >= "});

  r = run("train " + kTrain + " --steps 6 --skip-nonfinite --out " + (dir() / "skip").string(), "SW_TEST_POISON_STEP=2");
  expect_reported(r, "skip-nonfinite", {"not finite", "4 of 6 steps were skipped"});
}

// 9: messages name the file and the field (no raw library texts).
TEST(Robustness, Class9Messages) {
  std::string ts = crafted_checkpoint("ckpt_ts_type", [](NamedTensors&, Metadata& m) {
    set_train_state(m, "tokens", "many");
    m.erase("integrity");
  });
  CliRun r = run("eval --checkpoint " + ts + " --data synthetic");
  expect_reported(r, "train_state type", {ts, "train_state.tokens"});
  EXPECT_EQ(r.output.find("[json.exception"), std::string::npos) << r.output;
  std::string sampler = crafted_checkpoint("ckpt_sampler", [](NamedTensors&, Metadata& m) {
    set_train_state(m, "sampler_state", "garbage");
    m.erase("integrity");
  });
  expect_reported(run("train --resume --quiet --out " + fs::path(sampler).parent_path().string()), "sampler state",
                  {sampler, "sampler_state"});
  expect_train_refused("neg_dim", model_config("", R"({"type": "attention", "n_heads": 4, "n_kv_heads": 3})"),
                       {"neg_dim.json", "n_kv_heads"});
}

}  // namespace
