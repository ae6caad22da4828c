#!/usr/bin/env bash
# Opens a report.html in headless Chromium (installing Debian's chromium if needed) and fails
# when an image does not load or the page reports a script error. Keeps a screenshot beside the
# report and prints its path.
set -euo pipefail
report="$(realpath "$1")"
if ! command -v chromium >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
profile="$(mktemp -d)"
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
  --no-first-run --disable-sync --user-data-dir="$profile" --virtual-time-budget=10000)
dom="$(chromium "${flags[@]}" --dump-dom "file://$report" 2>"$profile/stderr.log")"
shot="$(dirname "$report")/report-screenshot.png"
chromium "${flags[@]}" --window-size=1400,2400 --screenshot="$shot" "file://$report" 2>>"$profile/stderr.log" >/dev/null
body="$(grep -o '<body[^>]*>' <<<"$dom" | head -1)"
images="$(grep -o 'data-images="[0-9]*"' <<<"$body" | grep -o '[0-9]*' || true)"
broken="$(grep -o 'data-broken-images="[0-9]*"' <<<"$body" | grep -o '[0-9]*' || true)"
errors="$(grep -o 'data-errors="[0-9]*"' <<<"$body" | grep -o '[0-9]*' || true)"
echo "browser check: $images images, ${broken:-?} broken, ${errors:-?} script errors; screenshot: $shot"
if [ -z "$images" ] || [ "$images" = 0 ] || [ "$broken" != 0 ] || [ "$errors" != 0 ]; then
  echo "browser check failed for $report" >&2
  cat "$profile/stderr.log" >&2
  exit 1
fi
