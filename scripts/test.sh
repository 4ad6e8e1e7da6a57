#!/usr/bin/env bash
# Sets up the machine (system packages) and runs the whole test suite (XCTest), then the numeric
# test targets again under every OpenBLAS kernel set this CPU can run, so that no test passes or
# fails by which BLAS kernel it gets (README, "Speed on any x86-64 CPU"). Ends with one plain line:
# "tests: N passed, N failed, N skipped" over all runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# Beyond the build: Chromium and its WebDriver for the explorer's end-to-end browser test
# (ExplorerBrowserTests), wrk for its bounded load test (ExplorerLoadTests); both skip without them.
extra_packages=(chromium chromium-driver wrk)
source scripts/setup.sh
swift build --build-tests

# Test targets whose results go through BLAS (GEMMs, LAPACK): parity with the reference
# libraries, decompositions and their sums, token sums, TextSpan, retrieval, ablation studies.
numeric_targets="RefractTensorTests|RefractCLIPTests|RefractTimmTests|RefractDecomposeTests|RefractAlignTests|RefractSegmentTests|RefractTextSpanTests|RefractRetrieveTests|RefractSpuriousTests|RefractExploreTests"

total_passed=0 total_failed=0 total_skipped=0 status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run LABEL [swift test arguments...]: runs XCTest, adds its counts to the totals, prints a line.
run() {
  local label=$1; shift
  local rc=0
  swift test --skip-build --disable-swift-testing "$@" >"$log" 2>&1 || rc=$?
  # XCTest's overall summary is the last "Executed N tests" line; it says "with K test(s) skipped
  # and F failures" when tests were skipped.
  local summary
  summary=$(grep -E "Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?" "$log" | tail -n 1 || true)
  if [ -z "$summary" ] || [ "$rc" -ne 0 ]; then
    cat "$log"
  fi
  if [ -z "$summary" ]; then
    echo "== $label: XCTest printed no summary (exit $rc)"
    total_failed=$((total_failed + 1)); status=1
    return
  fi
  local n f s=0
  n=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
  f=$(sed -E 's/.* ([0-9]+) failures?.*/\1/' <<<"$summary")
  if grep -qE "[0-9]+ tests? skipped" <<<"$summary"; then
    s=$(sed -E 's/.*with ([0-9]+) tests? skipped.*/\1/' <<<"$summary")
  fi
  [ "$rc" -ne 0 ] && status=1
  total_passed=$((total_passed + n - f - s)); total_failed=$((total_failed + f)); total_skipped=$((total_skipped + s))
  echo "== $label: $((n - f - s)) passed / $f failed / $s skipped (exit $rc)"
}

# 1. Every test, with BLAS as this machine gives it (Refract's own choice unless OPENBLAS_CORETYPE is set).
run "all tests, default BLAS kernels (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"

# 2. The numeric targets under every OpenBLAS kernel set whose instructions this CPU has (Linux x86-64,
#    where Refract loads OpenBLAS; macOS uses Accelerate). Prescott (SSE3) runs everywhere.
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] && [ -z "${REFRACT_BLAS_LIBRARY:-}" ]; then
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
  cores=(Prescott)
  has avx && cores+=(Sandybridge)
  has avx avx2 fma && cores+=(Haswell)
  has avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl && cores+=(SkylakeX)
  for core in "${cores[@]}"; do
    OPENBLAS_CORETYPE=$core run "numeric targets under OPENBLAS_CORETYPE=$core" --filter "$numeric_targets"
  done
fi

echo "tests: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$status"
