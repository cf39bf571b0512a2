#!/usr/bin/env python3
"""Writes deploy/grafana/camstream.json (the Grafana dashboard) and, for checking,
target/grafana-exprs.rules.yaml: every panel expression wrapped as a recording rule, with the
dashboard variables replaced by matchers promtool accepts. `generate.py --check` fails when the
committed dashboard differs from what this script writes (deploy/verify.sh runs it, then
`promtool check rules` on the wrapped expressions; tests/operations.rs checks every series name
against a running daemon's /metrics)."""
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "camstream.json"

SEL = 'job=~"$job", instance=~"$instance"'
SSEL = SEL + ', stream=~"$stream"'

panels = []
_id = [0]


def row(title, y, repeat=None):
    _id[0] += 1
    r = {"type": "row", "title": title, "id": _id[0], "collapsed": False,
         "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}
    if repeat:
        # One row per selected value of the variable: a section per stream.
        r["repeat"] = repeat
    panels.append(r)


def panel(title, targets, x, y, w=8, h=8, unit="short", kind="timeseries", description=""):
    _id[0] += 1
    p = {
        "type": kind,
        "title": title,
        "id": _id[0],
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    panels.append(p)


# Fleet: every instance the variables select.
row("Fleet", 0)
panel("Cameras streaming", [(f'sum(camstream_pipeline_state{{{SEL}, state="streaming"}})', "streaming")],
      0, 1, w=4, h=4, kind="stat")
panel("Cameras not streaming", [(f'sum(camstream_pipeline_state{{{SEL}, state!="streaming"}})', "down")],
      4, 1, w=4, h=4, kind="stat")
panel("Instances up", [(f'sum(up{{{SEL}}})', "up")], 8, 1, w=4, h=4, kind="stat")
panel("Viewers (all)", [(f'sum(camstream_viewers_active{{{SEL}}}) + sum(camstream_webrtc_viewers{{{SEL}}} or vector(0))', "viewers")],
      12, 1, w=4, h=4, kind="stat")
panel("Restarts in the last hour", [(f'sum(increase(camstream_pipeline_restarts_total{{{SEL}}}[1h]))', "restarts")],
      16, 1, w=4, h=4, kind="stat")
panel("Auth failures / min", [(f'sum(rate(camstream_auth_failures_total{{{SEL}}}[5m])) * 60', "failures")],
      20, 1, w=4, h=4, kind="stat")
panel("Frame rate by instance", [(f'min by (instance) (camstream_frames_per_second{{{SEL}}})', "{{instance}}")],
      0, 5, unit="fps")
panel("Restarts by instance (15 min)", [(f'sum by (instance) (increase(camstream_pipeline_restarts_total{{{SEL}}}[15m]))', "{{instance}}")],
      8, 5)
panel("CPU by instance", [(f'rate(process_cpu_seconds_total{{{SEL}}}[1m])', "{{instance}}")],
      16, 5, unit="percentunit", description="CPU seconds per second: 1.0 is one core.")

# Per stream.
row("Stream $stream", 13, repeat="stream")
panel("Frame rate", [(f'camstream_frames_per_second{{{SSEL}}}', "{{instance}} {{stream}}")], 0, 14, unit="fps")
panel("Bitrate", [(f'rate(camstream_encoded_bytes_total{{{SSEL}}}[1m]) * 8', "{{instance}} {{stream}}")],
      8, 14, unit="bps")
panel("Restarts by reason", [(f'sum by (instance, stream, reason) (increase(camstream_pipeline_restarts_total{{{SSEL}}}[5m]))', "{{instance}} {{stream}} {{reason}}")],
      16, 14)
panel("Viewers by output", [
    (f'camstream_viewers_active{{{SSEL}}}', "{{instance}} {{stream}} rtsp"),
    (f'camstream_webrtc_viewers{{{SSEL}}}', "{{instance}} {{stream}} webrtc"),
], 0, 22)
panel("Dropped buffers by output", [(f'sum by (instance, stream, output) (rate(camstream_output_dropped_buffers_total{{{SSEL}}}[5m]))', "{{instance}} {{stream}} {{output}}")],
      8, 22, unit="pps", description="Frames an output's queue dropped because the output fell behind.")
panel("Last frame age", [(f'camstream_last_frame_age_seconds{{{SSEL}}}', "{{instance}} {{stream}}")], 16, 22, unit="s")
panel("Recording disk free", [(f'camstream_recording_disk_free_bytes{{{SSEL}}}', "{{instance}} {{stream}}")],
      0, 30, unit="bytes")
panel("Recording write rate", [(f'rate(camstream_recording_bytes_total{{{SSEL}}}[5m])', "{{instance}} {{stream}}")],
      8, 30, unit="Bps")
panel("Recording reaches back", [(f'camstream_recording_oldest_age_seconds{{{SSEL}}}', "{{instance}} {{stream}}")],
      16, 30, unit="s")
panel("Push state", [(f'max by (instance, stream, output, state) (camstream_output_state{{{SSEL}}}) == 1', "{{instance}} {{output}} {{state}}")],
      0, 38, kind="table", description="Each push's current state (streaming, starting, backoff, stopped, disabled).")
panel("Memory (resident)", [(f'process_resident_memory_bytes{{{SEL}}}', "{{instance}}")], 8, 38, unit="bytes")
panel("CPU", [(f'rate(process_cpu_seconds_total{{{SEL}}}[1m])', "{{instance}}")], 16, 38, unit="percentunit")


def var(name, label, query, multi=True):
    return {
        "name": name, "label": label, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query, "refresh": 2, "multi": multi, "includeAll": True,
        "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


dashboard = {
    "title": "camstream",
    "uid": "camstream",
    "description": "camstream cameras: a fleet overview and each stream's frame rate, bitrate, restarts, viewers, recording and pushes.",
    "tags": ["camstream", "camera"],
    "timezone": "",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        var("job", "Job", "label_values(camstream_build_info, job)"),
        var("instance", "Instance", 'label_values(camstream_build_info{job=~"$job"}, instance)'),
        var("stream", "Stream", 'label_values(camstream_stream_info{job=~"$job", instance=~"$instance"}, stream)'),
    ]},
    "annotations": {"list": []},
    "panels": panels,
}

text = json.dumps(dashboard, indent=2) + "\n"


def expressions(d):
    """Every PromQL expression in a dashboard: panel targets and variable queries."""
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*), *\w+\)", v.get("definition", ""))
        if m:
            out.append(m.group(1))
    return out


def as_rules(d):
    """The expressions as a rule file promtool can check: variables become plain matchers."""
    lines = ["groups:", "  - name: camstream-dashboard", "    rules:"]
    for i, e in enumerate(expressions(d)):
        e = e.replace("$__rate_interval", "1m")
        e = re.sub(r"\$\w+", "x", e)
        lines.append(f"      - record: camstream_dashboard:expr{i}")
        lines.append(f"        expr: {json.dumps(e)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    rules = HERE.parent.parent / "target" / "grafana-exprs.rules.yaml"
    rules.parent.mkdir(exist_ok=True)
    rules.write_text(as_rules(dashboard))
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run deploy/grafana/generate.py")
        print(f"{OUT.name} is current; {len(expressions(dashboard))} expressions in {rules}")
    else:
        OUT.write_text(text)
        print(f"wrote {OUT} and {rules}")
