#!/usr/bin/env bash
# The whole `cargo test` run, three times in a row, while stress-ng keeps both cores busy: the
# suite must hold on a loaded board (a CM4 encoding in software), not only on a quiet machine.
# Installs stress-ng (and the test dependencies) when missing. Exits non-zero on any failure.
#
#   bash scripts/test-loaded.sh                 # 3 runs under stress-ng --cpu 2
#   RUNS=1 STRESS_CPUS=4 bash scripts/test-loaded.sh -- --test reliability_limits
#
# Arguments after `--` go to `cargo test` (default: the whole suite, two test threads).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

runs="${RUNS:-3}"
cpus="${STRESS_CPUS:-2}"
test_args=()
if [ "${1:-}" = "--" ]; then
  shift
  test_args=("$@")
fi

bash scripts/setup.sh --test
if ! command -v stress-ng >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test-loaded: installing stress-ng"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends stress-ng >/dev/null
fi

# Build first, unloaded: the load is for the tests, not the compiler.
cargo build --all-targets --locked

logs="$(mktemp -d)"
# Tests that make their own load (reliability_limits) leave it to stress-ng here.
export CAMSTREAM_TEST_LOADED=1
stress-ng --cpu "$cpus" --timeout 0 --quiet &
stress=$!
# The pid is our own child until it is waited for, so it cannot name another process.
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null || true' EXIT
sleep 1

failed=0
for i in $(seq 1 "$runs"); do
  echo "== loaded run $i/$runs (stress-ng --cpu $cpus)"
  start=$(date +%s)
  # --no-fail-fast: every failing test binary is reported, not only the first.
  if cargo test --locked --no-fail-fast "${test_args[@]}" -- --test-threads=2 >"$logs/run$i.log" 2>&1; then
    result=passed
  else
    result=FAILED
    failed=$((failed + 1))
  fi
  # One line per test binary, and every failure by name.
  grep -E "^test result:|^    [a-z_:]+$|panicked at" "$logs/run$i.log" | sed 's/^/  /' || true
  echo "== loaded run $i: $result in $(( $(date +%s) - start )) s (log: $logs/run$i.log)"
done
if [ "$failed" -gt 0 ]; then
  echo "== $failed of $runs loaded runs failed"
  exit 1
fi
echo "== all $runs loaded runs passed"
