// The arena end to end at a tiny budget (labelled slow: CI runs it once): every registered preset of
// the small size gets an entry in results.json, the HTML report embeds one SVG per plot and renders
// in headless Chromium without console errors.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench/arena.h"
#include "models/presets.h"
#include "testing.h"

namespace sw::bench {
namespace {

TEST(Arena, TinyBudgetRunsEveryPresetAndWritesTheReport) {
  namespace fs = std::filesystem;
  const char* out_env = std::getenv("SW_OUT_DIR");
  std::string out = std::string(out_env && *out_env ? out_env : fs::current_path().string()) + "/arena_tiny";
  fs::remove_all(out);
  ArenaConfig c;
  c.budget = 0.02;  // ~5k training tokens and 10 MQAR steps per preset: checks the plumbing, not quality
  c.lengths = {128, 512};
  c.decode_steps = 4;
  c.out_dir = out;
  c.progress = false;
  nlohmann::json r = run_arena(c);

  std::vector<std::string> presets = models::preset_names("small");
  ASSERT_FALSE(presets.empty());
  std::ifstream f(out + "/results.json");
  ASSERT_TRUE(f.good());
  nlohmann::json j = nlohmann::json::parse(f);
  ASSERT_EQ(j["models"].size(), presets.size());
  for (size_t i = 0; i < presets.size(); ++i) {
    const nlohmann::json& m = j["models"][i];
    EXPECT_EQ(m["preset"], presets[i]);
    EXPECT_TRUE(std::isfinite(m["quality"]["val_bpb"].get<double>())) << presets[i];
    EXPECT_EQ(m["prefill"].size(), 2u) << presets[i];
    EXPECT_EQ(m["mqar"].size(), 3u) << presets[i];
    EXPECT_GT(m["decode"][0]["tokens_per_s"].get<double>(), 0) << presets[i];
  }
  std::ifstream h(out + "/report.html");
  std::stringstream ss;
  ss << h.rdbuf();
  std::string html = ss.str();
  size_t svgs = 0;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) ++svgs;
  EXPECT_GE(svgs, 4u) << "the report must embed its plots as SVG";
  for (const std::string& p : presets) EXPECT_NE(html.find(p), std::string::npos) << p;

  // Render it the way a person would see it; render_check.sh fails on any console message.
  const char* repo = std::getenv("SW_REPO");
  ASSERT_NE(repo, nullptr) << "SW_REPO must point at the repository (set by ctest)";
  std::string cmd = std::string("bash ") + repo + "/scripts/render_check.sh " + out + "/report.html " + out +
                    "/report.png > " + out + "/render.log 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream lf(out + "/render.log");
  std::stringstream log;
  log << lf.rdbuf();
  EXPECT_EQ(rc, 0) << log.str();
  ASSERT_TRUE(fs::exists(out + "/report.png"));
  // A rendered 1400-wide page of plots compresses to well over 50 KB; a blank page to a few KB.
  EXPECT_GT(fs::file_size(out + "/report.png"), 50000u) << "the screenshot looks blank";
}

}  // namespace
}  // namespace sw::bench
