// SVG charts for the arena report (see svg_plot.h): axis fitting and ticks, markers, lines,
// label placement and the legend, written as plain SVG elements with no scripts.
#include "bench/svg_plot.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace sw::bench {
namespace {

// matplotlib's tab10: distinct hues with enough contrast on white.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kColours = 10, kMarkers = 6;
constexpr double kMarkerR = 4.5;
constexpr double kCharW = 6.6;  // rough width of one 12px sans-serif character, for layout only
constexpr int kMarginL = 76, kMarginR = 24, kMarginT = 40, kMarginB = 54;
constexpr double kInset = 10;  // data never sits on the frame: ends map this many px inside it
constexpr int kLegendRow = 20;

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string sig_digits(double v, int sig) {
  char b[40];
  std::snprintf(b, sizeof b, "%.*g", sig, v);
  return b;
}

// `sig` significant digits, keeping trailing zeros so a table column reads evenly ("10.0", "9.50").
std::string sig_fixed(double v, int sig) {
  if (v == 0) return "0";
  int mag = static_cast<int>(std::floor(std::log10(std::fabs(v))));
  int decimals = std::max(0, sig - 1 - mag);
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  // Rounding can add a digit (9.996 -> "10.00"): redo with one decimal fewer.
  if (decimals > 0 && std::fabs(std::atof(b)) >= std::pow(10.0, mag + 1))
    std::snprintf(b, sizeof b, "%.*f", decimals - 1, v);
  return b;
}

// Marker shape index: shifts by one every colour cycle so (colour, shape) pairs repeat only after 60.
int marker_of(int style) { return (style + style / kColours) % kMarkers; }

std::string marker_svg(int shape, double cx, double cy, const std::string& colour, const std::string& title) {
  const double r = kMarkerR;
  std::string attrs = " fill=\"" + colour + "\" stroke=\"#fff\" stroke-width=\"1\"";
  std::string body = title.empty() ? "/>" : "><title>" + html_escape(title) + "</title></";
  auto poly = [&](std::initializer_list<std::pair<double, double>> pts) {
    std::string d = "M";
    bool first = true;
    for (auto [dx, dy] : pts) {
      d += (first ? "" : " L") + num(cx + dx) + "," + num(cy + dy);
      first = false;
    }
    return "<path d=\"" + d + " Z\"" + attrs + (title.empty() ? "/>" : body + "path>");
  };
  switch (shape) {
    case 0:
      return "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"" + num(r) + "\"" + attrs +
             (title.empty() ? "/>" : body + "circle>");
    case 1:
      return poly({{-r * .9, -r * .9}, {r * .9, -r * .9}, {r * .9, r * .9}, {-r * .9, r * .9}});
    case 2:
      return poly({{0, -r * 1.25}, {r * 1.1, r * .8}, {-r * 1.1, r * .8}});
    case 3:
      return poly({{0, -r * 1.3}, {r * 1.1, 0}, {0, r * 1.3}, {-r * 1.1, 0}});
    case 4:
      return poly({{0, r * 1.25}, {r * 1.1, -r * .8}, {-r * 1.1, -r * .8}});
    default: {
      const double a = r * 1.2, w = r * .45;  // a plus sign: arm length and half-width
      return poly({{-w, -a}, {w, -a}, {w, -w}, {a, -w}, {a, w}, {w, w}, {w, a}, {-w, a}, {-w, w}, {-a, w},
                   {-a, -w}, {-w, -w}});
    }
  }
}

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Maps data values to pixels along one axis; log axes work in log10 space.
struct Scale {
  double lo = 0, hi = 1;  // domain (log10 when log)
  double p0 = 0, p1 = 1;  // pixel ends
  bool log = false;
  double to_px(double v) const {
    double t = log ? std::log10(v) : v;
    return p0 + (t - lo) / (hi - lo) * (p1 - p0);
  }
  bool contains(double v) const {
    double t = log ? std::log10(v) : v;
    double eps = 1e-9 * std::max(1.0, std::fabs(hi - lo));
    return t >= lo - eps && t <= hi + eps;
  }
};

bool drawable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

double nice_step(double raw) {
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  double m = raw / p;
  return (m <= 1.4 ? 1 : m <= 2.8 ? 2 : m <= 7 ? 5 : 10) * p;  // 4 to 8 ticks per axis
}

// Fits the domain to the data (or the fixed ends) with a little padding.
Scale fit_scale(const PlotAxis& ax, const std::vector<double>& vals) {
  Scale s;
  s.log = ax.log;
  auto tr = [&](double v) { return ax.log ? std::log10(v) : v; };
  double lo = INFINITY, hi = -INFINITY;
  for (double v : vals) lo = std::min(lo, tr(v)), hi = std::max(hi, tr(v));
  if (vals.empty()) lo = 0, hi = 1;
  if (hi == lo) {
    double w = ax.log ? 0.3 : std::max(1e-9, std::fabs(lo) * 0.1);
    if (!ax.log && lo == 0) w = 1;
    lo -= w, hi += w;
  } else {
    double pad = 0.04 * (hi - lo);
    lo -= pad, hi += pad;
  }
  if (ax.min && drawable(*ax.min, ax.log)) lo = tr(*ax.min);
  if (ax.max && drawable(*ax.max, ax.log)) hi = tr(*ax.max);
  if (!(hi > lo)) hi = lo + 1;
  s.lo = lo, s.hi = hi;
  return s;
}

std::vector<double> auto_ticks(const Scale& s, AxisFormat fmt) {
  std::vector<double> t;
  if (!s.log) {
    double step = nice_step((s.hi - s.lo) / 5);
    for (double v = std::ceil(s.lo / step) * step; v <= s.hi + 1e-9 * step; v += step)
      t.push_back(std::fabs(v) < 1e-12 * step ? 0 : v);
    return t;
  }
  double span = s.hi - s.lo;
  if (fmt == AxisFormat::bytes) {  // powers of two read as whole units: 1 KiB, 32 KiB, 1 MiB
    double l2lo = s.lo / std::log10(2.0), l2hi = s.hi / std::log10(2.0);
    int step = 1;
    for (int c : {1, 2, 5, 10, 20}) {
      step = c;
      if ((l2hi - l2lo) / c <= 7) break;
    }
    for (int e = static_cast<int>(std::ceil(l2lo / step)) * step; e <= l2hi; e += step) t.push_back(std::ldexp(1.0, e));
    if (step == 1 && t.size() < 4) {  // under 4 powers of two: add 1.5x ones (48, 96, 192 MiB)
      for (int e = static_cast<int>(std::floor(l2lo)); e <= l2hi; ++e)
        if (s.contains(1.5 * std::ldexp(1.0, e))) t.push_back(1.5 * std::ldexp(1.0, e));
      std::sort(t.begin(), t.end());
    }
    return t;
  }
  std::vector<double> mant = span > 2.5 ? std::vector<double>{1} : span > 1 ? std::vector<double>{1, 2, 5}
                                                                            : std::vector<double>{1, 2, 3, 5, 7};
  int every = span > 7 ? static_cast<int>(std::ceil(span / 7)) : 1;
  for (int d = static_cast<int>(std::floor(s.lo)); d <= static_cast<int>(std::ceil(s.hi)); ++d) {
    if (d % every) continue;
    for (double m : mant) {
      double v = m * std::pow(10.0, d);
      if (s.contains(v)) t.push_back(v);
    }
  }
  if (t.size() < 2) {  // under a decade between two mantissas: label the ends instead
    t = {std::pow(10.0, s.lo + 0.05 * span), std::pow(10.0, s.hi - 0.05 * span)};
  }
  return t;
}

// "2.50k" -> "2.5k", "10.0" -> "10": ticks read better without padding zeros.
std::string trim_zeros(const std::string& s) {
  size_t dot = s.find('.');
  if (dot == std::string::npos) return s;
  size_t end = dot + 1;
  while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
  size_t last = end;
  while (last > dot + 1 && s[last - 1] == '0') --last;
  if (last == dot + 1) last = dot;
  return s.substr(0, last) + s.substr(end);
}

// Tick labels with as many digits as it takes for neighbours to differ.
std::vector<std::string> tick_labels(const std::vector<double>& ticks, AxisFormat fmt) {
  std::vector<std::string> out;
  for (int sig = 3; sig <= 6; ++sig) {
    out.clear();
    for (double v : ticks)
      out.push_back(fmt == AxisFormat::number ? trim_zeros(format_si(v, sig)) : format_value(v, fmt));
    bool distinct = true;
    for (size_t i = 1; i < out.size(); ++i) distinct = distinct && out[i] != out[i - 1];
    if (distinct || fmt != AxisFormat::number) break;
  }
  return out;
}

std::string safe_id(const std::string& id) {
  std::string s;
  for (char c : id)
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') s += c;
  return s.empty() ? "plot" : s;
}

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string truncate_text(std::string_view s, size_t max_chars) {
  size_t chars = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;  // UTF-8 continuation byte
    if (chars == max_chars) break;
    ++chars;
  }
  if (i >= s.size()) return std::string(s);
  // Cut one character earlier to make room for the ellipsis.
  size_t j = i;
  do --j;
  while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80);
  return std::string(s.substr(0, j)) + "\xE2\x80\xA6";
}

