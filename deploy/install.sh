#!/usr/bin/env bash
# Bare-metal install of camstream: binary, systemd unit, default config.
#
# Safe to run again (upgrades): the binary and unit are replaced, an existing
# /etc/camstream/camstream.toml is never touched. Nothing is enabled or started; the script
# prints the commands for that.
#
# Environment:
#   PREFIX          install prefix for the binary and docs (default /usr/local)
#   DESTDIR         staging root for packaging (default empty: the live system)
#   SYSCONFDIR      config root (default /etc)
#   UNITDIR         systemd unit directory (default $SYSCONFDIR/systemd/system)
#   CAMSTREAM_BIN   binary to install (default <repo>/target/release/camstream)
#   CAMSTREAM_CONFIG  default config to install (default <repo>/config/camstream.toml)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-$SYSCONFDIR/systemd/system}
BIN=${CAMSTREAM_BIN:-$ROOT/target/release/camstream}
CONFIG=${CAMSTREAM_CONFIG:-$ROOT/config/camstream.toml}
UNIT_SRC=$ROOT/deploy/systemd/camstream.service

die() { echo "install.sh: $*" >&2; exit 1; }

[[ $PREFIX == /* ]] || die "PREFIX must be absolute, got '$PREFIX'"
[[ -x $BIN ]] || die "no executable at $BIN; build it with 'cargo build --release' or set CAMSTREAM_BIN"
[[ -f $CONFIG ]] || die "no default config at $CONFIG; set CAMSTREAM_CONFIG"
[[ -f $UNIT_SRC ]] || die "missing $UNIT_SRC"

bindir=$PREFIX/bin
docdir=$PREFIX/share/doc/camstream
confdir=$SYSCONFDIR/camstream

install -D -m 0755 "$BIN" "$DESTDIR$bindir/camstream"

# The unit names /usr/local paths; follow PREFIX and SYSCONFDIR so ExecStart finds the binary.
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed -e "s#/usr/local/bin/camstream#$bindir/camstream#g" \
    -e "s#/usr/local/share/doc/camstream#$docdir#g" \
    -e "s#/etc/camstream/#$confdir/#g" \
    "$UNIT_SRC" >"$unit_tmp"
install -D -m 0644 "$unit_tmp" "$DESTDIR$UNITDIR/camstream.service"

if [[ -f $ROOT/docs/deployment.md ]]; then
  install -D -m 0644 "$ROOT/docs/deployment.md" "$DESTDIR$docdir/deployment.md"
fi

# Root-owned and world-readable: the service runs as a dynamic user that must read it.
# Credentials go in camstream.env (root-only; systemd reads it before dropping privileges).
install -d -m 0755 "$DESTDIR$confdir"
if [[ -e $DESTDIR$confdir/camstream.toml ]]; then
  echo "keeping existing $DESTDIR$confdir/camstream.toml"
else
  install -m 0644 "$CONFIG" "$DESTDIR$confdir/camstream.toml"
  echo "installed default config $DESTDIR$confdir/camstream.toml"
fi

if [[ -z $DESTDIR && -d /run/systemd/system ]]; then
  systemctl daemon-reload
  if systemctl is-active --quiet camstream.service; then
    echo "camstream is running the old binary: systemctl restart camstream"
  else
    echo "start it with: systemctl enable --now camstream"
  fi
fi
echo "installed camstream to $DESTDIR$bindir/camstream"
