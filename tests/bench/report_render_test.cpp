// Renders the arena report (from the fixture) in headless Chromium, takes a screenshot and fails on
// a blank page or on any console message (the page has no JavaScript, so any is an error). A
// negative control (a blank page that throws) shows both detectors can fail. The PNG is decoded by
// a small python3 script (stdlib zlib only). Outputs stay in $SW_OUT_DIR, else ./report_render
// under the working (build) directory, for a person to look at.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/report.h"
#include "bench/svg_plot.h"
#include "process.h"
#include "testing.h"

namespace sw::bench {
namespace {

namespace fs = std::filesystem;

// Prints "ok WIDTH HEIGHT COLOURS NONBACKGROUND HITS..." for an 8-bit RGB(A) PNG: distinct colours
// and the share of pixels not in the most common colour, over every 4th row and 2nd column, and
// how many sampled pixels have each colour given as hex on the command line.
constexpr const char* kPngStats = R"PY(
import sys, zlib, struct
from itertools import accumulate
from operator import add
def main(path, wanted):
    d = open(path, 'rb').read()
    if d[:8] != b'\x89PNG\r\n\x1a\n': return 'error not a PNG file'
    i, idat, hdr = 8, [], None
    while i + 8 <= len(d):
        n, = struct.unpack('>I', d[i:i+4]); t = d[i+4:i+8]
        if t == b'IHDR': hdr = struct.unpack('>IIBBBBB', d[i+8:i+21])
        elif t == b'IDAT': idat.append(d[i+8:i+8+n])
        i += 12 + n
    if hdr is None: return 'error no IHDR chunk'
    w, h, depth, ctype, _, _, interlace = hdr
    ch = {2: 3, 6: 4}.get(ctype)
    if depth != 8 or ch is None or interlace: return 'error unsupported PNG (depth %d, colour type %d)' % (depth, ctype)
    raw = zlib.decompress(b''.join(idat)); stride = w * ch
    prev = bytes(stride); counts = {}
    for y in range(h):
        f = raw[y*(stride+1)]; row = raw[y*(stride+1)+1:(y+1)*(stride+1)]
        if f == 0: cur = row
        elif f == 1:
            cur = bytearray(stride)
            for c in range(ch): cur[c::ch] = bytes(v & 255 for v in accumulate(row[c::ch], add))
            cur = bytes(cur)
        elif f == 2: cur = bytes((a + b) & 255 for a, b in zip(row, prev))
        else:
            cur = bytearray(stride)
            for x in range(stride):
                a = cur[x-ch] if x >= ch else 0; b = prev[x]; c = prev[x-ch] if x >= ch else 0
                if f == 3: p = (a + b) >> 1
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2*c)
                    p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (row[x] + p) & 255
            cur = bytes(cur)
        if y % 4 == 0:
            for x in range(0, stride, ch * 2):
                k = cur[x:x+3]; counts[k] = counts.get(k, 0) + 1
        prev = cur
    total = sum(counts.values())
    hits = [counts.get(bytes.fromhex(c), 0) for c in wanted]
    return 'ok %d %d %d %.5f %s' % (w, h, len(counts), 1 - max(counts.values()) / total, ' '.join(map(str, hits)))
try: print(main(sys.argv[1], [c.lstrip('#') for c in sys.argv[2:]]))
except Exception as e: print('error', e)
)PY";

fs::path out_dir() {
  const char* env = std::getenv("SW_OUT_DIR");
  fs::path dir = env && *env ? fs::path(env) / "report_render" : fs::current_path() / "report_render";
  fs::create_directories(dir);
  return fs::absolute(dir);
}

std::string fixture_path() {
  if (const char* repo = std::getenv("SW_REPO")) return std::string(repo) + "/tests/bench/fixtures/arena_results.json";
  return (fs::path(__FILE__).parent_path() / "fixtures" / "arena_results.json").string();
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a shell command; returns its stdout and stderr together, and the exit status.
std::string run(const std::string& cmd, int* status) {
  sw::testing::ProcessRun r = sw::testing::run_shell(cmd);
  *status = r.signaled ? -1 : r.status;
  return r.output;
}

std::string find_program(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    int status = 0;
    std::string path = run(std::string("command -v ") + name, &status);
    while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
    if (status == 0 && !path.empty()) return path;
  }
  return "";
}

std::string file_url(const fs::path& p) {
  std::string url = "file://";
  for (unsigned char c : p.string()) {
    if (std::isalnum(c) || std::strchr("/-._~", c)) {
      url += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      url += b;
    }
  }
  return url;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Render {
  int status = -1;
  std::string log;
};

// One screenshot with a fresh, empty profile; Chromium's stderr (with console messages) is kept.
Render render_page(const std::string& chromium, const fs::path& html, const fs::path& png, const fs::path& log) {
  fs::path profile = png.parent_path() / (png.stem().string() + "-profile");
  fs::remove_all(profile);
  fs::create_directories(profile);
  fs::remove(png);
  std::string cmd = "timeout 120 " + shell_quote(chromium) +
                    " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                    " --disable-background-networking --disable-component-update --disable-sync"
                    " --disable-dev-shm-usage --hide-scrollbars --user-data-dir=" + shell_quote(profile.string()) +
                    " --screenshot=" + shell_quote(png.string()) +
                    " --window-size=1400,3000 --enable-logging=stderr --v=0 " + shell_quote(file_url(html)) + " > " +
                    shell_quote(log.string()) + " 2>&1";
  Render r;
  run(cmd, &r.status);
  r.log = read_file(log);
  fs::remove_all(profile);
  return r;
}

// Console output is logged as "...:INFO:CONSOLE:<line>] "<message>", source: ..."; uncaught
// exceptions read "Uncaught ...". The page has no scripts, so any such line is a failure.
std::vector<std::string> console_lines(const std::string& log) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find("CONSOLE") != std::string::npos || line.find("Uncaught") != std::string::npos) out.push_back(line);
  return out;
}

