# shellcheck shell=bash
# Shared by deploy/deb/build.sh, deploy/deb/verify.sh and deploy/arm64/verify.sh (sourced).
# Needs ROOT (the repository) set by the caller.

# cargo-deb, pinned: a newer release may change the package layout under us. Installed into
# the target dir, not ~/.cargo, so it goes away with `cargo clean` and needs no PATH change.
CARGO_DEB_VERSION=3.8.0
CARGO_DEB_ROOT=$ROOT/target/deb-tools
CARGO_DEB=$CARGO_DEB_ROOT/bin/cargo-deb

deb_log() { printf '[deb %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

ensure_cargo_deb() {
  if [[ -x $CARGO_DEB ]] && "$CARGO_DEB" --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    return 0
  fi
  deb_log "installing cargo-deb $CARGO_DEB_VERSION into $CARGO_DEB_ROOT"
  cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$CARGO_DEB_ROOT" cargo-deb
}

# The packaged unit is the bare-metal unit with the package's paths and its fixed account in
# place of DynamicUser; writing it at build time keeps the two from drifting apart.
write_packaged_unit() {
  local out=$ROOT/target/deb/unit/camstream.service
  mkdir -p "$(dirname "$out")"
  sed -e 's#/usr/local/bin/camstream#/usr/bin/camstream#g' \
      -e 's#file:///usr/local/share/doc/camstream/#file:///usr/share/doc/camstream/#g' \
      -e 's#^\# camstream: camera to RTSP daemon\..*#\# camstream: camera to RTSP daemon. Installed by the camstream Debian package; see docs/packaging.md.#' \
      -e 's#^\# A throwaway uid for every start; device access comes from the video group\.#\# The camstream system account made by the package; device access comes from the video group.#' \
      -e 's#^DynamicUser=yes#User=camstream\nGroup=camstream#' \
      "$ROOT/deploy/systemd/camstream.service" >"$out"
  grep -qx 'User=camstream' "$out" || { deb_log "FAIL: the unit transform found no DynamicUser=yes line"; return 1; }
  ! grep -q '/usr/local' "$out" || { deb_log "FAIL: /usr/local left in the packaged unit"; return 1; }
  echo "$out"
}
