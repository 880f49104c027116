// The speedwins binary as a user drives it: --help everywhere, a short train -> resume -> generate
// -> inspect round trip, and bad input (malformed checkpoints, unknown presets, bad flags) giving a
// clear message and a non-zero exit, never a crash.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "process.h"
#include "testing.h"

namespace {

namespace fs = std::filesystem;

using CliRun = sw::testing::ProcessRun;
CliRun run(const std::string& args) { return sw::testing::run_cli(args); }

fs::path tmp(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("sw_cli_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d / name;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

TEST(Cli, HelpForEverySubcommand) {
  CliRun top = run("--help");
  EXPECT_EQ(top.status, 0);
  for (const char* sub : {"train", "generate", "eval", "inspect", "presets", "tokenizer", "bench", "arena", "convert",
                          "convert upcycle"}) {
    const std::string name(sub);
    EXPECT_NE(top.output.find(name.substr(0, name.find(' '))), std::string::npos) << sub;
    CliRun r = run(name + " --help");
    EXPECT_EQ(r.status, 0) << sub << ": " << r.output;
  }
}

TEST(Cli, TrainResumeGenerateInspect) {
  fs::path out = tmp("run");
  CliRun t = run("train --preset transformer-tiny --data synthetic --steps 6 --batch 2 --seq-len 32 --eval-every 0 --quiet --out " +
              out.string());
  ASSERT_EQ(t.status, 0) << t.output;
  ASSERT_TRUE(fs::exists(out / "checkpoint.safetensors"));
  ASSERT_TRUE(fs::exists(out / "tokenizer.swtok"));
  ASSERT_TRUE(fs::exists(out / "train_log.jsonl"));
  CliRun r = run("train --resume --steps 9 --data synthetic --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("trained 9 steps"), std::string::npos) << r.output;
  CliRun g = run("generate --checkpoint " + (out / "checkpoint.safetensors").string() +
              " --prompt 'Alice ' --max-new 12 --temperature 0.8 --top-k 20 --top-p 0.9 --repetition-penalty 1.1");
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_EQ(g.output.rfind("Alice ", 0), 0u) << g.output;
  CliRun i = run("inspect " + (out / "checkpoint.safetensors").string());
  ASSERT_EQ(i.status, 0) << i.output;
  EXPECT_NE(i.output.find("transformer-tiny"), std::string::npos) << i.output;
  EXPECT_NE(i.output.find("trained: 9 steps"), std::string::npos) << i.output;
  EXPECT_NE(i.output.find("model.blocks.0"), std::string::npos) << i.output;
  CliRun e = run("eval --checkpoint " + (out / "checkpoint.safetensors").string() + " --data synthetic --max-batches 2");
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_NE(e.output.find("bits/byte"), std::string::npos) << e.output;
  fs::remove_all(out.parent_path());
}

// A dense run upcycled into an MoE: the converted checkpoint evaluates to the dense loss (the
// experts are copies and the renormalised gates sum to 1), trains from its weights and generates.
TEST(Cli, UpcycleEvaluatesTrainsAndGenerates) {
  fs::path dense = tmp("dense"), moe = tmp("moe"), tuned = tmp("tuned");
  CliRun t = run("train --preset transformer-tiny --data synthetic --steps 6 --batch 2 --seq-len 32 --eval-every 0 --quiet --out " +
                 dense.string());
  ASSERT_EQ(t.status, 0) << t.output;
  CliRun c = run("convert upcycle --experts 4 --top-k 2 --from " + (dense / "checkpoint.safetensors").string() +
                 " --out " + moe.string());
  ASSERT_EQ(c.status, 0) << c.output;
  auto eval_loss = [&](const fs::path& dir) {
    CliRun e = run("eval --checkpoint " + (dir / "checkpoint.safetensors").string() + " --data synthetic --max-batches 2");
    EXPECT_EQ(e.status, 0) << e.output;
    size_t at = e.output.find("loss ");
    return at == std::string::npos ? -1.0 : std::stod(e.output.substr(at + 5));
  };
  const double ld = eval_loss(dense), lm = eval_loss(moe);
  ASSERT_GT(ld, 0);
  EXPECT_NEAR(lm, ld, 1e-4 * ld) << "eval prints 4 decimals: the losses must agree to them";
  CliRun i = run("inspect " + (moe / "checkpoint.safetensors").string());
  EXPECT_NE(i.output.find("\"moe\""), std::string::npos) << i.output;
  CliRun tr = run("train --init-from " + (moe / "checkpoint.safetensors").string() +
                  " --data synthetic --steps 3 --batch 2 --seq-len 32 --eval-every 0 --quiet --out " + tuned.string());
  ASSERT_EQ(tr.status, 0) << tr.output;
  CliRun it = run("inspect " + (tuned / "checkpoint.safetensors").string());  // the per-expert load of training
  EXPECT_NE(it.output.find("expert load"), std::string::npos) << it.output;
  EXPECT_NE(it.output.find("layer 1: max/mean"), std::string::npos) << it.output;
  std::ifstream log(tuned / "train_log.jsonl");
  std::string first;
  std::getline(log, first);
  EXPECT_NE(first.find("\"expert_load\""), std::string::npos) << first;
  CliRun g = run("generate --checkpoint " + (tuned / "checkpoint.safetensors").string() + " --prompt 'Alice ' --max-new 8");
  ASSERT_EQ(g.status, 0) << g.output;
  CliRun bad = run("convert upcycle --experts 1 --from " + (dense / "checkpoint.safetensors").string() + " --out " +
                   tmp("bad").string());
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("--experts"), std::string::npos) << bad.output;
}

// MoEfication with every expert kept is the dense model (eval agrees to its 4 decimals); with
// half of them the converted checkpoint still evaluates, trains and generates.
TEST(Cli, MoefyEvaluatesTrainsAndGenerates) {
  fs::path dense = tmp("mf_dense"), all = tmp("mf_all"), half = tmp("mf_half"), tuned = tmp("mf_tuned");
  CliRun t = run("train --preset transformer-tiny --data synthetic --steps 6 --batch 2 --seq-len 32 --eval-every 0 --quiet --out " +
                 dense.string());
  ASSERT_EQ(t.status, 0) << t.output;
  const std::string from = " --from " + (dense / "checkpoint.safetensors").string() +
                           " --data synthetic --calibration-tokens 512 --seq-len 32 --eval-batches 1";
  CliRun c = run("convert moefy --experts 4 --top-k 4" + from + " --out " + all.string());
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_NE(c.output.find("keep 100.0% of the activation mass"), std::string::npos) << c.output;
  CliRun h = run("convert moefy --experts 4 --top-k 2" + from + " --out " + half.string());
  ASSERT_EQ(h.status, 0) << h.output;
  auto eval_loss = [&](const fs::path& dir) {
    CliRun e = run("eval --checkpoint " + (dir / "checkpoint.safetensors").string() + " --data synthetic --max-batches 2");
    EXPECT_EQ(e.status, 0) << e.output;
    size_t at = e.output.find("loss ");
    return at == std::string::npos ? -1.0 : std::stod(e.output.substr(at + 5));
  };
  const double ld = eval_loss(dense);
  ASSERT_GT(ld, 0);
  EXPECT_NEAR(eval_loss(all), ld, 1e-4 * ld);
  EXPECT_GT(eval_loss(half), 0);
  CliRun tr = run("train --init-from " + (half / "checkpoint.safetensors").string() +
                  " --data synthetic --steps 3 --batch 2 --seq-len 32 --eval-every 0 --quiet --out " + tuned.string());
  ASSERT_EQ(tr.status, 0) << tr.output;
  CliRun g = run("generate --checkpoint " + (tuned / "checkpoint.safetensors").string() + " --prompt 'Alice ' --max-new 8");
  ASSERT_EQ(g.status, 0) << g.output;
  CliRun bad = run("convert moefy --experts 7" + from + " --out " + tmp("mf_bad").string());
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("not a multiple of --experts 7"), std::string::npos) << bad.output;
}

TEST(Cli, MalformedCheckpointsGiveAnErrorAndNonZeroExit) {
  std::string good_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto file = [&](const std::string& header, const std::string& data) { return le64(header.size()) + header + data; };
  struct Case {
    const char* name;
    std::string bytes;
    const char* expect;  // a fragment of the message
  };
  std::vector<Case> cases = {
      {"truncated", std::string("\x05\x00\x00", 3), "8"},
      {"header_past_end", le64(1000) + "{}", "header"},
      {"bad_json", file("{not json", ""), "JSON"},
      {"unknown_dtype", file(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "Q7"},
      {"overlap", file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       std::string(12, '\0')),
       "overlap"},
      {"shape_mismatch", file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "w"},
      {"data_missing", file(good_header, std::string(4, '\0')), "w"},
  };
  for (const Case& c : cases) {
    fs::path p = tmp(std::string(c.name) + ".safetensors");
    write_bytes(p, c.bytes);
    CliRun r = run("inspect " + p.string());
    EXPECT_EQ(r.status, 1) << c.name << ": " << r.output;  // 1 = a reported error; >= 128 would be a crash
    EXPECT_NE(r.output.find("speedwins: error:"), std::string::npos) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(p.string()), std::string::npos) << c.name << " must name the file: " << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.name << ": " << r.output;
  }
  CliRun missing = run("inspect " + tmp("nope.safetensors").string());
  EXPECT_EQ(missing.status, 1) << missing.output;
}

TEST(Cli, BadArgumentsAreReported) {
  CliRun r = run("train --preset no-such-preset --out " + tmp("x").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no-such-preset"), std::string::npos) << r.output;
  r = run("train --preset transformer-tiny --precision fp8 --out " + tmp("y").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("precision"), std::string::npos) << r.output;
  r = run("train --resume --out " + tmp("empty").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no checkpoint"), std::string::npos) << r.output;
  r = run("generate --checkpoint " + tmp("missing.safetensors").string());
  EXPECT_EQ(r.status, 1) << r.output;
  r = run("bench --compare only_one.json");
  EXPECT_NE(r.status, 0) << r.output;
  r = run("frobnicate");
  EXPECT_NE(r.status, 0) << r.output;
}

}  // namespace