std::string format_si(double v, int sig) {
  if (!std::isfinite(v)) return "-";
  double a = std::fabs(v);
  const char* suffix = "";
  double d = 1;
  if (a >= 999.5e9) suffix = "T", d = 1e12;
  else if (a >= 999.5e6) suffix = "G", d = 1e9;
  else if (a >= 999.5e3) suffix = "M", d = 1e6;
  else if (a >= 999.5) suffix = "k", d = 1e3;
  return sig_fixed(v / d, sig) + suffix;
}

std::string format_bytes(double v) {
  if (!std::isfinite(v)) return "-";
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double a = v;
  while (std::fabs(a) >= 1023.5 && u < 4) a /= 1024, ++u;
  return sig_digits(a, 3) + " " + kUnits[u];
}

std::string format_percent(double v) {
  if (!std::isfinite(v)) return "-";
  return sig_digits(v * 100, std::fabs(v) >= 0.995 ? 3 : 2) + "%";
}

std::string format_value(double v, AxisFormat f) {
  switch (f) {
    case AxisFormat::bytes: return format_bytes(v);
    case AxisFormat::percent: return format_percent(v);
    case AxisFormat::integer:
      if (std::isfinite(v) && std::fabs(v) < 1e7) return sig_digits(std::round(v), 8);
      return format_si(v);
    default: return format_si(v);
  }
}

