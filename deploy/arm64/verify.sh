#!/usr/bin/env bash
# Verified arm64 build and Debian package.
#
# Cross-compiles camstream (release) for aarch64-unknown-linux-gnu against Debian bookworm's
# arm64 GStreamer, packages it with cargo-deb (deploy/deb, the same metadata as the amd64
# package), lists the package and checks its binary with `file`, then runs that packaged
# binary under qemu-user with a test pattern and checks with the host's ffprobe that it
# serves H.264 at the configured size over RTSP/TCP, that /readyz answers 200, and that
# SIGTERM ends it with exit code 0.
#
# Why a private sysroot instead of `apt-get install libfoo-dev:arm64`: in bookworm several of
# the packages we need are not Multi-Arch: same (libgstrtspserver-1.0-0,
# libgstrtspserver-1.0-dev, libgstreamer-plugins-base1.0-dev), so installing their :arm64
# builds makes apt remove the amd64 ones that the native build and tests need. Unpacking the
# arm64 .debs with dpkg-deb into target/aarch64-verify/sysroot leaves the system's package
# state untouched; only host (amd64) tools are installed through apt.
#
# Runs non-interactively as root on a fresh Debian 12 (the caller has run apt-get update).
# Environment:
#   ARM64_TARGET_DIR   cargo target dir (default: <repo>/target/aarch64-verify)
#   ARM64_BUILD_JOBS   cargo -j (default: number of cores)
# Argument `sysroot`: stop after preparing the sysroot; `package`: stop after packaging
# (deploy/deb/build.sh arm64).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TRIPLE=aarch64-unknown-linux-gnu
MULTIARCH=aarch64-linux-gnu
export CARGO_TARGET_DIR=${ARM64_TARGET_DIR:-$ROOT/target/aarch64-verify}
SYSROOT=$CARGO_TARGET_DIR/sysroot
DEBS=$CARGO_TARGET_DIR/debs
export DEBIAN_FRONTEND=noninteractive

# The arm64 userland we unpack: headers and .pc files to build against, plugins to run with.
# gstreamer1.0-plugins-bad is there for h264parse; -ugly for x264enc.
ARM64_PACKAGES=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  libssl-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad
)
# The cross toolchain brings its own libc headers and linker scripts; the arm64 copies would
# shadow them with linker scripts that name absolute /lib paths of the build host.
SYSROOT_EXCLUDE='^(libc6-dev|linux-libc-dev|libcrypt-dev):arm64$'
HOST_PACKAGES=(gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user pkg-config
  ffmpeg python3 ca-certificates curl file)

