#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need, then
# format, lint, unit and integration tests against the real daemon, and the deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash scripts/setup.sh --test

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# Two threads: the tests run real encoders and viewers, and CI has two cores.
cargo test --locked -- --test-threads=2
echo "== deployment checks"
bash deploy/verify.sh
if [ "${SKIP_DEB:-0}" != "1" ]; then
  echo "== Debian package: build, lintian, install, run, purge (bookworm and trixie)"
  bash deploy/deb/verify.sh
fi
if [ "${SKIP_ARM64:-0}" != "1" ]; then
  echo "== arm64 package built, its binary verified under qemu"
  bash deploy/arm64/verify.sh
fi
echo "== all tests passed"
