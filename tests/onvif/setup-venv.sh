#!/usr/bin/env bash
# Creates target/onvif-venv with the ONVIF clients tests/onvif.rs drives: onvif-zeep (device and
# media services over SOAP) and WSDiscovery (WS-Discovery probes). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/onvif-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onvif, zeep, wsdiscovery' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onvif-zeep==0.2.12 zeep==4.3.3 WSDiscovery==2.1.2
fi
