// The arena's results JSON, validated into plain structs for the report (see report.h for the
// schema's source). Missing or null fields read as NaN / empty; a field of the wrong type throws
// sw::Error naming the source, the field path and what was expected.
#pragma once

#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sw::bench {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

struct ReportSample {
  double len = kMissing, value = kMissing, util = kMissing;  // util: MFU for prefill, MBU for decode
};
struct ReportMqar {
  double pairs = kMissing, seq_len = kMissing, accuracy = kMissing;
};
struct ReportModel {
  std::string preset, family;
  double params = kMissing, active_params = kMissing;  // active: what one token uses (MoE: top-k experts)
  double train_tokens = kMissing, train_seconds = kMissing, train_tps = kMissing;
  double val_loss = kMissing, val_bpb = kMissing;
  std::vector<std::pair<double, double>> loss_curve;
  std::vector<ReportMqar> mqar;
  std::vector<ReportSample> state_bytes, prefill, decode, memory;
  int style = 0;  // colour and marker index: the model's position in the results
};
struct ReportMeta {
  std::string created, corpus;
  double budget_tokens = kMissing, seed = kMissing;
  double threads = kMissing, f32_gflops = kMissing, bf16_gflops = kMissing;
  double triad_gbs = kMissing, read_gbs = kMissing;
};
struct ReportData {
  ReportMeta meta;
  std::vector<ReportModel> models;
};

// `source` names the results (a file name) in error messages.
ReportData parse_report_data(const nlohmann::json& results, const std::string& source);

}  // namespace sw::bench
