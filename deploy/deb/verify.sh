#!/usr/bin/env bash
# The amd64 Debian package, checked as a user would meet it (docs/packaging.md):
#
#   1. build it (deploy/deb/build.sh amd64) and read it back: files, conffiles, the unit,
#      and Depends covering every library dpkg-shlibdeps finds in the packaged binary;
#   2. lintian: no errors, and every warning left is one docs/packaging.md explains;
#   3. on this Debian 12 machine: `apt-get install ./camstream_*.deb` resolves everything from
#      the archive, the camstream account exists (system user, video group), `camstream check`
#      passes as that user, and the installed binary started as that user with the packaged
#      config plus `--source test` serves a stream that ffprobe reads; a reinstall keeps an
#      edited conffile; remove keeps config and recordings; purge leaves nothing of ours;
#   4. in a trixie root made with debootstrap (GStreamer 1.26): the same package installs with
#      apt, `camstream check` passes, and ffprobe outside the root reads its stream.
#
# Runs non-interactively as root on a fresh Debian 12 (scripts/setup.sh has run apt-get
# update). SKIP_TRIXIE=1 skips step 4. The trixie root is scripts/trixie-root.sh's, reused.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$ROOT/deploy/deb/lib.sh"
export DEBIAN_FRONTEND=noninteractive
WORK=$ROOT/target/deb-verify
TRIXIE_ROOT=$ROOT/target/trixie-root
START=$SECONDS

die() { deb_log "FAIL: $*"; exit 1; }
pass() { deb_log "ok: $*"; }

