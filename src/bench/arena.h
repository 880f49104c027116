// The arena: the survey's question (efficiency vs quality) answered on this machine in one command.
// Every preset of one size class is trained on the same data, token budget and seed; then each is
// measured for quality (validation loss and bits per byte on the text corpus), recall (MQAR accuracy
// at several numbers of key-value pairs and lengths, against its state size, as in Zoology),
// prefill/decode throughput over lengths (MFU/MBU against the ceilings of the same run) and memory.
// The results go to a JSON file, a table and a self-contained HTML report.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sw::bench {

struct ArenaConfig {
  std::vector<std::string> presets;  // empty: every registered preset of `size`
  std::string size = "small";
  std::string data = "brown";        // brown | synthetic | a path
  double budget = 1.0;               // scales every token count and step count
  int64_t train_tokens = 500000;     // language-model training tokens per preset at budget 1
  int64_t batch = 8, seq_len = 128;
  double lr = 3e-3;
  int64_t mqar_steps = 250;          // MQAR training steps per preset at budget 1
  std::vector<int64_t> lengths = {512, 4096, 16384};  // prefill lengths and decode contexts
  int64_t decode_steps = 16;
  int64_t seed = 1;
  std::string out_dir = "out/arena";
  bool progress = true;
};

// Runs the arena; writes <out_dir>/results.json and <out_dir>/report.html; returns the results.
nlohmann::json run_arena(const ArenaConfig& cfg);
// The summary table of a results JSON (one row per preset).
std::string arena_table(const nlohmann::json& results);

}  // namespace sw::bench
