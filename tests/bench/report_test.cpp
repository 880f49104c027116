// The arena report from the results JSON: one <svg> per plot, a table row per preset, nothing that
// reaches the network, escaped names, balanced tags, graceful gaps (missing, NaN, <= 0 on log axes),
// clear errors for bad input, and an atomic write.
#include "bench/report.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "bench/svg_plot.h"
#include "core/error.h"
#include "testing.h"

namespace sw::bench {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kPlotIds = {"plot-quality-prefill", "plot-quality-decode", "plot-prefill", "plot-decode",
                                           "plot-state",           "plot-memory",         "plot-mqar",    "plot-loss"};

std::string fixture_path() {
  if (const char* repo = std::getenv("SW_REPO")) return std::string(repo) + "/tests/bench/fixtures/arena_results.json";
  return (fs::path(__FILE__).parent_path() / "fixtures" / "arena_results.json").string();
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + what.size())) ++n;
  return n;
}

// "" when every element is closed in order (void elements and <x/> aside), else the first problem.
std::string tag_balance(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "wbr", "col"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    size_t end = html.find('>', i);
    if (end == std::string::npos) return "unterminated tag at byte " + std::to_string(i);
    std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '!') continue;  // <!DOCTYPE html>
    bool closing = tag[0] == '/', self = tag.back() == '/';
    size_t n0 = closing ? 1 : 0, n1 = n0;
    while (n1 < tag.size() && (std::isalnum(static_cast<unsigned char>(tag[n1])) || tag[n1] == '-')) ++n1;
    std::string name = tag.substr(n0, n1 - n0);
    if (name.empty()) return "tag without a name: <" + tag + ">";
    if (closing) {
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> closes <" + (stack.empty() ? std::string("nothing") : stack.back()) + ">";
      stack.pop_back();
    } else if (!self && !kVoid.count(name)) {
      stack.push_back(name);
      if (name == "style") i = html.find("</style>", i);  // raw text up to its end tag
      if (i == std::string::npos) return "unclosed <style>";
    }
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

// True when "nan" or "inf" stands as a word (how printf shows non-finite numbers), any case.
bool has_nonfinite(const std::string& s) {
  auto letter = [&](size_t i) { return i < s.size() && std::isalpha(static_cast<unsigned char>(s[i])); };
  for (size_t i = 0; i + 3 <= s.size(); ++i) {
    std::string w = s.substr(i, 3);
    for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if ((w == "nan" || w == "inf") && !(i > 0 && letter(i - 1)) && !letter(i + 3)) return true;
  }
  return false;
}

// Every SVG's source, for checks that concern only the drawing.
std::vector<std::string> svgs(const std::string& html) {
  std::vector<std::string> out;
  for (size_t i = html.find("<svg"); i != std::string::npos; i = html.find("<svg", i + 1))
    out.push_back(html.substr(i, html.find("</svg>", i) - i));
  return out;
}

std::string table_of(const std::string& html) {
  size_t a = html.find("<table class=\"results\">"), b = html.find("</table>", a);
  return a == std::string::npos || b == std::string::npos ? "" : html.substr(a, b - a);
}

// The table row of a preset ("" when absent): from its name cell to the row's end.
std::string row_of(const std::string& html, const std::string& escaped_name) {
  std::string t = table_of(html);
  size_t a = t.find("</span>" + escaped_name + "</td>");
  return a == std::string::npos ? "" : t.substr(a, t.find("</tr>", a) - a);
}

json minimal_model(const std::string& preset) { return {{"preset", preset}}; }

