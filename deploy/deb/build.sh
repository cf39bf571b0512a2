#!/usr/bin/env bash
# Builds camstream's Debian packages into target/debian/ (docs/packaging.md).
#
#   deploy/deb/build.sh          amd64 and arm64
#   deploy/deb/build.sh amd64    the native package only (a release build on this machine)
#   deploy/deb/build.sh arm64    the arm64 package only, from the release cross build of
#                                deploy/arm64/verify.sh (no emulated compiler)
#
# Runs on Debian 12 as root or with sudo for the packages it installs (scripts/setup.sh,
# cross tools). Rust comes from rustup, as for every other build of camstream.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$ROOT/deploy/deb/lib.sh"

build_amd64() {
  bash "$ROOT/scripts/setup.sh"
  ensure_cargo_deb
  write_packaged_unit >/dev/null
  mkdir -p "$ROOT/target/debian"
  deb_log "cargo deb (release build for $(dpkg --print-architecture))"
  (cd "$ROOT" && "$CARGO_DEB" --locked --output "$ROOT/target/debian/")
}

build_arm64() {
  # The cross build, its sysroot and the packaging live in the arm64 script, which also runs
  # the packaged binary under qemu when called without arguments.
  bash "$ROOT/deploy/arm64/verify.sh" package
}

case ${1:-all} in
  amd64) build_amd64 ;;
  arm64) build_arm64 ;;
  all) build_amd64; build_arm64 ;;
  *) echo "usage: $0 [amd64|arm64|all]" >&2; exit 2 ;;
esac
ls -l "$ROOT"/target/debian/*.deb
