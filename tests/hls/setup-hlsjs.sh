#!/usr/bin/env bash
# Puts hls.js (pinned) at target/hlsjs/hls.min.js for tests/hls.rs: the test serves it from its
# own loopback fixture server, never from a CDN, and the daemon never serves it. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="1.7.4"
dir="$root/target/hlsjs"
if [ -s "$dir/hls.min.js" ] && [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "hls.js@$version" >/dev/null)
tar -xzf "$tmp/hls.js-$version.tgz" -C "$tmp" package/dist/hls.min.js
cp "$tmp/package/dist/hls.min.js" "$dir/hls.min.js"
echo "$version" > "$dir/VERSION"
