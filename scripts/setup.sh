#!/usr/bin/env bash
# Installs everything camstream needs to build, run and be tested on Debian 12 or Raspberry Pi
# OS: the GStreamer development files and plugins, ffmpeg (ffprobe), and promtool. Idempotent.
set -euo pipefail

packages=(
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  # rtspclientsink, for RTSP pushes (docs/push.md).
  gstreamer1.0-rtsp
  # clockoverlay for [image] overlay, and v4l2-ctl to read a V4L2 camera's controls
  # (docs/image.md).
  gstreamer1.0-x v4l-utils
  # DTLS for WebRTC (str0m's openssl backend, docs/web.md).
  libssl-dev
  # Audio (issue #24, docs/audio.md): alsasrc and pulsesrc; opusenc is in plugins-base,
  # avenc_aac in gstreamer1.0-libav (voaacenc in plugins-bad) above.
  gstreamer1.0-alsa gstreamer1.0-pulseaudio
)
if [ "${1:-}" = "--test" ]; then
  # Real clients and checkers the test suite drives.
  packages+=(ffmpeg prometheus curl openssl procps)
  # Recording tests: a size-limited tmpfs (mount), playback in headless Chromium driven over
  # CDP from a venv (tests/recording/setup-venv.sh).
  packages+=(chromium python3-venv mount)
  # Real servers the push tests publish to: nginx-rtmp, and an SRT listener.
  packages+=(nginx libnginx-mod-rtmp srt-tools)
  # Image tests: a Debian 13 root whose libcamerasrc (libcamera 0.4) the generated properties
  # are checked against (scripts/trixie-root.sh).
  packages+=(debootstrap)
  # MQTT tests (tests/mqtt.rs; issue #25, branch events): a real broker and its clients.
  packages+=(mosquitto mosquitto-clients)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs or Debian's cargo) and rerun" >&2
  exit 1
fi
if [ "${1:-}" = "--test" ]; then
  bash "$(dirname "$0")/../tests/recording/setup-venv.sh"
  # ONVIF clients (onvif-zeep, WSDiscovery) for tests/onvif.rs.
  bash "$(dirname "$0")/../tests/onvif/setup-venv.sh"
  # HLS (issue #28): hls.js from npm, pinned, for tests/hls.rs. The machine's Node.js may bring
  # its own npm (NodeSource's conflicts with Debian's package): install Debian's only if none.
  if ! command -v npm >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  bash "$(dirname "$0")/../tests/hls/setup-hlsjs.sh"
fi
