// The arena report (see report.h): from the validated results (report_data), build the plots with
// svg_plot, the table and the meta block, and assemble one HTML page.
#include "bench/report.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "bench/report_data.h"
#include "bench/svg_plot.h"
#include "core/bounded_json.h"
#include "core/error.h"

namespace sw::bench {
namespace {

using nlohmann::json;
using Sample = ReportSample;
using Mqar = ReportMqar;
using Model = ReportModel;
using Meta = ReportMeta;
using Results = ReportData;

// ---- helpers over the validated results ----

bool finite(double v) { return std::isfinite(v); }

const Sample* at_len(const std::vector<Sample>& s, double len) {
  for (const Sample& x : s)
    if (x.len == len && finite(x.value)) return &x;
  return nullptr;
}

// Distinct finite lengths measured by any model, ascending.
std::vector<double> all_lengths(const std::vector<Model>& ms, std::vector<Sample> Model::*field) {
  std::set<double> s;
  for (const Model& m : ms)
    for (const Sample& x : m.*field)
      if (finite(x.len) && finite(x.value)) s.insert(x.len);
  return {s.begin(), s.end()};
}

// The longest length every model with data measured (fair comparison); NaN when there is none.
double common_length(const std::vector<Model>& ms, std::vector<Sample> Model::*field) {
  std::vector<double> lens = all_lengths(ms, field);
  for (auto it = lens.rbegin(); it != lens.rend(); ++it) {
    bool everyone = true;
    for (const Model& m : ms)
      if (!(m.*field).empty() && !at_len(m.*field, *it)) everyone = false;
    if (everyone) return *it;
  }
  return kMissing;
}

// State bytes at a context: exact when measured, else linear in the context through the two
// nearest measurements (exact for KV caches, which grow linearly, and for constant-size states).
double state_at(const std::vector<Sample>& sb, double ctx, bool* exact) {
  std::vector<Sample> s;
  for (const Sample& x : sb)
    if (finite(x.len) && finite(x.value)) s.push_back(x);
  *exact = false;
  if (s.empty() || !finite(ctx)) return kMissing;
  std::sort(s.begin(), s.end(), [](const Sample& a, const Sample& b) { return a.len < b.len; });
  for (const Sample& x : s)
    if (x.len == ctx) return *exact = true, x.value;
  if (s.size() == 1) return s[0].value;
  size_t i = 1;
  while (i + 1 < s.size() && s[i].len < ctx) ++i;
  const Sample &a = s[i - 1], &b = s[i];
  if (b.len == a.len) return a.value;
  return a.value + (b.value - a.value) * (ctx - a.len) / (b.len - a.len);
}

double mean_accuracy(const Model& m) {
  double sum = 0;
  int n = 0;
  for (const Mqar& q : m.mqar)
    if (finite(q.accuracy)) sum += q.accuracy, ++n;
  return n ? sum / n : kMissing;
}

// Log scale when the positive values spread over more than `ratio`. Zero or negative values (failed
// measurements) do not veto it: on a log axis they are left out and counted in the plot's note.
bool wants_log(const std::vector<double>& v, double ratio) {
  double lo = INFINITY, hi = 0;
  for (double x : v)
    if (finite(x) && x > 0) lo = std::min(lo, x), hi = std::max(hi, x);
  return hi > 0 && hi / lo > ratio;
}

std::string fixed(double v, int decimals) {
  if (!finite(v)) return "-";
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

std::string grouped(double v) {  // 200000 -> "200,000"
  if (!finite(v)) return "-";
  std::string s = fixed(std::fabs(v), 0), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string len_str(double v) { return format_value(v, AxisFormat::integer); }

// ---- plots ----

// Indices of the points no other point beats: x at least as high and y at least as low, one strictly.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& pts) {
  std::vector<size_t> front;
  for (size_t i = 0; i < pts.size(); ++i) {
    bool dominated = false;
    for (size_t k = 0; k < pts.size() && !dominated; ++k)
      dominated = k != i && pts[k].first >= pts[i].first && pts[k].second <= pts[i].second &&
                  (pts[k].first > pts[i].first || pts[k].second < pts[i].second);
    if (!dominated) front.push_back(i);
  }
  return front;
}

struct QualityPlot {
  std::string svg;
  std::set<std::string> front;  // presets on the Pareto front
  double len = kMissing;
};

QualityPlot quality_plot(const Results& r, std::vector<Sample> Model::*field, const std::string& id,
                         const std::string& what, const std::string& util_name) {
  QualityPlot out;
  out.len = common_length(r.models, field);
  PlotSpec spec;
  spec.id = id;
  spec.title = "Quality vs " + what + " throughput" +
               (finite(out.len) ? " at " + len_str(out.len) + " tokens" : " (longest length measured)");
  spec.x = {what + " tokens/s (higher is better)", false, AxisFormat::number, {}, {}, {}};
  spec.y = {"validation bits per byte (lower is better)", false, AxisFormat::number, {}, {}, {}};
  std::vector<std::pair<double, double>> pts;
  std::vector<const Model*> owners;
  std::vector<double> xs;
  for (const Model& m : r.models) {
    const Sample* s = nullptr;
    if (finite(out.len)) s = at_len(m.*field, out.len);
    else
      for (const Sample& x : m.*field)
        if (finite(x.value) && finite(x.len) && (!s || x.len > s->len)) s = &x;
    double x = s ? s->value : kMissing;
    PlotSeries ser;
    ser.name = m.preset;
    ser.style = m.style;
    ser.line = false;
    ser.show_labels = true;
    std::string tip = m.preset + ": " + format_si(x) + " tok/s, " + fixed(m.val_bpb, 3) + " bpb";
    if (s && finite(s->util)) tip += ", " + util_name + " " + format_percent(s->util);
    ser.points.push_back({x, m.val_bpb, m.preset, tip});
    spec.series.push_back(ser);
    if (finite(x) && x > 0 && finite(m.val_bpb)) pts.emplace_back(x, m.val_bpb), owners.push_back(&m);
    xs.push_back(x);
  }
  spec.x.log = wants_log(xs, 20);
  PlotSeries front;
  front.name = "Pareto front (not dominated)";
  front.colour = "#555";
  front.dashed = true;
  front.markers = false;
  for (size_t i : pareto_front(pts)) {
    front.points.push_back({pts[i].first, pts[i].second, "", ""});
    out.front.insert(owners[i]->preset);
  }
  spec.series.insert(spec.series.begin(), front);  // drawn first, under the markers
  out.svg = render_svg_plot(spec);
  return out;
}

std::string length_plot(const Results& r, std::vector<Sample> Model::*field, const std::string& id,
                        const std::string& title, const std::string& x_label, const std::string& y_label,
                        AxisFormat y_format, const std::string& unit, const std::string& util_name) {
  PlotSpec spec;
  spec.id = id;
  spec.title = title;
  spec.x = {x_label, true, AxisFormat::integer, {}, {}, {}};
  std::vector<double> lens = all_lengths(r.models, field), ys;
  if (lens.size() <= 10) spec.x.ticks = lens;  // the measured lengths read better than 1-2-5 ticks
  for (const Model& m : r.models) {
    PlotSeries ser;
    ser.name = m.preset;
    ser.style = m.style;
    for (const Sample& s : m.*field) {
      std::string tip = m.preset + " at " + len_str(s.len) + ": " + format_value(s.value, y_format) + unit;
      if (finite(s.util)) tip += ", " + util_name + " " + format_percent(s.util);
      ser.points.push_back({s.len, s.value, "", tip});
      ys.push_back(s.value);
    }
    spec.series.push_back(ser);
  }
  spec.y = {y_label, y_format == AxisFormat::bytes || wants_log(ys, 10), y_format, {}, {}, {}};
  return render_svg_plot(spec);
}

std::string mqar_plot(const Results& r) {
  PlotSpec spec;
  spec.id = "plot-mqar";
  spec.title = "MQAR recall vs state size";
  spec.x = {"state / cache bytes per sequence at the MQAR length", true, AxisFormat::bytes, {}, {}, {}};
  spec.y = {"MQAR accuracy", false, AxisFormat::percent, 0.0, 1.0, {}};
  for (const Model& m : r.models) {
    PlotSeries ser;
    ser.name = m.preset;
    ser.style = m.style;
    ser.line = false;
    for (const Mqar& q : m.mqar) {
      bool exact = false;
      double bytes = state_at(m.state_bytes, q.seq_len, &exact);
      std::string tip = m.preset + ", " + len_str(q.pairs) + " pairs, length " + len_str(q.seq_len) + ": " +
                        format_percent(q.accuracy) + " at " + format_bytes(bytes) + (exact ? "" : " (interpolated)");
      ser.points.push_back({bytes, q.accuracy, "", tip});
    }
    spec.series.push_back(ser);
  }
  return render_svg_plot(spec);
}

std::string loss_plot(const Results& r, bool* zoomed) {
  PlotSpec spec;
  spec.id = "plot-loss";
  spec.title = "Training loss";
  spec.x = {"step", false, AxisFormat::integer, {}, {}, {}};
  spec.y = {"training loss (nats/token)", false, AxisFormat::number, {}, {}, {}};
  double last_step = -INFINITY, peak = -INFINITY;
  for (const Model& m : r.models)
    for (auto [step, loss] : m.loss_curve)
      if (finite(step) && finite(loss)) last_step = std::max(last_step, step), peak = std::max(peak, loss);
  // The first steps' loss (about ln(vocab)) would squeeze the differences that matter: the y axis
  // stops a little above the highest loss after the first 10% of training.
  double late_peak = -INFINITY, low = INFINITY;
  for (const Model& m : r.models)
    for (auto [step, loss] : m.loss_curve)
      if (finite(step) && finite(loss) && step >= 0.1 * last_step) {
        late_peak = std::max(late_peak, loss);
        low = std::min(low, loss);
      }
  if (finite(late_peak) && late_peak > low && peak > late_peak + 0.5 * (late_peak - low)) {
    spec.y.max = late_peak + 0.08 * (late_peak - low);
    *zoomed = true;
  }
  for (const Model& m : r.models) {
    PlotSeries ser;
    ser.name = m.preset;
    ser.style = m.style;
    ser.markers = false;
    for (auto [step, loss] : m.loss_curve) ser.points.push_back({step, loss, "", ""});
    spec.series.push_back(ser);
  }
  return render_svg_plot(spec);
}

// ---- table and page ----

// One table column: a value per model, how to show it, and which direction is better.
struct Column {
  std::vector<double> values;
  std::vector<std::string> notes;  // small grey suffix per cell (MFU, MBU), may be empty
  std::string (*show)(double);
  int better;  // +1 higher, -1 lower, 0 no highlight
};

std::string cell(const Column& c, size_t i) {
  double best = kMissing;
  int n = 0;
  for (double v : c.values)
    if (finite(v)) {
      ++n;
      if (!finite(best) || (c.better > 0 ? v > best : v < best)) best = v;
    }
  bool is_best = c.better != 0 && n >= 2 && finite(c.values[i]) && c.values[i] == best;
  std::string s = "<td class=\"num" + std::string(is_best ? " best" : "") + "\">" + html_escape(c.show(c.values[i]));
  if (!c.notes.empty() && !c.notes[i].empty()) s += "<small>" + html_escape(c.notes[i]) + "</small>";
  return s + "</td>";
}

std::string results_table(const Results& r, const std::set<std::string>& front_p,
                          const std::set<std::string>& front_d) {
  std::vector<double> plens = all_lengths(r.models, &Model::prefill), dlens = all_lengths(r.models, &Model::decode);
  double state_len = common_length(r.models, &Model::state_bytes), mem_len = common_length(r.models, &Model::memory);
  auto show_si = [](double v) { return format_si(v); };
  auto show_bytes = [](double v) { return format_bytes(v); };
  std::vector<Column> cols;
  auto add = [&](auto get, std::string (*show)(double), int better) {
    Column c{{}, {}, show, better};
    for (const Model& m : r.models) c.values.push_back(get(m));
    cols.push_back(std::move(c));
  };
  add([](const Model& m) { return m.params; }, +show_si, 0);
  add([](const Model& m) { return m.active_params; }, +show_si, 0);
  add([](const Model& m) { return m.train_tps; }, +show_si, +1);
  add([](const Model& m) { return m.val_loss; }, [](double v) { return fixed(v, 3); }, -1);
  add([](const Model& m) { return m.val_bpb; }, [](double v) { return fixed(v, 3); }, -1);
  add([](const Model& m) { return mean_accuracy(m); }, [](double v) { return format_percent(v); }, +1);
  auto add_lengths = [&](const std::vector<double>& lens, std::vector<Sample> Model::*field) {
    for (double len : lens) {
      Column c{{}, {}, +show_si, +1};
      for (const Model& m : r.models) {
        const Sample* s = at_len(m.*field, len);
        c.values.push_back(s ? s->value : kMissing);
        c.notes.push_back(s && finite(s->util) ? format_percent(s->util) : "");
      }
      cols.push_back(std::move(c));
    }
  };
  add_lengths(plens, &Model::prefill);
  add_lengths(dlens, &Model::decode);
  for (auto [len, field] : {std::pair{state_len, &Model::state_bytes}, std::pair{mem_len, &Model::memory}}) {
    Column c{{}, {}, +show_bytes, -1};
    for (const Model& m : r.models) {
      const Sample* s = finite(len) ? at_len(m.*field, len) : nullptr;
      c.values.push_back(s ? s->value : kMissing);
    }
    cols.push_back(std::move(c));
  }

  std::ostringstream o;
  o << "<div class=\"scroll\"><table class=\"results\"><thead><tr>"
    << "<th rowspan=\"2\">preset</th><th rowspan=\"2\">family</th><th rowspan=\"2\">params</th>"
    << "<th rowspan=\"2\">active params</th>"
    << "<th rowspan=\"2\">train tok/s</th><th rowspan=\"2\">val loss</th><th rowspan=\"2\">val bpb</th>"
    << "<th rowspan=\"2\">MQAR mean acc</th>";
  if (!plens.empty()) o << "<th colspan=\"" << plens.size() << "\">prefill tok/s (MFU) at length</th>";
  if (!dlens.empty()) o << "<th colspan=\"" << dlens.size() << "\">decode tok/s (MBU) at context</th>";
  o << "<th rowspan=\"2\">state bytes" << (finite(state_len) ? " at " + len_str(state_len) : "") << "</th>"
    << "<th rowspan=\"2\">peak memory" << (finite(mem_len) ? " at " + len_str(mem_len) : "") << "</th>"
    << "<th rowspan=\"2\">Pareto front</th></tr><tr>";
  for (double len : plens) o << "<th>" << len_str(len) << "</th>";
  for (double len : dlens) o << "<th>" << len_str(len) << "</th>";
  o << "</tr></thead><tbody>";
  for (size_t i = 0; i < r.models.size(); ++i) {
    const Model& m = r.models[i];
    std::string fronts;
    if (front_p.count(m.preset)) fronts = "prefill";
    if (front_d.count(m.preset)) fronts += fronts.empty() ? "decode" : "<br>decode";
    o << "<tr><td class=\"preset\"><span class=\"swatch\" style=\"background:" << style_colour(m.style)
      << "\"></span>" << html_escape(m.preset) << "</td><td>" << html_escape(m.family.empty() ? "-" : m.family)
      << "</td>";
    for (const Column& c : cols) o << cell(c, i);
    o << "<td>" << (fronts.empty() ? "-" : fronts) << "</td></tr>";
  }
  if (r.models.empty()) o << "<tr><td colspan=\"" << cols.size() + 3 << "\">no models in the results</td></tr>";
  o << "</tbody></table></div>";
  return o.str();
}

std::string meta_block(const Meta& m, size_t n_models) {
  auto card = [](const std::string& k, const std::string& v) {
    return "<div class=\"card\"><div class=\"k\">" + html_escape(k) + "</div><div class=\"v\">" + html_escape(v) +
           "</div></div>";
  };
  std::ostringstream o;
  o << "<div class=\"cards\">" << card("presets", std::to_string(n_models))
    << card("corpus", m.corpus.empty() ? "-" : m.corpus) << card("budget (tokens)", grouped(m.budget_tokens))
    << card("seed", fixed(m.seed, 0)) << card("threads", fixed(m.threads, 0))
    << card("f32 GEMM ceiling", finite(m.f32_gflops) ? fixed(m.f32_gflops, 0) + " GFLOP/s" : "-")
    << card("bf16 GEMM ceiling", finite(m.bf16_gflops) ? fixed(m.bf16_gflops, 0) + " GFLOP/s" : "-")
    << card("triad bandwidth", finite(m.triad_gbs) ? fixed(m.triad_gbs, 1) + " GB/s" : "-")
    << card("read bandwidth", finite(m.read_gbs) ? fixed(m.read_gbs, 1) + " GB/s" : "-") << "</div>";
  return o.str();
}

constexpr const char* kCss = R"(
*{box-sizing:border-box}
body{margin:0;padding:20px 16px 40px;background:#f4f5f7;color:#222;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1380px;margin:0 auto}
h1{font-size:26px;margin:0 0 2px}
h2{font-size:18px;margin:0 0 12px}
.sub{color:#666;margin:0 0 16px}
section{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:16px 18px;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #e2e4e8;border-radius:6px;padding:6px 12px;min-width:118px;background:#fafbfc}
.card .k{color:#666;font-size:12px}
.card .v{font-size:16px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:16px 20px}
figure{margin:0;flex:1 1 640px;max-width:660px}
figure svg{display:block;width:100%;height:auto}
figcaption{color:#666;font-size:12px;margin-top:4px}
table.results{border-collapse:collapse;width:100%;font-size:13px}
.scroll{overflow-x:auto}
.results th,.results td{border-bottom:1px solid #e6e8eb;padding:4px 6px;text-align:left;white-space:nowrap;
  vertical-align:top}
.results th{background:#f0f2f5;font-weight:600;font-size:12px;white-space:normal;vertical-align:bottom}
.results td small{display:block;line-height:1.1}
.results td.num{text-align:right;font-variant-numeric:tabular-nums}
.results td.best{background:#e3f4e1;font-weight:600}
.results small{color:#888}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.note{color:#666;font-size:12px}
)";

}  // namespace

nlohmann::json read_results(const std::string& path) {
  SW_CHECK(std::ifstream(path).good(), "report", path,
           ": cannot open (expected a results JSON file written by `speedwins arena`)");
  return read_json_file(path);
}

std::string render_report_html(const nlohmann::json& results, const std::string& source) {
  Results r = parse_report_data(results, source);
  QualityPlot qp = quality_plot(r, &Model::prefill, "plot-quality-prefill", "prefill", "MFU");
  QualityPlot qd = quality_plot(r, &Model::decode, "plot-quality-decode", "decode", "MBU");
  bool loss_zoomed = false;
  const std::string loss_svg = loss_plot(r, &loss_zoomed);

  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    << "<title>speedwins arena report</title><style>" << kCss << "</style></head><body><main>";
  o << "<h1>speedwins arena</h1><p class=\"sub\">" << r.models.size() << (r.models.size() == 1 ? " preset" : " presets")
    << " trained on the same data and token budget, then measured on this machine"
    << (r.meta.created.empty() ? "" : " &#183; " + html_escape(r.meta.created)) << "</p>";
  o << "<section><h2>Run</h2>" << meta_block(r.meta, r.models.size()) << "</section>";

  auto figure = [](const std::string& svg, const std::string& caption) {
    return "<figure>" + svg + "<figcaption>" + caption + "</figcaption></figure>";
  };
  o << "<section><h2>Quality vs speed</h2><div class=\"grid\">"
    << figure(qp.svg, "Each point is a preset; the dashed line joins the presets no other preset beats on both "
                      "quality and prefill speed.")
    << figure(qd.svg, "The same for single-sequence decoding (tokens generated per second).") << "</div></section>";
  o << "<section><h2>Throughput vs length</h2><div class=\"grid\">"
    << figure(length_plot(r, &Model::prefill, "plot-prefill", "Prefill throughput", "prompt length (tokens)",
                          "prefill tokens/s", AxisFormat::number, " tok/s", "MFU"),
              "Tokens processed per second when reading a prompt of this length; hover a point for its MFU.")
    << figure(length_plot(r, &Model::decode, "plot-decode", "Decode throughput", "context length (tokens)",
                          "decode tokens/s", AxisFormat::number, " tok/s", "MBU"),
              "Tokens generated per second with this much context already cached; hover for MBU.")
    << "</div></section>";
  o << "<section><h2>Memory</h2><div class=\"grid\">"
    << figure(length_plot(r, &Model::state_bytes, "plot-state", "Cache / state size per sequence",
                          "context length (tokens)", "bytes", AxisFormat::bytes, "", ""),
              "KV cache grows with the context; recurrent states stay constant.")
    << figure(length_plot(r, &Model::memory, "plot-memory", "Peak memory", "sequence length (tokens)", "peak bytes",
                          AxisFormat::bytes, "", ""),
              "Peak bytes held by the allocator while processing a sequence of this length.")
    << "</div></section>";
  o << "<section><h2>Recall and training</h2><div class=\"grid\">"
    << figure(mqar_plot(r), "Multi-query associative recall, one point per preset and setting (key-value pairs, "
                            "length); state size at the MQAR length, interpolated linearly from the measured "
                            "contexts where not measured exactly.")
    << figure(loss_svg, std::string("Training loss on the shared corpus and budget") +
                            (loss_zoomed ? "; the y axis starts after the first 10% of steps." : "."))
    << "</div></section>";
  o << "<section><h2>Results</h2>" << results_table(r, qp.front, qd.front)
    << "<p class=\"note\">Best value per column highlighted. bpb: bits per byte of held-out text. MFU: achieved "
       "FLOP/s over the measured GEMM ceiling; MBU: bytes read per token times tokens/s over the measured read "
       "bandwidth. \"-\": not measured.</p></section>";
  o << "<p class=\"note\">Generated by speedwins. Self-contained: no scripts, no network.</p></main></body></html>\n";
  return o.str();
}

void write_report(const std::string& path, const nlohmann::json& results, const std::string& source) {
  const std::string html = render_report_html(results, source);  // fails before touching the file
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SW_CHECK(fd >= 0, "report", path, ": cannot create ", tmp, " (", std::strerror(errno),
           "); expected a writable folder");
  size_t done = 0;
  errno = 0;
  while (done < html.size()) {
    ssize_t n = ::write(fd, html.data() + done, html.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  int err = done == html.size() ? 0 : (errno ? errno : EIO);
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (!err && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw Error(str_cat("[report] ", path, ": write failed (", std::strerror(err),
                        "); the previous file is unchanged"));
  }
}

}  // namespace sw::bench