DAEMON_PID=
MOUNTED=()
cleanup() {
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  local m
  for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

install_tools() {
  local want=(lintian file dpkg-dev debootstrap ffmpeg curl python3 adduser) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    deb_log "installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- 1. build and read back -------------------------------------------------------------
build_and_inspect() {
  rm -f "$ROOT"/target/debian/camstream_*_amd64.deb
  bash "$ROOT/deploy/deb/build.sh" amd64
  DEB=$(ls "$ROOT"/target/debian/camstream_*_amd64.deb)
  local version
  version=$(grep -m1 '^version' "$ROOT/Cargo.toml" | cut -d'"' -f2)
  [[ $(dpkg-deb -f "$DEB" Version) == "$version-1" ]] || die "package version is not $version-1"
  head -1 "$ROOT/deploy/deb/debian/changelog" | grep -qF "($version-1)" ||
    die "deploy/deb/debian/changelog does not start with $version-1"
  [[ $(dpkg-deb -f "$DEB" Architecture) == amd64 ]] || die "not an amd64 package"

  local contents
  contents=$(dpkg-deb -c "$DEB" | awk '{print $6}')
  local f
  for f in ./usr/bin/camstream ./etc/camstream/camstream.toml ./usr/share/doc/camstream/copyright \
      ./usr/share/doc/camstream/changelog.Debian.gz ./usr/share/doc/camstream/configuration.md \
      ./usr/share/doc/camstream/packaging.md; do
    grep -qxF "$f" <<<"$contents" || die "$f missing from the package"
  done
  grep -qE '^\./(usr/)?lib/systemd/system/camstream\.service$' <<<"$contents" ||
    die "the systemd unit is missing from the package"
  dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | grep -qx /etc/camstream/camstream.toml ||
    die "/etc/camstream/camstream.toml is not a conffile"
  cmp -s <(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./etc/camstream/camstream.toml) "$ROOT/config/camstream.toml" ||
    die "the packaged config differs from config/camstream.toml"
  local tmp depends shlibs
  tmp=$(mktemp -d)
  dpkg-deb -x "$DEB" "$tmp/pkg"
  file -b "$tmp/pkg/usr/bin/camstream" | grep -q 'x86-64' ||
    die "usr/bin/camstream is not an x86-64 binary: $(file -b "$tmp/pkg/usr/bin/camstream")"
  pass "package $(basename "$DEB"): $(wc -l <<<"$contents") entries, conffile, unit, docs"

  # Depends is written by hand (one list for amd64 and arm64, bookworm and trixie); it must
  # still name every library the binary links, at least at the version dpkg-shlibdeps asks for.
  mkdir -p "$tmp/debian" && printf 'Source: camstream\n\nPackage: camstream\nArchitecture: any\n' >"$tmp/debian/control"
  shlibs=$(cd "$tmp" && dpkg-shlibdeps -O pkg/usr/bin/camstream 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  depends=$(dpkg-deb -f "$DEB" Depends)
  rm -rf "$tmp"
  local dep name
  while IFS= read -r dep; do
    name=${dep%% *}
    grep -qE "(^|[ ,|])$name( |,|$)" <<<"$depends" || die "Depends lacks $name (dpkg-shlibdeps: $dep)"
  done < <(tr ',' '\n' <<<"$shlibs" | sed 's/^ *//')
  pass "Depends covers dpkg-shlibdeps: $shlibs"
}

# --- 2. lintian -------------------------------------------------------------------------
run_lintian() {
  local out tags tag
  # --fail-on error: warnings are reported, errors fail. Root is fine: lintian only reads.
  out=$(lintian --fail-on error --allow-root --tag-display-limit 0 "$DEB" 2>&1) || {
    echo "$out" >&2
    die "lintian reported errors"
  }
  [[ -n $out ]] && echo "$out" >&2
  tags=$(sed -nE 's/^[WI]: camstream[^:]*: ([a-z0-9-]+).*/\1/p' <<<"$out" | sort -u)
  for tag in $tags; do
    grep -qF "\`$tag\`" "$ROOT/docs/packaging.md" ||
      die "lintian tag $tag is not explained in docs/packaging.md"
  done
  pass "lintian: no errors; explained tags: ${tags:-none}"
}

# Starts `camstream` as the camstream user (through PREFIX, e.g. "chroot DIR"), waits until its
# RTSP stream reads as h264 at 320x240 from this side, then stops it with SIGTERM.
serve_and_probe() {
  local where=$1; shift
  local rtsp http log
  rtsp=$(free_port)
  http=$(free_port)
  log=$WORK/daemon-$where.log
  # setpriv execs (no forking wrapper), so the signal and the exit status are camstream's own.
  "$@" setpriv --reuid=camstream --regid=camstream --init-groups --reset-env -- \
      /usr/bin/camstream --config /etc/camstream/camstream.toml \
      --source test --width 320 --height 240 --fps 15 --encoder x264 \
      --rtsp-address 127.0.0.1 --rtsp-port "$rtsp" --http-port "$http" \
      --set http.address=127.0.0.1 >"$log" 2>&1 &
  DAEMON_PID=$!
  local deadline=$((SECONDS + 60)) code=
  until [[ $code == 200 ]]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$http/readyz" || true)
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$log" >&2; die "$where: camstream exited early"; }
    ((SECONDS < deadline)) || { tail -n 40 "$log" >&2; die "$where: not ready within 60 s"; }
    [[ $code == 200 ]] || sleep 0.5
  done
  local out
  out=$(timeout 60 ffprobe -v error -rtsp_transport tcp -timeout 30000000 -select_streams v:0 \
      -show_entries stream=codec_name,width,height -of csv=p=0 "rtsp://127.0.0.1:$rtsp/video" 2>&1) || true
  [[ $out == "h264,320,240" ]] || { tail -n 40 "$log" >&2; die "$where: ffprobe read '$out', not h264,320,240"; }
  grep -q 'TEST PATTERN' "$log" || die "$where: the daemon did not say it streams a test pattern"
  kill -TERM "$DAEMON_PID"
  local rc=0
  timeout 20 tail --pid="$DAEMON_PID" -f /dev/null || die "$where: camstream ignored SIGTERM for 20 s"
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  ((rc == 0)) || { tail -n 20 "$log" >&2; die "$where: camstream exited with $rc after SIGTERM"; }
  pass "$where: camstream as user camstream served h264 320x240 (ffprobe), exited 0 on SIGTERM"
}

# --- 3. bookworm (this machine) ---------------------------------------------------------
on_bookworm() {
  if dpkg-query -W camstream >/dev/null 2>&1; then
    apt-get purge -y -q camstream >/dev/null
  fi
  local out before
  before=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}' | sort)
  # As a user would: Recommends included (apt's default).
  out=$(apt-get install -y "$DEB" 2>&1) || { echo "$out" >&2; die "apt-get install failed"; }
  pass "apt-get install ./$(basename "$DEB") resolved its dependencies and recommends"

  getent passwd camstream | awk -F: '$3 < 1000 {ok=1} END {exit !ok}' || die "camstream is not a system user"
  id -nG camstream | tr ' ' '\n' | grep -qx video || die "camstream is not in the video group"
  [[ $(stat -c %U /var/lib/camstream) == camstream ]] || die "/var/lib/camstream is not owned by camstream"
  [[ -x /usr/bin/camstream ]] || die "/usr/bin/camstream missing"
  pass "account camstream (system, video group), /var/lib/camstream"

  setpriv --reuid=camstream --regid=camstream --init-groups --reset-env -- /usr/bin/camstream check --config /etc/camstream/camstream.toml \
      --source test --width 320 --height 240 --encoder x264 >"$WORK/check-bookworm.log" 2>&1 ||
    { cat "$WORK/check-bookworm.log" >&2; die "camstream check failed as camstream"; }
  pass "camstream check as camstream"

  serve_and_probe bookworm

  # The postinst must be idempotent and a reinstall must keep the operator's config.
  echo '# edited by the operator' >>/etc/camstream/camstream.toml
  dpkg -i "$DEB" >/dev/null 2>&1 || die "reinstall failed"
  grep -q 'edited by the operator' /etc/camstream/camstream.toml || die "reinstall replaced the edited conffile"
  pass "reinstall: postinst idempotent, edited conffile kept"

  local files
  files=$(dpkg -L camstream | while read -r f; do [[ -f $f ]] && echo "$f"; done)
  mkdir -p /var/lib/camstream/recordings && echo data >/var/lib/camstream/recordings/keep.mkv
  apt-get remove -y -q camstream >/dev/null
  [[ ! -e /usr/bin/camstream ]] || die "remove left /usr/bin/camstream"
  [[ -f /etc/camstream/camstream.toml ]] || die "remove deleted the config"
  [[ -f /var/lib/camstream/recordings/keep.mkv ]] || die "remove deleted recordings"
  pass "remove: binary gone, config and recordings kept"

  # --autoremove, as a user cleaning up would: the Recommends apt pulled in go too.
  apt-get purge --autoremove -y -q camstream >/dev/null
  local added
  added=$(comm -13 <(echo "$before") \
    <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}' | sort))
  [[ -z $added ]] || die "purge --autoremove left packages the install added: $added"
  local left=()
  while read -r f; do [[ -e $f ]] && left+=("$f"); done <<<"$files"
  ((${#left[@]} == 0)) || die "purge left packaged files: ${left[*]}"
  [[ ! -e /etc/camstream && ! -e /var/lib/camstream ]] || die "purge left /etc/camstream or /var/lib/camstream"
  dpkg-query -W -f='${Status}' camstream 2>/dev/null | grep -q 'not-installed' ||
    ! dpkg-query -W camstream >/dev/null 2>&1 || die "dpkg still lists camstream after purge"
  pass "purge: no packaged file, config or state left (the system account stays, as policy advises)"
}

# --- 4. trixie root ---------------------------------------------------------------------
on_trixie() {
  # The same root the image tests check libcamerasrc in: made once, reused.
  bash "$ROOT/scripts/trixie-root.sh" || die "could not make the trixie root"
  local m
  for m in proc dev dev/pts sys; do
    mountpoint -q "$TRIXIE_ROOT/$m" && continue
    case $m in
      proc) mount -t proc proc "$TRIXIE_ROOT/proc" ;;
      *) mount --bind "/$m" "$TRIXIE_ROOT/$m" ;;
    esac
    MOUNTED=("$TRIXIE_ROOT/$m" "${MOUNTED[@]}")
  done
  cp /etc/resolv.conf "$TRIXIE_ROOT/etc/resolv.conf"
  cp "$DEB" "$TRIXIE_ROOT/tmp/"
  local in_root=(chroot "$TRIXIE_ROOT")
  "${in_root[@]}" apt-get update -q >/dev/null
  local out
  out=$("${in_root[@]}" apt-get install -y "/tmp/$(basename "$DEB")" 2>&1) ||
    { echo "$out" >&2; die "trixie: apt-get install failed"; }
  local gst
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
  gst=$("${in_root[@]}" dpkg-query -W -f='${Version}' libgstreamer1.0-0)
  pass "trixie: apt-get install resolved every dependency (GStreamer $gst)"
  "${in_root[@]}" setpriv --reuid=camstream --regid=camstream --init-groups --reset-env -- /usr/bin/camstream check --config /etc/camstream/camstream.toml \
      --source test --width 320 --height 240 --encoder x264 >"$WORK/check-trixie.log" 2>&1 ||
    { cat "$WORK/check-trixie.log" >&2; die "trixie: camstream check failed"; }
  pass "trixie: camstream check as camstream"
  serve_and_probe trixie "${in_root[@]}"
  "${in_root[@]}" apt-get purge -y -q camstream >/dev/null
  [[ ! -e $TRIXIE_ROOT/usr/bin/camstream && ! -e $TRIXIE_ROOT/etc/camstream ]] || die "trixie: purge left files"
  pass "trixie: purge"
}

mkdir -p "$WORK"
install_tools
build_and_inspect
run_lintian
on_bookworm
[[ ${SKIP_TRIXIE:-0} == 1 ]] || on_trixie
deb_log "PASS: Debian package verified ($((SECONDS - START)) s)"