struct PngStats {
  bool ok = false;
  std::string error;
  int width = 0, height = 0, colours = 0;
  double nonbackground = 0;
  std::vector<long> hits;
};

PngStats png_stats(const std::string& python, const fs::path& png, const std::vector<std::string>& colours) {
  fs::path script = png.parent_path() / "png_stats.py";
  std::ofstream(script) << kPngStats;
  std::string cmd = shell_quote(python) + " " + shell_quote(script.string()) + " " + shell_quote(png.string());
  for (const std::string& c : colours) cmd += " " + shell_quote(c);
  int status = 0;
  std::string out = run(cmd, &status);
  PngStats s;
  std::istringstream in(out);
  std::string word;
  in >> word;
  if (word != "ok") {
    s.error = out;
    return s;
  }
  in >> s.width >> s.height >> s.colours >> s.nonbackground;
  for (long h; in >> h;) s.hits.push_back(h);
  s.ok = s.hits.size() == colours.size();
  if (!s.ok) s.error = "unexpected output: " + out;
  return s;
}

// A page counts as drawn when it has many colours (anti-aliased text, ten series colours) and a
// real share of non-background pixels. The report measures about 3000 colours and 20%; a blank
// page has 1 colour and 0%, so these bounds are far from both.
constexpr int kMinColours = 64;
constexpr double kMinNonBackground = 0.05;

class ReportRender : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = find_program({"chromium", "chromium-browser", "google-chrome"});
    python_ = find_program({"python3"});
    ASSERT_FALSE(chromium_.empty()) << "headless Chromium is needed to render the report: install the Debian "
                                       "package `chromium` (scripts/setup.sh installs it)";
    ASSERT_FALSE(python_.empty()) << "python3 is needed to decode the screenshot";
    dir_ = out_dir();
  }
  std::string chromium_, python_;
  fs::path dir_;
};

TEST_F(ReportRender, FixtureReportDrawsWithoutConsoleErrors) {
  nlohmann::json results = read_results(fixture_path());
  fs::path html = dir_ / "report.html", png = dir_ / "report.png", log = dir_ / "chromium.log";
  write_report(html.string(), results, fixture_path());
  Render r = render_page(chromium_, html, png, log);
  ASSERT_EQ(r.status, 0) << "chromium failed; log " << log << ":\n" << r.log.substr(0, 4000);
  ASSERT_TRUE(fs::exists(png) && fs::file_size(png) > 0) << "no screenshot; log:\n" << r.log.substr(0, 4000);
  std::cout << "report screenshot: " << png.string() << "\n";

  std::vector<std::string> console = console_lines(r.log);
  EXPECT_TRUE(console.empty()) << console.size() << " console lines, first: " << console.front();

  std::vector<std::string> colours;
  for (size_t i = 0; i < results["models"].size() && i < 10; ++i) colours.push_back(style_colour(static_cast<int>(i)));
  PngStats s = png_stats(python_, png, colours);
  ASSERT_TRUE(s.ok) << s.error;
  EXPECT_EQ(s.width, 1400);
  EXPECT_EQ(s.height, 3000);
  EXPECT_GE(s.colours, kMinColours) << "the page looks blank";
  EXPECT_GE(s.nonbackground, kMinNonBackground) << "the page looks blank";
  // Each preset's series colour is drawn (markers, lines, swatches): the SVGs rendered. Each gets
  // hundreds of exact-colour hits on the sampling grid; 20 leaves room for anti-aliased edges.
  for (size_t i = 0; i < colours.size(); ++i) EXPECT_GE(s.hits[i], 20) << "series colour " << colours[i] << " not seen";
}

TEST_F(ReportRender, NegativeControlBlankPageWithScriptErrorIsCaught) {
  fs::path html = dir_ / "negative_control.html", png = dir_ / "negative_control.png",
           log = dir_ / "negative_control.log";
  std::ofstream(html) << "<!DOCTYPE html><html><body style=\"background:#fff\">"
                         "<script>throw new Error('sw-negative-control')</script></body></html>\n";
  Render r = render_page(chromium_, html, png, log);
  ASSERT_EQ(r.status, 0) << "chromium failed; log:\n" << r.log.substr(0, 4000);
  std::vector<std::string> console = console_lines(r.log);
  ASSERT_FALSE(console.empty()) << "the thrown error was not detected in the log:\n" << r.log.substr(0, 4000);
  EXPECT_NE(console.front().find("sw-negative-control"), std::string::npos) << console.front();
  PngStats s = png_stats(python_, png, {"#ffffff"});
  ASSERT_TRUE(s.ok) << s.error;
  EXPECT_LT(s.colours, kMinColours);
  EXPECT_LT(s.nonbackground, kMinNonBackground);
}

}  // namespace
}  // namespace sw::bench
