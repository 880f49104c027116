// The arena's report: one self-contained HTML page (inline CSS and SVG; no scripts, fonts, images
// or network) from the results JSON that `speedwins arena` writes. Plots: quality vs throughput
// with the Pareto front, prefill/decode throughput vs length, state and peak memory vs length,
// MQAR accuracy vs state size, training loss; then a results table and the run's meta (ceilings,
// corpus, budget).
//
// Every optional field may be missing or null (shown as "-", and left out of plots with a note).
// A field of the wrong type is an error naming the source, the field path and what was expected.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sw::bench {

// Parses a results JSON file; errors name the file.
nlohmann::json read_results(const std::string& path);

// The whole page. `source` names the results (a file name) in error messages.
std::string render_report_html(const nlohmann::json& results, const std::string& source = "results");

// Renders first, then writes atomically (temp file beside `path`, fsync, rename): bad results or
// a failed write leave any previous report untouched.
void write_report(const std::string& path, const nlohmann::json& results, const std::string& source = "results");

}  // namespace sw::bench