std::string error_of(const json& results, const std::string& source = "arena.json") {
  try {
    render_report_html(results, source);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Report, FixtureHasEveryPlotRowAndNoNetwork) {
  json results = read_results(fixture_path());
  ASSERT_GE(results["models"].size(), 5u) << "the fixture should be a realistic arena run";
  std::string html = render_report_html(results, fixture_path());

  EXPECT_EQ(count(html, "<svg"), kPlotIds.size());
  EXPECT_EQ(count(html, "</svg>"), kPlotIds.size());
  for (const std::string& id : kPlotIds) EXPECT_EQ(count(html, "<svg id=\"" + id + "\""), 1u) << id;

  EXPECT_EQ(count(table_of(html), "<td class=\"preset\">"), results["models"].size());
  for (const json& m : results["models"]) {
    std::string name = m["preset"].get<std::string>();
    std::string row = row_of(html, html_escape(name));
    ASSERT_FALSE(row.empty()) << "no table row for " << name;
    EXPECT_NE(row.find(html_escape(m["family"].get<std::string>())), std::string::npos) << row;
    // The legend and the quality plots' labels name every preset too.
    EXPECT_GE(count(html, ">" + html_escape(name) + "</text>"), 3u) << name;
  }

  // Self-contained: nothing is fetched (no URLs, scripts, stylesheets, images, frames, imports).
  for (const char* bad : {"http://", "https://", "<script", "<link", "<img", "<iframe", "<object", "@import", " src=",
                          " href=", "xlink:"})
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
  for (size_t i = html.find("url("); i != std::string::npos; i = html.find("url(", i + 1))
    EXPECT_EQ(html[i + 4], '#') << "only in-page references (clip paths) are allowed: " << html.substr(i, 40);

  EXPECT_EQ(tag_balance(html), "");
  // The meta block shows the ceilings and the run's settings.
  for (const char* shown : {"362 GFLOP/s", "729 GFLOP/s", "30.2 GB/s", "35.6 GB/s", "brown", "200,000"})
    EXPECT_NE(html.find(shown), std::string::npos) << shown;
  // Gaps in the fixture (the MoE run has no memory probe) show as "-" and a note, never "nan".
  for (const std::string& svg : svgs(html)) EXPECT_FALSE(has_nonfinite(svg)) << svg.substr(0, 80);
  EXPECT_FALSE(has_nonfinite(table_of(html)));
}

TEST(Report, NamesAreEscaped) {
  json results = {{"meta", {{"corpus", "<b>bold</b>"}, {"created", "\"><img>"}}},
                  {"models",
                   {{{"preset", "<script>alert(1)</script>"},
                     {"family", "a&b'\""},
                     {"quality", {{"val_bpb", 2.0}}},
                     {"prefill", {{{"len", 512}, {"tokens_per_s", 1000}}}}}}}};
  std::string html = render_report_html(results);
  std::string lower = html;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(lower.find("<script"), std::string::npos);
  EXPECT_EQ(lower.find("<img"), std::string::npos);
  EXPECT_EQ(lower.find("<b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("a&amp;b&#39;&quot;"), std::string::npos);
  EXPECT_FALSE(row_of(html, "&lt;script&gt;alert(1)&lt;/script&gt;").empty());
  EXPECT_EQ(tag_balance(html), "");
}

TEST(Report, ActiveParametersStandBesideTheTotal) {
  // An MoE that holds 12M parameters but uses 3M per token, beside a dense 3M model.
  json results = {{"models",
                   {{{"preset", "moe"}, {"params", 12e6}, {"active_params", 3e6}},
                    {{"preset", "dense"}, {"params", 3e6}, {"active_params", 3e6}},
                    {{"preset", "older-run"}, {"params", 5e6}}}}};  // results written before the field
  std::string html = render_report_html(results);
  EXPECT_NE(html.find("<th rowspan=\"2\">active params</th>"), std::string::npos);
  const std::string moe = row_of(html, "moe"), older = row_of(html, "older-run");
  EXPECT_NE(moe.find(">12.0M</td><td class=\"num\">3.00M</td>"), std::string::npos) << moe;
  EXPECT_NE(older.find(">5.00M</td><td class=\"num\">-</td>"), std::string::npos) << older;
}

TEST(Report, SingleModelAndMissingFields) {
  json fixture = read_results(fixture_path());
  json one = {{"meta", fixture["meta"]}, {"models", json::array({fixture["models"][0]})}};
  std::string html = render_report_html(one);
  EXPECT_EQ(count(html, "<svg"), kPlotIds.size());
  EXPECT_EQ(tag_balance(html), "");
  EXPECT_FALSE(row_of(html, fixture["models"][0]["preset"].get<std::string>()).empty());
  EXPECT_EQ(html.find("no data"), std::string::npos) << "one model still has data for every plot";

  // Only a preset name, no meta: every value cell is "-" and each plot says it has no data.
  json bare = {{"models", json::array({minimal_model("bare")})}};
  html = render_report_html(bare);
  EXPECT_EQ(count(html, "<svg"), kPlotIds.size());
  EXPECT_EQ(count(html, ">no data</text>"), kPlotIds.size());
  std::string row = row_of(html, "bare");
  ASSERT_FALSE(row.empty());
  EXPECT_EQ(count(row, "<td class=\"num"), 8u) << "params, active params, train, loss, bpb, MQAR, state, peak: " << row;
  EXPECT_EQ(count(row, "<td class=\"num"), count(row, "<td class=\"num\">-</td>")) << row;
  EXPECT_EQ(tag_balance(html), "");

  json none = {{"models", json::array()}};
  html = render_report_html(none);
  EXPECT_NE(html.find("no models in the results"), std::string::npos);
  EXPECT_EQ(tag_balance(html), "");
}

TEST(Report, NonFiniteAndNonPositiveValuesAreLeftOutOfPlots) {
  json m = {{"preset", "odd"},
            {"quality", {{"val_bpb", NAN}, {"val_loss", nullptr}}},
            {"prefill", {{{"len", 512}, {"tokens_per_s", 0}}, {{"len", 1024}, {"tokens_per_s", -3}},
                         {{"len", 2048}, {"tokens_per_s", 900}}}},
            {"state_bytes", {{{"context", 512}, {"bytes", 0}}, {{"context", 1024}, {"bytes", 4096}}}}};
  json ok = {{"preset", "ok"},
             {"quality", {{"val_bpb", 2.1}}},
             {"prefill", {{{"len", 512}, {"tokens_per_s", 100}}, {{"len", 2048}, {"tokens_per_s", 50000}}}},
             {"state_bytes", {{{"context", 512}, {"bytes", 1 << 20}}, {{"context", 1024}, {"bytes", 2 << 20}}}}};
  std::string html = render_report_html({{"models", {m, ok}}});
  EXPECT_EQ(tag_balance(html), "");
  for (const std::string& svg : svgs(html)) EXPECT_FALSE(has_nonfinite(svg)) << svg;
  // The prefill plot is log-y here (ratio 500): 0 and -3 cannot be drawn and are counted.
  std::string prefill = svgs(html)[2];
  ASSERT_NE(prefill.find("id=\"plot-prefill\""), std::string::npos);
  EXPECT_NE(prefill.find("2 points not drawn"), std::string::npos) << prefill;
  std::string state = svgs(html)[4];
  ASSERT_NE(state.find("id=\"plot-state\""), std::string::npos);
  EXPECT_NE(state.find("1 point not drawn"), std::string::npos);
  EXPECT_NE(row_of(html, "odd").find("<td class=\"num\">-</td>"), std::string::npos);
}

TEST(Report, ManyModelsCycleColoursAndMarkers) {
  json models = json::array();
  for (int i = 0; i < 25; ++i)
    models.push_back({{"preset", "model-" + std::to_string(i)},
                      {"quality", {{"val_bpb", 2.0 + 0.01 * i}}},
                      {"decode", {{{"context", 512}, {"tokens_per_s", 100.0 + 10 * i}}}}});
  std::string html = render_report_html({{"models", models}});
  EXPECT_EQ(count(table_of(html), "<td class=\"preset\">"), 25u);
  for (int i = 0; i < 10; ++i) EXPECT_NE(html.find(style_colour(i)), std::string::npos) << i;
  EXPECT_EQ(style_colour(3), style_colour(13)) << "10 colours cycle";
  EXPECT_EQ(tag_balance(html), "");
  for (int i = 0; i < 25; ++i) EXPECT_NE(html.find(">model-" + std::to_string(i) + "</text>"), std::string::npos);
}

TEST(Report, ParetoFrontAndStateInterpolation) {
  auto model = [](const std::string& name, double tps, double bpb) {
    return json{{"preset", name},
                {"quality", {{"val_bpb", bpb}}},
                {"prefill", {{{"len", 1024}, {"tokens_per_s", tps}}}},
                {"state_bytes", {{{"context", 256}, {"bytes", 2 << 20}}, {{"context", 512}, {"bytes", 4 << 20}}}},
                {"mqar", {{{"pairs", 8}, {"seq_len", 128}, {"accuracy", 0.9}}}}};
  };
  // fast beats slow on speed, slow beats fast on quality; dominated is beaten by fast on both.
  json results = {{"models", {model("fast", 10000, 2.0), model("slow", 5000, 1.9), model("dominated", 4000, 2.1)}}};
  std::string html = render_report_html(results);
  EXPECT_NE(row_of(html, "fast").find("<td>prefill</td>"), std::string::npos);
  EXPECT_NE(row_of(html, "slow").find("<td>prefill</td>"), std::string::npos);
  EXPECT_TRUE(row_of(html, "dominated").ends_with("<td>-</td>")) << row_of(html, "dominated");
  // 2 MiB at 256 and 4 MiB at 512 are linear in the context, so 128 tokens hold 1 MiB.
  EXPECT_NE(html.find("8 pairs, length 128: 90% at 1 MiB (interpolated)"), std::string::npos);
}

TEST(Report, BadInputNamesSourceFieldAndExpectation) {
  auto expect_error = [](const json& j, std::vector<std::string> parts) {
    std::string msg = error_of(j);
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  };
  expect_error(json::array(), {"[report]", "arena.json", "expected an object"});
  expect_error({{"meta", {}}}, {"arena.json", "models", "expected an array"});
  expect_error({{"models", 3}}, {"arena.json", "models", "expected an array"});
  expect_error({{"models", json::array({42})}}, {"models[0]", "expected an object"});
  expect_error({{"models", json::array({json::object()})}}, {"models[0].preset", "expected a non-empty preset name"});
  json bad_number = {{"models", {{{"preset", "a"}, {"prefill", {{{"len", 512}, {"tokens_per_s", "fast"}}}}}}}};
  expect_error(bad_number, {"arena.json", "models[0].prefill[0].tokens_per_s", "expected a number", "\"fast\""});
  json bad_curve = {{"models", {{{"preset", "a"}, {"train", {{"loss_curve", {{1, 2}, {3}}}}}}}}};
  expect_error(bad_curve, {"models[0].train.loss_curve[1]", "expected [step, loss]"});
  json bad_meta = {{"meta", {{"ceilings", {{"threads", "two"}}}}}, {"models", json::array()}};
  expect_error(bad_meta, {"meta.ceilings.threads", "expected a number"});
  json bad_family = {{"models", {{{"preset", "a"}, {"family", 7}}}}};
  expect_error(bad_family, {"models[0].family", "expected a string"});
}

TEST(Report, ReadResultsNamesTheFile) {
  fs::path dir = fs::temp_directory_path() / ("sw_report_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string missing = (dir / "missing.json").string();
  try {
    read_results(missing);
    FAIL() << "a missing file must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  std::string broken = (dir / "broken.json").string();
  std::ofstream(broken) << "{\"models\": [";
  try {
    read_results(broken);
    FAIL() << "invalid JSON must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(broken), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Report, WriteIsAtomic) {
  fs::path dir = fs::temp_directory_path() / ("sw_report_write_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "report.html").string();
  json results = read_results(fixture_path());
  write_report(path, results);
  std::ifstream in(path);
  std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, render_report_html(results));

  // Bad results: an error, and the previous report untouched.
  EXPECT_THROW(write_report(path, json{{"models", 1}}), Error);
  std::ifstream again(path);
  std::string after((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, written);
  // A folder that does not exist: an error naming the path.
  std::string nowhere = (dir / "no_such_dir" / "report.html").string();
  try {
    write_report(nowhere, results);
    FAIL() << "writing into a missing folder must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(nowhere), std::string::npos) << e.what();
  }
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) files += entry.is_regular_file();
  EXPECT_EQ(files, 1u) << "no temp file may be left behind";
  fs::remove_all(dir);
}

TEST(SvgPlot, FormattingAndEscaping) {
  EXPECT_EQ(html_escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
  EXPECT_EQ(format_si(9500), "9.50k");
  EXPECT_EQ(format_si(10027), "10.0k");
  EXPECT_EQ(format_si(826), "826");
  EXPECT_EQ(format_si(3281152), "3.28M");
  EXPECT_EQ(format_si(0.5), "0.500");
  EXPECT_EQ(format_si(NAN), "-");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(4 << 20), "4 MiB");
  EXPECT_EQ(format_percent(0.93), "93%");
  EXPECT_EQ(format_percent(1.0), "100%");
  EXPECT_EQ(format_value(4096, AxisFormat::integer), "4096");
  // Cutting inside a multi-byte character must not leave half of it.
  std::string cut = truncate_text("αβγδε", 3);
  EXPECT_EQ(cut, "αβ…");
  EXPECT_EQ(truncate_text("short", 10), "short");
}

TEST(SvgPlot, LogAxisTicksLabelsAndSkippedPoints) {
  PlotSpec spec;
  spec.id = "t\"1";  // unsafe characters are dropped from the id
  spec.title = "t";
  spec.x = {"len", true, AxisFormat::integer, {}, {}, {256, 512, 1024}};
  spec.y = {"bytes", true, AxisFormat::bytes, {}, {}, {}};
  PlotSeries s;
  s.name = "a";
  s.show_labels = true;
  s.points = {{256, 1024, "p1", ""}, {1024, 1 << 20, "p2", ""}, {4096, 0, "zero", ""}, {NAN, 5, "nan", ""}};
  spec.series = {s};
  std::string svg = render_svg_plot(spec);
  EXPECT_NE(svg.find("<svg id=\"t1\""), std::string::npos);
  for (const char* tick : {">256</text>", ">512</text>", ">1024</text>", ">1 KiB</text>", ">1 MiB</text>"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  EXPECT_NE(svg.find(">p1</text>"), std::string::npos);
  EXPECT_NE(svg.find(">p2</text>"), std::string::npos);
  EXPECT_EQ(svg.find(">zero</text>"), std::string::npos);
  EXPECT_NE(svg.find("2 points not drawn"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 1u);
  EXPECT_EQ(tag_balance(svg), "");
}

}  // namespace
}  // namespace sw::bench