std::string style_colour(int style) { return kPalette[((style % kColours) + kColours) % kColours]; }

std::string render_svg_plot(const PlotSpec& spec) {
  const int W = spec.width, H = spec.height;
  const double fx0 = kMarginL, fx1 = W - kMarginR, fy0 = kMarginT, fy1 = H - kMarginB;

  std::vector<double> xs, ys;
  int skipped = 0, drawn = 0;
  for (const PlotSeries& s : spec.series)
    for (const PlotPoint& p : s.points) {
      if (drawable(p.x, spec.x.log) && drawable(p.y, spec.y.log)) {
        xs.push_back(p.x), ys.push_back(p.y), ++drawn;
      } else {
        ++skipped;
      }
    }
  Scale sx = fit_scale(spec.x, xs), sy = fit_scale(spec.y, ys);
  sx.p0 = fx0 + kInset, sx.p1 = fx1 - kInset;
  sy.p0 = fy1 - kInset, sy.p1 = fy0 + kInset;
  auto visible = [&](const PlotPoint& p) {
    return drawable(p.x, spec.x.log) && drawable(p.y, spec.y.log) && sx.contains(p.x) && sy.contains(p.y);
  };
  // A line alone just leaves the frame (it is clipped); a marker outside a fixed range is counted.
  for (const PlotSeries& s : spec.series)
    for (const PlotPoint& p : s.points)
      if (s.markers && drawable(p.x, spec.x.log) && drawable(p.y, spec.y.log) && !visible(p)) ++skipped;

  // Legend layout: items flow left to right under the x-axis label and wrap.
  struct Item { const PlotSeries* s; double x, y; std::string text; };
  std::vector<Item> legend;
  double lx = fx0, ly = H + 2;
  for (const PlotSeries& s : spec.series) {
    if (!s.in_legend) continue;
    std::string text = truncate_text(s.name, 32);
    double w = 30 + kCharW * static_cast<double>(text.size()) + 18;
    if (lx + w > W - 8 && lx > fx0) lx = fx0, ly += kLegendRow;
    legend.push_back({&s, lx, ly, text});
    lx += w;
  }
  double total_h = legend.empty() ? H : ly + kLegendRow;
  if (skipped) total_h += 18;
  total_h += 6;

  const std::string id = safe_id(spec.id);
  std::ostringstream o;
  o << "<svg id=\"" << id << "\" class=\"plot\" viewBox=\"0 0 " << W << " " << num(total_h) << "\" width=\"" << W
    << "\" height=\"" << num(total_h) << "\" role=\"img\" aria-label=\"" << html_escape(spec.title)
    << "\" font-family=\"system-ui, sans-serif\" font-size=\"12\">";
  o << "<defs><clipPath id=\"" << id << "-clip\"><rect x=\"" << num(fx0) << "\" y=\"" << num(fy0) << "\" width=\""
    << num(fx1 - fx0) << "\" height=\"" << num(fy1 - fy0) << "\"/></clipPath></defs>";
  o << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << num(total_h) << "\" fill=\"#fff\"/>";
  o << "<text x=\"" << num(fx0) << "\" y=\"24\" font-size=\"15\" font-weight=\"600\" fill=\"#222\">"
    << html_escape(spec.title) << "</text>";

  // Grid, ticks and tick labels.
  auto ticks_of = [&](const PlotAxis& ax, const Scale& s) {
    std::vector<double> t;
    if (!ax.ticks.empty()) {
      for (double v : ax.ticks)
        if (drawable(v, ax.log) && s.contains(v)) t.push_back(v);
    }
    if (t.empty()) t = auto_ticks(s, ax.format);
    return t;
  };
  if (drawn) {
    std::vector<double> tx = ticks_of(spec.x, sx), ty = ticks_of(spec.y, sy);
    std::vector<std::string> lx_text = tick_labels(tx, spec.x.format), ly_text = tick_labels(ty, spec.y.format);
    o << "<g stroke=\"#e6e6e6\" stroke-width=\"1\">";
    for (double v : tx) {
      double p = sx.to_px(v);
      if (p < fx0 || p > fx1) continue;
      o << "<line x1=\"" << num(p) << "\" y1=\"" << num(fy0) << "\" x2=\"" << num(p) << "\" y2=\"" << num(fy1)
        << "\"/>";
    }
    for (double v : ty) {
      double p = sy.to_px(v);
      if (p < fy0 || p > fy1) continue;
      o << "<line x1=\"" << num(fx0) << "\" y1=\"" << num(p) << "\" x2=\"" << num(fx1) << "\" y2=\"" << num(p)
        << "\"/>";
    }
    o << "</g><g fill=\"#555\" font-size=\"11\">";
    double last_right = -1e9;  // skip x labels that would overlap the previous one
    for (size_t i = 0; i < tx.size(); ++i) {
      double p = sx.to_px(tx[i]), w = kCharW * 0.92 * static_cast<double>(lx_text[i].size());
      if (p < fx0 - 1 || p > fx1 + 1 || p - w / 2 < last_right + 4) continue;
      last_right = p + w / 2;
      o << "<text x=\"" << num(p) << "\" y=\"" << num(fy1 + 17) << "\" text-anchor=\"middle\">"
        << html_escape(lx_text[i]) << "</text>";
    }
    double last_top = 1e9;
    for (size_t i = 0; i < ty.size(); ++i) {
      double p = sy.to_px(ty[i]);
      if (p < fy0 - 1 || p > fy1 + 1 || p + 6 > last_top - 4) continue;
      last_top = p - 6;
      o << "<text x=\"" << num(fx0 - 7) << "\" y=\"" << num(p + 4) << "\" text-anchor=\"end\">"
        << html_escape(ly_text[i]) << "</text>";
    }
    o << "</g>";
  }
  o << "<rect x=\"" << num(fx0) << "\" y=\"" << num(fy0) << "\" width=\"" << num(fx1 - fx0) << "\" height=\""
    << num(fy1 - fy0) << "\" fill=\"none\" stroke=\"#999\" stroke-width=\"1\"/>";
  o << "<text x=\"" << num((fx0 + fx1) / 2) << "\" y=\"" << num(fy1 + 40) << "\" text-anchor=\"middle\" fill=\"#333\">"
    << html_escape(spec.x.label) << (spec.x.log ? " (log)" : "") << "</text>";
  o << "<text transform=\"translate(18," << num((fy0 + fy1) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\" fill=\"#333\">"
    << html_escape(spec.y.label) << (spec.y.log ? " (log)" : "") << "</text>";
  if (!drawn)
    o << "<text x=\"" << num((fx0 + fx1) / 2) << "\" y=\"" << num((fy0 + fy1) / 2)
      << "\" text-anchor=\"middle\" fill=\"#999\" font-size=\"14\">no data</text>";

  // Lines first (under every marker), clipped to the frame.
  auto colour_of = [](const PlotSeries& s) { return s.colour.empty() ? style_colour(s.style) : s.colour; };
  o << "<g clip-path=\"url(#" << id << "-clip)\" fill=\"none\">";
  for (const PlotSeries& s : spec.series) {
    if (!s.line) continue;
    std::vector<const PlotPoint*> pts;
    for (const PlotPoint& p : s.points)
      if (drawable(p.x, spec.x.log) && drawable(p.y, spec.y.log)) pts.push_back(&p);
    if (pts.size() < 2) continue;
    std::stable_sort(pts.begin(), pts.end(), [](const PlotPoint* a, const PlotPoint* b) { return a->x < b->x; });
    o << "<polyline stroke=\"" << colour_of(s) << "\" stroke-width=\"" << (s.dashed ? "1.5" : "2") << "\""
      << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << " stroke-linejoin=\"round\" points=\"";
    for (const PlotPoint* p : pts) o << num(sx.to_px(p->x)) << "," << num(sy.to_px(p->y)) << " ";
    o << "\"/>";
  }
  o << "</g>";

  // Markers, with a hover tooltip each; points outside a fixed axis range are counted as skipped.
  std::vector<Box> obstacles;
  for (const PlotSeries& s : spec.series) {
    for (const PlotPoint& p : s.points) {
      if (!visible(p)) continue;
      double cx = sx.to_px(p.x), cy = sy.to_px(p.y);
      obstacles.push_back({cx - kMarkerR, cy - kMarkerR, cx + kMarkerR, cy + kMarkerR});
      if (!s.markers) continue;
      std::string tip = p.tooltip.empty() ? s.name + ": " + format_value(p.x, spec.x.format) + ", " +
                                                format_value(p.y, spec.y.format)
                                          : p.tooltip;
      o << marker_svg(marker_of(s.style), cx, cy, colour_of(s), tip);
    }
  }

  // Point labels: try a few spots around the marker, keep the first that collides with nothing.
  o << "<g font-size=\"11\" fill=\"#222\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">";
  std::vector<Box> placed;
  for (const PlotSeries& s : spec.series) {
    if (!s.show_labels) continue;
    for (const PlotPoint& p : s.points) {
      if (p.label.empty() || !visible(p)) continue;
      std::string text = truncate_text(p.label, 28);
      double cx = sx.to_px(p.x), cy = sy.to_px(p.y), w = 6.0 * static_cast<double>(text.size()), h = 12;
      struct Spot { double dx, dy; const char* anchor; };
      const Spot spots[] = {{8, -6, "start"}, {8, 14, "start"}, {-8, -6, "end"}, {-8, 14, "end"},
                            {0, -11, "middle"}, {0, 21, "middle"}};
      int chosen = -1;
      Box box{};
      for (int k = 0; k < 6 && chosen < 0; ++k) {
        const Spot& sp = spots[k];
        double x0 = sp.anchor[0] == 's' ? cx + sp.dx : sp.anchor[0] == 'e' ? cx + sp.dx - w : cx - w / 2;
        Box b{x0, cy + sp.dy - h + 2, x0 + w, cy + sp.dy + 2};
        bool ok = b.x0 >= fx0 + 2 && b.x1 <= fx1 - 2 && b.y0 >= fy0 + 2 && b.y1 <= fy1 - 2;
        for (const Box& q : placed) ok = ok && !b.overlaps(q);
        for (const Box& q : obstacles) ok = ok && !b.overlaps(q);
        if (ok) chosen = k, box = b;
      }
      if (chosen < 0) continue;  // nowhere free: the legend and tooltip still name the point
      placed.push_back(box);
      const Spot& sp = spots[chosen];
      o << "<text x=\"" << num(cx + sp.dx) << "\" y=\"" << num(cy + sp.dy) << "\" text-anchor=\"" << sp.anchor
        << "\">" << html_escape(text) << "</text>";
    }
  }
  o << "</g>";

  // Legend.
  for (const Item& it : legend) {
    const PlotSeries& s = *it.s;
    double my = it.y + kLegendRow / 2.0;
    o << "<g>";
    if (s.line)
      o << "<line x1=\"" << num(it.x) << "\" y1=\"" << num(my) << "\" x2=\"" << num(it.x + 24) << "\" y2=\""
        << num(my) << "\" stroke=\"" << colour_of(s) << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>";
    if (s.markers) o << marker_svg(marker_of(s.style), it.x + 12, my, colour_of(s), "");
    o << "<text x=\"" << num(it.x + 30) << "\" y=\"" << num(my + 4) << "\" fill=\"#333\">" << html_escape(it.text)
      << "</text></g>";
  }
  if (skipped)
    o << "<text x=\"" << num(fx0) << "\" y=\"" << num(total_h - 10) << "\" fill=\"#888\" font-size=\"11\">"
      << skipped << (skipped == 1 ? " point" : " points")
      << " not drawn (missing, non-finite, outside the fixed range, or &#8804; 0 on a log axis)</text>";
  o << "</svg>";
  return o.str();
}

}  // namespace sw::bench
