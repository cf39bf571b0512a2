#!/usr/bin/env python3
"""Plays camstream's low-latency HLS with hls.js in headless Chromium and prints one JSON object.

hls.js (pinned, target/hlsjs/hls.min.js from tests/hls/setup-hlsjs.sh) and the page are served
by a fixture server of this script on loopback, never from a CDN; the daemon serves only the
playlists and media. The page sits on its own origin, so Chromium runs with web security off
for this profile (the daemon sends no CORS headers; a real deployment serves the page and the
playlist from one origin).

Usage:
  hlsjs.py --page PAGE_URL STREAM [--seconds S]
      The daemon's page (WebRTC off): its player must fall back to native HLS and play.
  hlsjs.py PLAYLIST_URL [--seconds S] [--auth 'Basic ...'] [--stamp]
      Plays PLAYLIST_URL for S seconds (default 8) after the first frame and reports decoded
      frames per second (getVideoPlaybackQuality and requestVideoFrameCallback), hls.js's
      latency, fatal errors; with --stamp also glass-to-glass latency samples read from the clock
      painted into the frames (benches/camstream/stamp.rs).

Every wait is bounded; only the Chromium process started here is ended."""
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "webrtc"))
import browser  # noqa: E402  (the CDP driver the WebRTC tests use)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HLSJS = os.path.join(ROOT, "target", "hlsjs", "hls.min.js")

PAGE = """<!doctype html><html><body style="margin:0">
<video id="v" muted autoplay playsinline style="width:1024px"></video>
<script src="/hls.min.js"></script>
<script>
window.__errors = []; window.__rvfc = 0; window.__first = null;
const v = document.getElementById('v');
// An on-demand muxer's first playlist waits for three segments (three GOPs): more than
// hls.js's default 10 s manifest timeout allows on a loaded machine with long GOPs.
const hls = new Hls({lowLatencyMode: true, manifestLoadingTimeOut: 30000, xhrSetup: (xhr) => {
  if (window.__auth) xhr.setRequestHeader('Authorization', window.__auth);
}});
window.__hls = hls;
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.__errors.push(d.type + ':' + d.details); });
const count = () => { window.__rvfc++; if (!window.__first) window.__first = performance.now(); v.requestVideoFrameCallback(count); };
v.requestVideoFrameCallback(count);
window.start = (url, auth) => { window.__auth = auth; hls.loadSource(url); hls.attachMedia(v); };
</script></body></html>"""


