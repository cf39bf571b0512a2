#!/usr/bin/env bash
# Creates target/recording-venv with websocket-client, which tests/recording/play.py uses to
# drive headless Chromium over CDP. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/recording-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websocket' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q websocket-client
fi
