#!/usr/bin/env bash
# `remat report` as a person sees it: headless Chromium (Debian's `chromium`) opens the page from
# disk, with no network, and the page's own check must say every figure was drawn; no console
# error may appear; a screenshot is written.
#
#   tests/report_browser_test.sh build/bin/remat [screenshot.png]
#
# The check (html_report.cpp's page script) sets body[data-check] to "ok: 4 figures" when each
# figure has an <svg> with a non-empty box and its marks (points, bars, Graphviz nodes), and no
# error or console.error happened; otherwise "FAIL: " and what is wrong. --dump-dom prints the
# DOM after the scripts ran. Exit 77 (CTest: skipped) when Chromium is not installed.
set -euo pipefail
remat=${1:?usage: report_browser_test.sh REMAT [SCREENSHOT.png]}
shot=${2:-}
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $browser ]]; then
  echo "report_browser_test: SKIPPED: Chromium is not installed (apt-get install chromium)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
page=$work/report.html

# The README's default question, and a fine-tuning one where nothing is sharded.
for question in "--model llama2-7b --gpu h100-80gb --sharding fsdp --world-size 8" \
                "--model tiny-llama --seq 256 --gpu rtx4090-24gb --train lora"; do
  echo "report_browser_test: remat report $question"
  # shellcheck disable=SC2086
  "$remat" report $question -o "$page" > /dev/null
  chrome=(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run
          --user-data-dir="$work/profile" --enable-logging=stderr --v=0)
  "${chrome[@]}" --dump-dom "file://$page" > "$work/dom.html" 2> "$work/console.txt"
  check=$(grep -o 'data-check="[^"]*"' "$work/dom.html" || true)
  echo "  page check: ${check:-none}"
  if [[ $check != 'data-check="ok: 4 figures"' ]]; then
    echo "report_browser_test: FAIL: the page's check did not pass"; exit 1
  fi
  for figure in memory timeline pareto plan; do
    drawn=$(grep -o "id=\"figure-$figure\" data-needs=\"[^\"]*\" data-drawn=\"[0-9]*\"" \
              "$work/dom.html" | grep -o 'data-drawn="[0-9]*"' || true)
    echo "  $figure: ${drawn:-not drawn}"
    [[ $drawn =~ data-drawn=\"[1-9][0-9]*\" ]] || { echo "report_browser_test: FAIL: $figure"; exit 1; }
  done
  # Chromium logs the page's console as "CONSOLE(line)"; errors as "Uncaught ...".
  if grep -E 'CONSOLE|Uncaught' "$work/console.txt"; then
    echo "report_browser_test: FAIL: the page wrote to the console"; exit 1
  fi
done

if [[ -n $shot ]]; then
  # The default question's page, top first, as a reader opens it.
  "$remat" report --model llama2-7b --gpu h100-80gb --sharding fsdp --world-size 8 -o "$page" > /dev/null
  "${chrome[@]}" --hide-scrollbars --window-size=1100,2600 --screenshot="$shot" "file://$page" \
    > /dev/null 2>&1
  [[ $(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
    { echo "report_browser_test: FAIL: $shot is not a PNG"; exit 1; }
  echo "  screenshot: $shot ($(stat -c %s "$shot") bytes)"
fi
echo "report_browser_test: ok"
