#!/usr/bin/env bash
# Makes (or reuses) a minimal Debian 13 "trixie" root at target/trixie-root and installs the
# packages given as arguments inside it, e.g.
#   scripts/trixie-root.sh gstreamer1.0-tools gstreamer1.0-libcamera
# Idempotent: an existing root is reused and only missing packages are installed. /proc, /sys
# and /dev are mounted only while apt runs and unmounted again, so the root stays a plain
# directory that other checks (the Debian package tests) can chroot into.
# Needs root and debootstrap (scripts/setup.sh --test installs it).
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)/target/trixie-root"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$(id -u)" -ne 0 ]; then
  echo "trixie-root: must run as root (debootstrap and chroot)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "trixie-root: debootstrap is not installed (scripts/setup.sh --test installs it)" >&2
  exit 1
fi

mkdir -p "$(dirname "$root_dir")"
# One run at a time: tests of several binaries may ask for the root in parallel.
exec 9>"$(dirname "$root_dir")/trixie-root.lock"
flock -w 900 9 || { echo "trixie-root: another run holds the lock" >&2; exit 1; }

# A root is reused when its apt-get exists (the same test as deploy/deb/verify.sh, which reuses
# this root for the package checks).
if [ ! -x "$root_dir/usr/bin/apt-get" ]; then
  echo "trixie-root: creating $root_dir (debootstrap --variant=minbase trixie)"
  rm -rf "$root_dir"
  if [ -z "${DEBIAN_MIRROR:-}" ]; then
    from_sources=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    mirror=${from_sources:-$mirror}
  fi
  timeout 900 debootstrap --variant=minbase trixie "$root_dir" "$mirror" >"$root_dir.debootstrap.log" 2>&1 || {
    echo "trixie-root: debootstrap failed; log: $root_dir.debootstrap.log" >&2
    tail -20 "$root_dir.debootstrap.log" >&2
    exit 1
  }
fi

[ $# -eq 0 ] && exit 0

missing=()
for p in "$@"; do
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
  chroot "$root_dir" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
  if ! mountpoint -q "$root_dir/$fs"; then
    case $fs in
      proc) mount -t proc proc "$root_dir/proc" ;;
      sys) mount -t sysfs sys "$root_dir/sys" ;;
      *) mount --bind "/$fs" "$root_dir/$fs" ;;
    esac
    mounted+=("$root_dir/$fs")
  fi
done
cp -L /etc/resolv.conf "$root_dir/etc/resolv.conf" 2>/dev/null || true
echo "trixie-root: installing ${missing[*]}"
# The package checks may run apt in the same root: wait for its lock rather than fail.
apt=(chroot "$root_dir" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
"${apt[@]}" update -qq
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
chroot "$root_dir" apt-get clean
