#!/usr/bin/env bash
# Creates target/onvif-venv with the ONVIF clients tests/onvif.rs drives: onvif-zeep (device and
# media services over SOAP) and WSDiscovery (WS-Discovery probes), and target/onvif-ha-venv with
# onvif-zeep-async, Home Assistant's ONVIF library (its own venv: both install a package named
# `onvif`; its WSDL files ship in the package, so it runs offline). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/onvif-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onvif, zeep, wsdiscovery' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onvif-zeep==0.2.12 zeep==4.3.3 WSDiscovery==2.1.2
fi
ha="$root/target/onvif-ha-venv"
if [ ! -x "$ha/bin/python" ] || ! "$ha/bin/python" -c 'import onvif.client' 2>/dev/null; then
  python3 -m venv "$ha"
  "$ha/bin/pip" install -q onvif-zeep-async==4.3.0
fi
