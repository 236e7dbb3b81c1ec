#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (REMAT_FUZZ=ON) in their own build directory, runs
# each over its recorded crash inputs (tests/data/fuzz-regressions/<harness>/), then fuzzes each
# for a fixed time over a copy of its committed seed corpus (fuzz/corpus/<harness>/), so that a
# run never writes into the repository. Prints libFuzzer's executions, exec/s and final coverage
# (cov, ft) per harness and exits non-zero when any regression input or fuzzing run crashes,
# leaks, times out or runs out of memory; crashing inputs are kept under
# <build-dir>/fuzz-artifacts/<harness>/, the corpus each run grew under
# <build-dir>/fuzz-corpus/<harness>/ (reset from the seeds at each run; docs/fuzzing.md says how
# to merge it back into the seeds).
#
#   fuzz/run.sh                    # 20 s per harness in build-fuzz (CI)
#   FUZZ_JOBS=1 FUZZ_KEEP_GOING=1 fuzz/run.sh 600 build-fuzz   # the long run of docs/fuzzing.md
#   FUZZ_HARNESSES=fuzz_bytes,fuzz_strategy fuzz/run.sh 60   # only these harnesses
#
# Environment: FUZZ_HARNESSES the harnesses to run (names separated by commas or spaces; default
# all five), FUZZ_JOBS harnesses at once (default: the number of cores, at most 2), CXX
# (default clang++, else clang++-14), FUZZ_KEEP_GOING=1 to go on past a crash (libFuzzer's
# -fork=1 with -ignore_crashes, -ignore_timeouts and -ignore_ooms; the long run's mode, which
# counts every crashing input kept instead of stopping at the first). It does not install clang: the Debian packages are clang
# and libclang-rt-14-dev (libFuzzer).
set -euo pipefail

seconds=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-build-fuzz}
case $build in /*) ;; *) build=$root/$build ;; esac
all_harnesses=(fuzz_model_json fuzz_calibration fuzz_bytes fuzz_strategy fuzz_token_data)
harnesses=()
for h in ${FUZZ_HARNESSES:-${all_harnesses[*]}}; do
    h=${h//,/ }
    for one in $h; do
        case " ${all_harnesses[*]} " in
            *" $one "*) harnesses+=("$one") ;;
            *) echo "fuzz/run.sh: FUZZ_HARNESSES: no harness '$one' (${all_harnesses[*]})" >&2; exit 1 ;;
        esac
    done
done
[ "${#harnesses[@]}" -gt 0 ] || { echo "fuzz/run.sh: FUZZ_HARNESSES names no harness" >&2; exit 1; }
cores=$(nproc 2>/dev/null || echo 1)
jobs=${FUZZ_JOBS:-$((cores < 2 ? cores : 2))}

cxx=${CXX:-}
if [ -z "$cxx" ]; then
    cxx=$(command -v clang++ || command -v clang++-14 || true)
fi
[ -n "$cxx" ] || { echo "fuzz/run.sh: no clang++ found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$build"
# -O1 and line tables only: half the build time of RelWithDebInfo, and stacks still name file:line.
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" -DREMAT_FUZZ=ON \
    -DREMAT_BUILD_TESTS=OFF -DREMAT_BUILD_BENCH=OFF -DREMAT_WITH_CUDA=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" --target "${harnesses[@]}" -j"$cores"
built=$(date +%s)
echo "fuzz/run.sh: built in $((built - start)) s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
work=$(mktemp -d "${TMPDIR:-/tmp}/remat-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts=$build/fuzz-artifacts
corpora=$build/fuzz-corpus

dict_of() {
    case $1 in
        fuzz_model_json | fuzz_calibration) echo "$root/fuzz/dict/json.dict" ;;
        fuzz_bytes) echo "$root/fuzz/dict/bytes.dict" ;;
        fuzz_strategy) echo "$root/fuzz/dict/strategy.dict" ;;
        *) echo "" ;;
    esac
}

# One harness: its regression inputs once each, then `seconds` of fuzzing. Writes
# $work/<harness>.result: "<status> <executions> <crashes found> <cov> <ft> <corpus files> <seconds>".
run_one() {
    local h=$1 bin=$build/bin/$1 status=ok execs=0
    local regress=$root/tests/data/fuzz-regressions/$h corpus=$corpora/$h
    rm -rf "$corpus"
    mkdir -p "$artifacts/$h" "$corpus"
    if [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
        if ! "$bin" -rss_limit_mb=2048 -timeout=10 "$regress"/* >"$work/$h.regress.log" 2>&1; then
            status=regression-crash
        fi
    fi
    cp "$root/fuzz/corpus/$h"/* "$corpus"/
    local dict
    dict=$(dict_of "$h")
    local mode=()
    [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    local before
    before=$(find "$artifacts/$h" -type f | wc -l)
    if ! nice "$bin" "${mode[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 ${dict:+-dict="$dict"} -artifact_prefix="$artifacts/$h/" "$corpus" \
        >"$work/$h.log" 2>&1; then
        status=$([ "$status" = ok ] && echo crash || echo "$status+crash")
    fi
    local found=$(($(find "$artifacts/$h" -type f | wc -l) - before))
    if [ "$found" -gt 0 ] && [ "$status" = ok ]; then status=crash; fi
    # Executions: the final stats, or in fork mode the count that starts its last status line.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$h.log" | tail -n1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$work/$h.log" | tail -n1)
    # Executions per second over the time libFuzzer reports (fork mode runs past `seconds` to
    # finish its last job).
    local took
    took=$(sed -n 's/^INFO: exiting: [0-9]* time: \([0-9]*\)s.*/\1/p; s/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' \
        "$work/$h.log" | tail -n1)
    # Coverage: the last status line's cov and ft (the same words in both modes).
    local last cov ft
    last=$(grep -E '^#[0-9]+.* cov: ' "$work/$h.log" | tail -n1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    echo "$status ${execs:-0} $found ${cov:-?} ${ft:-?} $(find "$corpus" -type f | wc -l) ${took:-$seconds}" \
        >"$work/$h.result"
    cp "$work/$h.log" "$artifacts/$h.log"
}

running=0
for h in "${harnesses[@]}"; do
    run_one "$h" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

failed=0
printf '%-18s %8s %12s %8s %6s %6s %7s %8s  %s\n' harness seconds executions exec/s cov ft corpus crashes result
for h in "${harnesses[@]}"; do
    read -r status execs found cov ft files took <"$work/$h.result"
    printf '%-18s %8s %12s %8s %6s %6s %7s %8s  %s\n' "$h" "$took" "$execs" "$((execs / (took > 0 ? took : 1)))" \
        "$cov" "$ft" "$files" "$found" "$status"
    if [ "$status" != ok ]; then
        failed=1
        for log in "$work/$h.regress.log" "$work/$h.log"; do
            [ -f "$log" ] || continue
            echo "---- $h: $(basename "$log")" >&2
            grep -E -A40 'ERROR:|FINDING|runtime error|Test unit written|Running: ' "$log" | head -n 80 >&2 || tail -n 40 "$log" >&2
        done
    fi
done
echo "fuzz/run.sh: $(($(date +%s) - start)) s in all; logs and crashing inputs under $artifacts"
exit "$failed"
