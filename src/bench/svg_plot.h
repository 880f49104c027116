// A small SVG plotting helper for the arena report: one scatter/line chart per call, returned as an
// inline <svg> element (no xmlns, no scripts, no external references) for an HTML page.
//
// Axes are linear or log with "nice" ticks; each series has a colour and marker from a cycle that
// stays distinct for 60 series; a legend flows under the plot; points can carry labels (placed to
// avoid each other) and hover tooltips (<title>). Non-finite points, and points <= 0 on a log axis,
// are skipped and counted in a note under the plot rather than drawn somewhere wrong.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sw::bench {

// Text for HTML element content and attribute values: & < > " ' are replaced by entities.
std::string html_escape(std::string_view s);
// At most max_chars characters (UTF-8 aware), with "…" when cut.
std::string truncate_text(std::string_view s, size_t max_chars);

// Compact numbers for ticks and tables: `sig` significant digits with k/M/G suffixes ("9.5k").
std::string format_si(double v, int sig = 3);
// Byte counts with binary units ("512 B", "4 KiB", "1.5 MiB").
std::string format_bytes(double v);
// A fraction as a percentage ("93%", "7.5%").
std::string format_percent(double v);

enum class AxisFormat { number, integer, bytes, percent };
std::string format_value(double v, AxisFormat f);

struct PlotAxis {
  std::string label;
  bool log = false;
  AxisFormat format = AxisFormat::number;
  std::optional<double> min, max;  // fixed ends; otherwise fitted to the data
  std::vector<double> ticks;       // explicit ticks (e.g. the measured lengths); otherwise automatic
};

struct PlotPoint {
  double x = 0, y = 0;
  std::string label;    // drawn beside the point when the series shows labels
  std::string tooltip;  // hover text; defaults to "series: x, y"
};

struct PlotSeries {
  std::string name;
  std::vector<PlotPoint> points;
  int style = 0;             // index into the colour x marker cycle (same index, same look everywhere)
  bool line = true;          // join points in order of x
  bool markers = true;
  bool dashed = false;
  bool show_labels = false;
  bool in_legend = true;
  std::string colour;  // overrides the cycle's colour (e.g. the grey Pareto front)
};

struct PlotSpec {
  std::string id;  // unique in the page; becomes the <svg> id (characters outside [A-Za-z0-9_-] dropped)
  std::string title;
  PlotAxis x, y;
  std::vector<PlotSeries> series;
  int width = 660, height = 400;  // the plot frame; the legend and note add rows below
};

// The colour of a style index ("#1f77b4", ...), for the table's swatches.
std::string style_colour(int style);

// Renders the chart; an empty chart (no drawable point) gets its frame and a "no data" message.
std::string render_svg_plot(const PlotSpec& spec);

}  // namespace sw::bench
