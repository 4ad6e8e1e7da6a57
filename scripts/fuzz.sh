#!/usr/bin/env bash
# Builds the libFuzzer harnesses in Fuzz/ (the project's real modules with coverage,
# AddressSanitizer and LeakSanitizer instrumentation) and runs each for a number of executions
# from the committed seed corpus. Not run by CI. See docs/Fuzzing.md.
#
#   scripts/fuzz.sh [HARNESS...] [-runs=N] [-timeout=S] [-max_findings=K] [--build-only] [-LIBFUZZER_FLAG=V...]
#
#   HARNESS         safetensors npy config tokenizer image manifest hdf5 (default: all, in that order)
#   -runs=N         executions per harness (default 1000000)
#   -timeout=S      seconds one input may take before it counts as a hang (default 5)
#   -max_findings=K after a crash/hang/leak/OOM the harness is restarted on its grown corpus until it
#                   has K findings or N executions (default 3)
#   -max_total_time=S  also stop each harness after S seconds (summed over restarts)
#   --build-only    build the harnesses and stop
#   other -flag=value arguments go to libFuzzer unchanged (e.g. -seed=1, -rss_limit_mb=4096)
#
# Work files live in Fuzz/work/ (ignored by git): Fuzz/work/corpus/HARNESS (inputs libFuzzer found
# interesting; the committed seeds in Fuzz/corpus/HARNESS are only read), Fuzz/work/artifacts/HARNESS
# (crash-*, timeout-*, leak-*, oom-* inputs) and Fuzz/work/logs/HARNESS.N.log. Ends with one line
# per harness: executions, exec/s, crashes, timeouts, leaks, OOMs. Exit status 1 when anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

all_harnesses=(safetensors npy config tokenizer image manifest hdf5)
# Largest input per format: headers and configs are small; images and .mat files need room for data.
declare -A max_len=([safetensors]=16384 [npy]=4096 [config]=8192 [tokenizer]=4096 [image]=32768
                    [manifest]=16384 [hdf5]=32768)

runs=1000000
timeout=5
max_findings=3
max_total_time=0
build_only=0
harnesses=()
extra=()
for arg in "$@"; do
  case "$arg" in
    -runs=*) runs=${arg#-runs=} ;;
    -timeout=*) timeout=${arg#-timeout=} ;;
    -max_findings=*) max_findings=${arg#-max_findings=} ;;
    -max_total_time=*) max_total_time=${arg#-max_total_time=} ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*=*) extra+=("$arg") ;;
    *)
      if [[ -z "${max_len[$arg]+x}" ]]; then
        echo "fuzz: unknown harness '$arg' (harnesses: ${all_harnesses[*]})" >&2; exit 2
      fi
      harnesses+=("$arg") ;;
  esac
