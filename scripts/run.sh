#!/usr/bin/env bash
# Builds camstream and runs it at rtsp://127.0.0.1:8554/video. With no camera on this machine it
# streams a TEST PATTERN and says so. Extra arguments go to camstream (e.g. --width 640).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release

source_args=()
if ! ls /dev/video* /dev/media* >/dev/null 2>&1; then
  cat >&2 <<'BANNER'
================================================================================
  No camera found on this machine (no /dev/video*, no /dev/media*).
  Streaming a TEST PATTERN instead, at rtsp://127.0.0.1:8554/video
  Open it with:  ffplay -rtsp_transport tcp rtsp://127.0.0.1:8554/video
================================================================================
BANNER
  source_args=(--source test)
fi
exec ./target/release/camstream "${source_args[@]}" "$@"
