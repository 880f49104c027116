#!/usr/bin/env bash
# Renders an arena report (HTML) to a PNG in headless Chromium, with the flags that
# tests/bench/report_render_test uses, and fails when Chromium logs a console message (the report
# has no JavaScript, so any is an error). For looking at a real run's report by eye.
# Usage: scripts/render_check.sh REPORT.html [OUT.png]   (SW_RENDER_HEIGHT=3000 sets the page height)
set -euo pipefail
html="${1:?usage: scripts/render_check.sh REPORT.html [OUT.png]}"
png="${2:-${html%.html}.png}"
if [ ! -f "$html" ]; then
  echo "render_check: $html: no such file (expected a report written by speedwins arena)" >&2
  exit 2
fi
chromium="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$chromium" ]; then
  echo "render_check: chromium not found: install the Debian package chromium (scripts/setup.sh does)" >&2
  exit 2
fi
abs_html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
abs_png="$(cd "$(dirname "$png")" && pwd)/$(basename "$png")"
profile="$(mktemp -d)"
log="$(mktemp)"
trap 'rm -rf "$profile" "$log"' EXIT
if ! timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
    --hide-scrollbars --user-data-dir="$profile" --screenshot="$abs_png" \
    --window-size="1400,${SW_RENDER_HEIGHT:-3000}" --enable-logging=stderr --v=0 "$abs_html" >"$log" 2>&1; then
  echo "render_check: chromium failed; last lines of its log:" >&2
  tail -20 "$log" >&2
  exit 1
fi
if grep -E 'CONSOLE|Uncaught' "$log" >&2; then
  echo "render_check: $html logged console messages (above)" >&2
  exit 1
fi
echo "render_check: wrote $abs_png"