log() { printf '[arm64-verify %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
START=$SECONDS

install_host_tools() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing host tools: ${missing[*]}"
  # Refuse to go on if apt would remove anything: the native toolchain must stay intact.
  if apt-get install -s -y --no-install-recommends "${missing[@]}" | grep -E '^Remv '; then
    die "apt would remove the packages above; not installing"
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_arm64_apt_lists() {
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding arm64 to dpkg's architectures (package lists only; no arm64 package is installed)"
    dpkg --add-architecture arm64
  fi
  if ! apt-cache show libgstreamer1.0-0:arm64 >/dev/null 2>&1; then
    apt-get update -q >/dev/null
  fi
}

build_sysroot() {
  local want stamp
  want=$(printf '%s\n' "${ARM64_PACKAGES[@]}" | sort | sha256sum | cut -c1-16)
  stamp=$SYSROOT/.camstream-sysroot
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "arm64 sysroot up to date: $SYSROOT"
    return 0
  fi
  log "resolving arm64 dependency closure"
  local closure
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${ARM64_PACKAGES[@]/%/:arm64}" \
    | grep -E '^[a-z0-9].*:arm64$' | grep -Ev "$SYSROOT_EXCLUDE" | sort -u)
  log "downloading $(wc -l <<<"$closure") arm64 packages"
  mkdir -p "$DEBS"
  # --print-uris names the exact .deb files in one call, so packages cached by an earlier
  # run are not fetched again.
  local uris files=() todo=() name file
  # shellcheck disable=SC2086 # one package name per word
  uris=$(apt-get download --print-uris $closure)
  while read -r _ file _; do
    files+=("$file")
  done <<<"$uris"
  ((${#files[@]} == $(wc -l <<<"$closure"))) || die "apt-get download --print-uris listed ${#files[@]} files"
  while read -r name; do
    todo+=("$name")
  done < <(for file in "${files[@]}"; do [[ -s $DEBS/$file ]] || echo "${file%%_*}:arm64"; done)
  if ((${#todo[@]})); then
    (cd "$DEBS" && apt-get download -q "${todo[@]}" >/dev/null)
  fi
  log "unpacking into $SYSROOT"
  rm -rf "$SYSROOT"
  mkdir -p "$SYSROOT"
  for file in "${files[@]}"; do
    dpkg-deb -x "$DEBS/$file" "$SYSROOT"
  done
  # Debian -dev packages use absolute symlinks (libz.so -> /lib/...); inside a sysroot they
  # must point into the sysroot, not at the build host's amd64 libraries.
  local link dest
  while IFS= read -r -d '' link; do
    dest=$(readlink "$link")
    ln -sfn "$SYSROOT$dest" "$link"
  done < <(find "$SYSROOT" -type l -lname '/*' -print0)
  echo "$want" >"$stamp"
}

cross_build() {
  if ! rustup target list --installed | grep -qx "$TRIPLE"; then
    log "rustup target add $TRIPLE"
    rustup target add "$TRIPLE" || die "rustup could not fetch the $TRIPLE standard library"
  fi
  local libdirs="$SYSROOT/usr/lib/$MULTIARCH:$SYSROOT/lib/$MULTIARCH"
  export PKG_CONFIG_ALLOW_CROSS=1
  export PKG_CONFIG_SYSROOT_DIR=$SYSROOT
  export PKG_CONFIG_LIBDIR=$SYSROOT/usr/lib/$MULTIARCH/pkgconfig:$SYSROOT/usr/share/pkgconfig
  unset PKG_CONFIG_PATH
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  # openssl-sys (WebRTC's DTLS) preprocesses the OpenSSL headers with the cross compiler; the
  # arm64 opensslconf.h sits in the multiarch include dir, which only a native gcc searches.
  # -idirafter keeps the cross toolchain's own libc headers first.
  export CFLAGS_aarch64_unknown_linux_gnu="-idirafter $SYSROOT/usr/include/$MULTIARCH"
  # rpath-link lets ld resolve the libraries our direct dependencies pull in (glib needs
  # pcre2, ffi, ...) without installing them on the host.
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,$libdirs"
  log "cargo build --release --target $TRIPLE (target dir $CARGO_TARGET_DIR)"
  # Release, because this binary is the one the package ships.
  (cd "$ROOT" && timeout 2400 cargo build --locked --release --bins --target "$TRIPLE" \
      -j "${ARM64_BUILD_JOBS:-$(nproc)}") || die "cross build failed"
  BIN=$CARGO_TARGET_DIR/$TRIPLE/release/camstream
  [[ -x $BIN ]] || die "no binary at $BIN"
  aarch64-linux-gnu-readelf -h "$BIN" | grep -q 'Machine: *AArch64' || die "$BIN is not an aarch64 ELF"
  log "built $BIN"
}

# The .deb from the binary just built (no second build), then the packaged binary becomes the
# one qemu runs, so what is tested is what a Pi installs.
package() {
  # shellcheck source-path=SCRIPTDIR source=../deb/lib.sh
  source "$ROOT/deploy/deb/lib.sh"
  ensure_cargo_deb
  write_packaged_unit >/dev/null
  mkdir -p "$ROOT/target/debian"
  rm -f "$ROOT"/target/debian/camstream_*_arm64.deb
  log "cargo deb --no-build --target $TRIPLE"
  (cd "$ROOT" && env "STRIP_$MULTIARCH=$MULTIARCH-strip" "OBJCOPY_$MULTIARCH=$MULTIARCH-objcopy" \
      "$CARGO_DEB" --locked --no-build --target "$TRIPLE" --output "$ROOT/target/debian/") ||
    die "cargo deb failed"
  DEB=$(ls "$ROOT"/target/debian/camstream_*_arm64.deb)
  [[ $(dpkg-deb -f "$DEB" Architecture) == arm64 ]] || die "$DEB is not an arm64 package"
  log "contents of $(basename "$DEB"):"
  dpkg-deb -c "$DEB" | awk '{print "  " $1, $3, $6}' >&2
  local extract=$CARGO_TARGET_DIR/deb-extract
  rm -rf "$extract"
  dpkg-deb -x "$DEB" "$extract"
  local kind
  kind=$(file -b "$extract/usr/bin/camstream")
  log "file usr/bin/camstream: $kind"
  [[ $kind == *"ARM aarch64"* ]] || die "the packaged binary is not an aarch64 executable"
  BIN=$extract/usr/bin/camstream
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DAEMON_PID=
WORK=
cleanup() {
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

run_under_qemu() {
  WORK=$(mktemp -d)
  local rtsp_port http_port
  rtsp_port=$(free_port)
  http_port=$(free_port)
  cat >"$WORK/camstream.toml" <<TOML
[source]
kind = "test"
[video]
width = 320
height = 240
fps = 15
[encoder]
kind = "x264"
[rtsp]
address = "127.0.0.1"
port = $rtsp_port
[http]
address = "127.0.0.1"
port = $http_port
TOML
  log "starting the arm64 daemon under qemu-aarch64 (RTSP $rtsp_port, HTTP $http_port)"
  # GST_REGISTRY_FORK=no: the plugin scanner helper is an arm64 binary that the kernel cannot
  # exec without binfmt_misc, so plugins are scanned in-process instead.
  env GST_PLUGIN_SYSTEM_PATH_1_0="$SYSROOT/usr/lib/$MULTIARCH/gstreamer-1.0" \
      GST_PLUGIN_PATH_1_0= GST_REGISTRY_FORK=no GST_REGISTRY_1_0="$WORK/registry.bin" \
      RUST_LOG=info \
    qemu-aarch64 -L "$SYSROOT" "$BIN" --config "$WORK/camstream.toml" >"$WORK/daemon.log" 2>&1 &
  DAEMON_PID=$!

  local deadline=$((SECONDS + 120))
  until (exec 3<>"/dev/tcp/127.0.0.1/$rtsp_port") 2>/dev/null; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      cat "$WORK/daemon.log" >&2
      die "daemon exited before binding RTSP port $rtsp_port"
    fi
    if ((SECONDS > deadline)); then
      tail -n 50 "$WORK/daemon.log" >&2
      die "RTSP port $rtsp_port not open after 120 s"
    fi
    sleep 1
  done
  log "RTSP port open after $((SECONDS - deadline + 120)) s; probing the stream"

  local url="rtsp://127.0.0.1:$rtsp_port/video" out="" attempt
  # qemu makes the first encoded frames slow to arrive; retry ffprobe a few times, each bounded.
  for attempt in 1 2 3; do
    if out=$(timeout 90 ffprobe -v error -rtsp_transport tcp -timeout 60000000 \
        -select_streams v:0 -show_entries stream=codec_name,width,height -of csv=p=0 "$url" 2>&1); then
      break
    fi
    log "ffprobe attempt $attempt failed: ${out:-timeout}"
    kill -0 "$DAEMON_PID" 2>/dev/null || break
  done
  log "ffprobe: $out"
  if [[ $out != "h264,320,240" ]]; then
    tail -n 50 "$WORK/daemon.log" >&2
    die "expected h264,320,240 from $url, got '${out}'"
  fi

  # The HTTP sidecar runs on the same arm64 build; /readyz turns 200 once frames flow.
  local ready_deadline=$((SECONDS + 60)) code=""
  until [[ $code == 200 ]]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$http_port/readyz" || true)
    if ((SECONDS > ready_deadline)); then
      tail -n 30 "$WORK/daemon.log" >&2
      die "/readyz on port $http_port answered '$code', not 200, for 60 s"
    fi
    [[ $code == 200 ]] || sleep 1
  done
  log "/readyz: 200"

  kill -TERM "$DAEMON_PID"
  local stop_deadline=$((SECONDS + 20)) rc=0
  while kill -0 "$DAEMON_PID" 2>/dev/null; do
    ((SECONDS < stop_deadline)) || die "daemon did not exit within 20 s of SIGTERM under qemu"
    sleep 0.2
  done
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  ((rc == 0)) || { tail -n 30 "$WORK/daemon.log" >&2; die "daemon exited with $rc after SIGTERM"; }
}

install_host_tools
ensure_arm64_apt_lists
build_sysroot
# `verify.sh sysroot` stops here: handy when iterating on the package list.
[[ ${1:-} == sysroot ]] && { log "sysroot ready: $SYSROOT"; exit 0; }
cross_build
package
[[ ${1:-} == package ]] && { log "arm64 package ready: $DEB"; exit 0; }
run_under_qemu
log "PASS: the arm64 package's binary serves h264 320x240 under qemu ($((SECONDS - START)) s)"
