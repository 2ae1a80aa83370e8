#!/usr/bin/env bash
# Measures how long Cuttle takes to build and to test on this machine:
#
#   1. a clean debug build of the workspace (`cargo build --workspace`) into a TEMPORARY target
#      directory, removed afterwards, so the shared cache in $CARGO_TARGET_DIR is left alone;
#   2. the test suite (`cargo nextest run --workspace`) with the shared target directory, split
#      into compiling the tests (`--no-run`) and running them.
#
# It takes many minutes: the clean build alone is ~4-6 min on 2 cores and competes with every
# other build on the machine (run it when nothing else compiles); the test suite needs the
# dependencies of distributed mode running (`bash infra/up.sh`).
#
# Usage: bash load-tests/build-times.sh [--skip-clean-build] [--skip-tests]
set -euo pipefail

skip_clean=false
skip_tests=false
for arg in "$@"; do
  case "$arg" in
    --skip-clean-build) skip_clean=true ;;
    --skip-tests) skip_tests=true ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-times: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
shared_target="${CARGO_TARGET_DIR:-$HOME/.cache/cuttle/target}"
cd "$root"

# Seconds since the epoch with milliseconds, for durations.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

clean_build="skipped"
clean_size="-"
if [ "$skip_clean" = false ]; then
  # A clean debug build needs ~2-3 GB; refuse early rather than fill the disk halfway through.
  free_kb="$(df --output=avail -k "${TMPDIR:-/tmp}" | tail -n 1)"
  if [ "$free_kb" -lt $((4 * 1024 * 1024)) ]; then
    echo "build-times: less than 4 GB free in ${TMPDIR:-/tmp}; not starting a clean build" >&2
    exit 1
  fi
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/cuttle-clean-build.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  echo "build-times: clean debug build into $scratch (several minutes)..." >&2
  started="$(now)"
  # RUSTC_WRAPPER is cleared so that a compiler cache cannot turn the clean build into a warm one.
  CARGO_TARGET_DIR="$scratch" RUSTC_WRAPPER="" cargo build --workspace --quiet
  clean_build="$(elapsed "$started") s"
  clean_size="$(du -sh "$scratch" | cut -f1)"
  rm -rf "$scratch"
fi

tests_build="skipped"
tests_run="skipped"
if [ "$skip_tests" = false ]; then
  echo "build-times: compiling the tests with the shared target dir $shared_target..." >&2
  started="$(now)"
  CARGO_TARGET_DIR="$shared_target" cargo nextest run --workspace --no-run
  tests_build="$(elapsed "$started") s"
  echo "build-times: running the test suite..." >&2
  started="$(now)"
  status=0
  CARGO_TARGET_DIR="$shared_target" cargo nextest run --workspace || status=$?
  tests_run="$(elapsed "$started") s"
  if [ "$status" -ne 0 ]; then
    tests_run="$tests_run (the suite FAILED, exit $status)"
  fi
fi

echo
echo "| measurement | time |"
echo "|---|---|"
echo "| clean debug build, \`cargo build --workspace\`, temporary target dir ($clean_size) | $clean_build |"
echo "| compile the tests, \`cargo nextest run --workspace --no-run\`, shared target dir | $tests_build |"
echo "| run the test suite, \`cargo nextest run --workspace\` | $tests_run |"
echo
echo "machine: $(nproc) cores, $(rustc -V), load average $(cut -d' ' -f1-3 /proc/loadavg)"