class Fixture(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            body, kind = PAGE.encode(), "text/html"
        elif self.path == "/hls.min.js":
            with open(HLSJS, "rb") as f:
                body, kind = f.read(), "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


STAMP_JS = r"""
(() => {
  const v = document.getElementById('v'), c = document.createElement('canvas');
  c.width = 1024; c.height = 32;
  const g = c.getContext('2d', { willReadFrequently: true });
  window.__lat = []; window.__unreadable = 0;
  const onFrame = (now, meta) => {
    g.drawImage(v, 0, 0, 1024, 32, 0, 0, 1024, 32);
    const d = g.getImageData(0, 0, 1024, 32).data;
    const bit = (row, i) => {
      let sum = 0;
      for (let y = row * 16 + 4; y < row * 16 + 12; y++)
        for (let x = i * 16 + 4; x < i * 16 + 12; x++) {
          const o = (y * 1024 + x) * 4; sum += d[o] + d[o + 1] + d[o + 2];
        }
      return sum / 192 > 128 ? 1n : 0n;
    };
    let a = 0n, ok = true;
    for (let i = 0; i < 64; i++) { const b0 = bit(0, i); if (b0 === bit(1, i)) { ok = false; break; } a = (a << 1n) | b0; }
    if (ok) window.__lat.push(performance.timeOrigin + meta.presentationTime - Number(a) / 1000);
    else window.__unreadable++;
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  return true;
})()
"""


def cmd_page(args):
    """The daemon's own page with WebRTC off: its player falls back to the browser's native HLS
    (no hls.js) and must show moving video, not snapshots."""
    url, stream = args[1], args[2]
    seconds = float(browser.opt(args, "--seconds", 5))
    result = {"ok": False, "error": None}
    b = browser.Browser()
    try:
        tab = b.first_tab()
        browser.open_page(tab, url)
        probe = browser.probe(stream)
        deadline = time.time() + 30
        last = None
        while time.time() < deadline:
            last = tab.eval(probe)
            if last and last["mode"] == "snapshot":
                break
            if last and last["mode"] == "hls" and last["frames"] > 0:
                break
            tab.pump(0.2)
        result["first"] = last
        if not last or last["mode"] != "hls" or last["frames"] == 0:
            raise RuntimeError("the page did not play HLS: %s" % json.dumps(last))
        tab.pump(1)
        a = tab.eval(probe)
        tab.pump(seconds)
        z = tab.eval(probe)
        dt = (z["now"] - a["now"]) / 1000.0
        result["fps_decoded"] = round((z["frames"] - a["frames"]) / dt, 2)
        result["advanced_s"] = round(z["t"] - a["t"], 3)
        result["overlay"] = tab.eval("window.camstream.players[%s].overlay.textContent" % json.dumps(stream))
        result["console_errors"] = tab.errors
        result["ok"] = True
    except Exception as e:  # reported, not hidden: the test prints it
        result["error"] = f"driver: {e}"
    finally:
        b.close()
    print(json.dumps(result))


def main(args):
    if args[0] == "--page":
        return cmd_page(args)
    url = args[0]
    seconds = float(browser.opt(args, "--seconds", 8))
    auth = browser.opt(args, "--auth", None)
    result = {"ok": False, "error": None}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{server.server_address[1]}/"
    b = browser.Browser(extra=("--disable-web-security",))
    try:
        tab = b.first_tab()
        tab.call("Runtime.enable")
        tab.call("Page.enable")
        tab.call("Page.navigate", url=page)
        deadline = time.time() + 15
        while not tab.eval("typeof window.start === 'function'"):
            if time.time() > deadline:
                raise RuntimeError("the fixture page did not load")
            tab.pump(0.2)
        t0 = time.time()
        tab.eval("window.start(%s, %s)" % (json.dumps(url), json.dumps(auth)))
        deadline = time.time() + 30
        while not tab.eval("window.__first !== null"):
            errs = tab.eval("window.__errors")
            if errs or time.time() > deadline:
                raise RuntimeError("no frame: %s" % json.dumps(errs))
            tab.pump(0.1)
        result["first_frame_s"] = round(time.time() - t0, 3)
        tab.pump(2)  # past the start's catch-up
        if "--stamp" in args:
            tab.eval(STAMP_JS)
        q0 = tab.eval("[v.getVideoPlaybackQuality().totalVideoFrames, window.__rvfc, performance.now()]")
        tab.pump(seconds)
        q1 = tab.eval("[v.getVideoPlaybackQuality().totalVideoFrames, v.getVideoPlaybackQuality().droppedVideoFrames, window.__rvfc, performance.now()]")
        dt = (q1[3] - q0[2]) / 1000.0
        result["fps_decoded"] = round((q1[0] - q0[0]) / dt, 2)
        result["fps_presented"] = round((q1[2] - q0[1]) / dt, 2)
        result["dropped"] = q1[1]
        result["hls_latency_s"] = tab.eval("window.__hls.latency")
        result["levels"] = tab.eval("window.__hls.levels.length")
        result["fatal_errors"] = tab.eval("window.__errors")
        if "--stamp" in args:
            result["latencies_ms"] = tab.eval("window.__lat")
            result["unreadable"] = tab.eval("window.__unreadable")
        result["console_errors"] = tab.errors
        result["ok"] = not result["fatal_errors"]
    except Exception as e:  # reported, not hidden: the test prints it
        result["error"] = f"driver: {e}"
    finally:
        b.close()
        server.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