done
for n in "$runs" "$timeout" "$max_findings" "$max_total_time"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "fuzz: '$n' is not a non-negative integer" >&2; exit 2; }
done
[ ${#harnesses[@]} -eq 0 ] && harnesses=("${all_harnesses[@]}")

# MARK: Toolchain and libraries

# System libraries (libjpeg-turbo, libpng, zlib, OpenBLAS) and Swift on PATH.
source scripts/setup.sh
# libFuzzer and the sanitizer runtimes come with the Swift toolchain (its own clang resource
# directory); a distribution's libclang-rt packages are for its own clang and are not used by swiftc.
resource_dir="$(dirname "$(command -v swiftc)")/../lib/clang"
if ! compgen -G "$resource_dir/*/lib/*/libclang_rt.fuzzer*" >/dev/null \
   || ! compgen -G "$resource_dir/*/lib/*/libclang_rt.asan*" >/dev/null; then
  echo "fuzz: the Swift toolchain at $(dirname "$(command -v swiftc)") has no libFuzzer or AddressSanitizer runtime" \
       "(looked for libclang_rt.fuzzer and libclang_rt.asan under $resource_dir); install a swift.org Linux toolchain" >&2
  exit 1
fi

# MARK: Build

# --sanitize=fuzzer instruments every module for coverage (and links libFuzzer's main);
# --sanitize=address adds AddressSanitizer and LeakSanitizer. SwiftPM hands swiftc the two as
# separate -sanitize= flags, and swiftc keeps only the last one: the Swift modules would get
# AddressSanitizer but no coverage at all (libFuzzer then mutates blind, guided by the C shims
# only). The combined flag, given last, instruments them for both; C targets get both anyway.
build=(swift build -c release --package-path Fuzz --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address)
echo "fuzz: building the harnesses (${build[*]})" >&2
"${build[@]}" >&2
bin=$("${build[@]}" --show-bin-path)
# Refuse to fuzz blind: every Swift module of the parsers must carry coverage counters.
for module in RefractCheckpoint RefractTensor RefractStore RefractTokenizer RefractHDF5; do
  if [ "$(objdump -h "$bin/$module.build/"*.o 2>/dev/null | grep -c __sancov_cntrs)" -eq 0 ]; then
    echo "fuzz: $bin/$module.build has no coverage counters (__sancov_cntrs); the build did not instrument Swift for libFuzzer" >&2
    exit 1
  fi
done
[ "$build_only" -eq 1 ] && exit 0

# MARK: Run

work="$root/Fuzz/work"
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/refract-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Swift's own crash handler would take the signal before libFuzzer saves the input.
export SWIFT_BACKTRACE=enable=no
export REFRACT_FUZZ_SCRATCH="$scratch"
# allocator_may_return_null=1: an allocation the machine cannot back returns NULL, as glibc's malloc
# does outside the sanitizer (the readers then refuse the file cleanly); an allocation over
# -rss_limit_mb that succeeds is still a finding (libFuzzer's malloc limit).
# Memory errors inside uninstrumented third-party libraries that only show in an intercepted libc
# call are listed, with the reason, in Fuzz/asan.supp.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:suppressions=$root/Fuzz/asan.supp}"
# Leaks inside third-party code that Refract cannot free (Fuzz/lsan.supp says which and why).
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/Fuzz/lsan.supp:print_suppressions=0}"

summaries=()
status=0
for h in "${harnesses[@]}"; do
  corpus="$work/corpus/$h"; artifacts="$work/artifacts/$h"; logs="$work/logs"
  mkdir -p "$corpus" "$artifacts" "$logs"
  rm -f "$logs/$h".*.log
  executed=0 seconds=0 session=0 found=0 crashes=0 timeouts=0 leaks=0 ooms=0
  while :; do
    session=$((session + 1))
    log="$logs/$h.$session.log"
    args=(-runs=$((runs - executed)) -max_len="${max_len[$h]}" -timeout="$timeout" -rss_limit_mb=2048
          -artifact_prefix="$artifacts/" -print_final_stats=1)
    if [ "$max_total_time" -gt 0 ]; then args+=(-max_total_time=$((max_total_time - seconds))); fi
    echo "fuzz: $h (session $session): $bin/fuzz-$h ${args[*]} ${extra[*]} $corpus Fuzz/corpus/$h" >&2
    start=$(date +%s.%N)
    rc=0
    "$bin/fuzz-$h" "${args[@]}" "${extra[@]}" "$corpus" "$root/Fuzz/corpus/$h" >"$log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    seconds=$(awk -v s="$seconds" -v a="$start" -v b="$end" 'BEGIN { printf "%d", s + (b - a) + 0.5 }')
    n=$(grep -E '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{print $2}')
    executed=$((executed + ${n:-0}))
    if [ "$rc" -eq 0 ]; then break; fi
    # One finding per failing session: libFuzzer stops at the first and names the saved input.
    unit=$(grep -oE 'Test unit written to .*' "$log" | tail -n 1 | sed 's/^Test unit written to //')
    if [ -z "$unit" ]; then
      echo "fuzz: $h stopped without a finding (exit $rc); the end of $log:" >&2
      tail -n 30 "$log" >&2
      status=1
      break
    fi
    found=$((found + 1))
    case "$(basename "$unit")" in
      timeout-*) timeouts=$((timeouts + 1)) ;;
      leak-*) leaks=$((leaks + 1)) ;;
      oom-*) ooms=$((ooms + 1)) ;;
      *) crashes=$((crashes + 1)) ;;
    esac
    echo "fuzz: $h: finding $found saved as $unit; stack in $log:" >&2
    grep -E 'ERROR|SUMMARY|^    #[0-9]+ ' "$log" | head -n 16 >&2 || true
    if [ "$found" -ge "$max_findings" ] || [ "$executed" -ge "$runs" ]; then break; fi
    if [ "$max_total_time" -gt 0 ] && [ "$seconds" -ge "$max_total_time" ]; then break; fi
  done
  rate=$(awk -v n="$executed" -v s="$seconds" 'BEGIN { printf "%d", (s > 0 ? n / s : n) }')
  [ "$found" -gt 0 ] && status=1
  line="$h: $executed executions in ${seconds}s ($rate exec/s), $crashes crashes, $timeouts timeouts, $leaks leaks, $ooms OOMs"
  [ "$found" -gt 0 ] && line+=" (inputs in Fuzz/work/artifacts/$h)"
  summaries+=("$line")
  echo "fuzz: $line" >&2
done

echo
for line in "${summaries[@]}"; do echo "$line"; done
exit $status
