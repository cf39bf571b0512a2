#!/usr/bin/env python3
"""Drives headless Chromium (Debian's) over raw CDP against camstream's web page and prints one
JSON object. Loopback only: Chromium is started with --allow-loopback-in-peer-connection and
given a media permission for the page's origin, so it offers 127.0.0.1 host candidates, and
camstream's ICE-lite server answers on 127.0.0.1.

Usage:
  browser.py play URL STREAM[,STREAM...] [--seconds S] [--screenshot PNG] [--kill] [--fallback] [--mobile]
      Opens URL, waits for STREAM's player to show WebRTC video, then measures decoded frames and
      currentTime over S seconds (default 5); further streams named must play too. With --kill the browser is SIGKILLed at the end
      (a tab that goes away without a WHEP DELETE). With --fallback the player is expected to
      have fallen back to refreshed snapshots (WebRTC off or failing).
  browser.py tabs URL STREAM N [--seconds S]
      Opens N tabs on URL (a /view/ page), waits until all play, measures each over S seconds.
  browser.py recordings URL STREAM [--screenshot PNG]
      Opens the page, lists STREAM's recordings and plays the newest span in the card.
  browser.py image URL STREAM [--screenshot PNG]
      Mirrors STREAM with the page's Image form; reports the left edge's colour before and after.
  browser.py trend URL STREAM [--seconds S] [--recovered] [--screenshot PNG]
      Waits until STREAM's card draws an fps drop (and, with --recovered, the recovery) in its
      trend; reports the fps line's points.
  browser.py signin URL STREAM VIEWER:PW OPERATOR:PW [--brightness B] [--screenshot PNG]
      The page's sign-in: the form for anonymous, a viewer plays with no controls, sign-out,
      an operator sets brightness B, then another origin (a page on another port) tries a PATCH,
      a no-cors POST and a form POST with the operator's cookie in the browser.
  browser.py latency URL STREAM [--seconds S]
      Reads the clock painted into the frames (benches' clockoverlay) from the decoded video and
      reports glass-to-glass latency samples.
  browser.py mjpeg URL PNG1 PNG2
      An <img> showing the MJPEG stream at URL; two screenshots a second apart (they differ).

Every wait is bounded; only the Chromium process started here is ended."""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websocket

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), "chromium")


class Browser:
    def __init__(self, extra=()):
        self.profile = tempfile.mkdtemp(prefix="camstream-webrtc-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--mute-audio",
             "--autoplay-policy=no-user-gesture-required",
             "--allow-loopback-in-peer-connection",
             # Keep background tabs rendering at full rate (the multi-tab check).
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows",
             "--window-size=1000,760", *extra,
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        time.sleep(0.2)
        self.port = int(open(port_file).read().split()[0])

    def targets(self):
        return json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5))

    def browser_ws(self):
        info = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/version", timeout=5))
        return Tab(info["webSocketDebuggerUrl"])

    def new_tab(self, url):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?" + urllib.parse.quote(url, safe=":/?&=#"), method="PUT")
        t = json.load(urllib.request.urlopen(req, timeout=10))
        return Tab(t["webSocketDebuggerUrl"])

    def first_tab(self):
        return Tab(next(t["webSocketDebuggerUrl"] for t in self.targets() if t["type"] == "page"))

    def close(self, kill=False):
        if self.proc.poll() is None:
            if kill:
                self.proc.send_signal(signal.SIGKILL)
            else:
                try:
                    self.browser_ws().call("Browser.close")
                except Exception:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        time.sleep(1)  # children may still write into the profile
        shutil.rmtree(self.profile, ignore_errors=True)


class Tab:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, suppress_origin=True, timeout=30)
        self.next = 0
        self.errors = []

    def _event(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")

    def call(self, method, **params):
        self.next += 1
        i = self.next
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds):
        """Reads events for a while (console errors arrive as events)."""
        end = time.time() + seconds
        self.ws.settimeout(0.1)
        try:
            while time.time() < end:
                try:
                    self._event(json.loads(self.ws.recv()))
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.ws.settimeout(30)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate: " + str(r["exceptionDetails"].get("text")))
        return r.get("result", {}).get("value")


def screenshot(tab, path, element=None):
    """Writes a PNG of the tab to path, first scrolling element (a JS expression) into view."""
    if element:
        tab.eval("%s.scrollIntoView({block: 'end'})" % element)
        tab.pump(0.5)
    png = tab.call("Page.captureScreenshot", format="png")["data"]
    with open(path, "wb") as f:
        f.write(base64.b64decode(png))


def probe(stream):
    s = json.dumps(stream)
    return ("(() => { const p = window.camstream && window.camstream.players[%s]; if (!p) return null; "
            "const v = p.video, q = v.getVideoPlaybackQuality(); "
            "return {mode: p.mode, error: p.error, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames, "
            "t: v.currentTime, w: v.videoWidth, h: v.videoHeight, now: performance.now(), timing: p.timing}; })()" % s)


def grant(browser, url):
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url))
    # With a media permission Chromium lists host candidates, 127.0.0.1 among them given
    # --allow-loopback-in-peer-connection.
    browser.browser_ws().call("Browser.grantPermissions", origin=origin,
                              permissions=["videoCapture", "audioCapture"])


def open_page(tab, url):
    tab.call("Runtime.enable")
    tab.call("Log.enable")
    tab.call("Page.enable")
    tab.call("Page.navigate", url=url)


def wait_playing(tab, stream, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = tab.eval(probe(stream))
        if last and last["mode"] == "snapshot":
            return last
        if last and last["mode"] == "webrtc" and last["frames"] > 0 and last["t"] > 0:
            return last
        tab.pump(0.2)
    return last


def measure(tabs, stream, seconds, window=None):
    a = [t.eval(probe(stream)) for t in tabs]
    if window is not None:
        window["start"] = time.time()
    for t in tabs:
        t.pump(seconds / len(tabs))
    if window is not None:
        window["end"] = time.time()
    b = [t.eval(probe(stream)) for t in tabs]
    out = []
    for x, y in zip(a, b):
        dt = (y["now"] - x["now"]) / 1000.0
        out.append({"fps": (y["frames"] - x["frames"]) / dt, "current_time_advance": y["t"] - x["t"],
                    "wall_s": dt, "frames": y["frames"], "dropped": y["dropped"] - x["dropped"],
                    "width": y["w"], "height": y["h"], "mode": y["mode"], "error": y["error"]})
    return out


def cmd_play(args, b, result):
    url, streams = args[0], args[1].split(",")
    stream = streams[0]
    seconds = float(opt(args, "--seconds", 5))
    shot = opt(args, "--screenshot", None)
    kill = "--kill" in args
    fallback = "--fallback" in args
    mobile = "--mobile" in args
    grant(b, url)
    tab = b.first_tab()
    if mobile:
        # A phone: 390 CSS pixels wide, touch, high density.
        tab.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                 deviceScaleFactor=2, mobile=True)
    open_page(tab, url)
    t0 = time.time()
    first = wait_playing(tab, stream, 25)
    result["first"] = first
    result["time_to_play_s"] = time.time() - t0
    if fallback:
        tab.pump(3)
        result["fallback"] = tab.eval(
            "(() => { const p = window.camstream.players[%s]; return {mode: p.mode, error: p.error, "
            "overlay: p.overlay.textContent, image_width: p.img.naturalWidth, image_shown: !p.img.hidden, "
            "video_shown: !p.video.hidden}; })()" % json.dumps(stream))
        result["ok"] = result["fallback"]["mode"] == "snapshot" and result["fallback"]["image_width"] > 0
    elif not first or first["mode"] != "webrtc":
        result["error"] = "no WebRTC video: %s" % json.dumps(first)
    else:
        # Every other stream named plays as well (its frame count grows).
        others = {}
        for other in streams[1:]:
            w = wait_playing(tab, other, 25)
            others[other] = {"mode": w and w["mode"], "frames_before": w and w["frames"]}
        result["measure"] = measure([tab], stream, seconds)[0]
        for other, o in others.items():
            o["frames_after"] = tab.eval(probe(other))["frames"]
        result["others"] = others
        # The candidate pair in use: which transport carried the media.
        result["pair"] = tab.eval(
            "(async () => { const pc = window.camstream.players[%s].pc; if (!pc) return null; "
            "const st = await pc.getStats(); let pair = null; "
            "st.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = st.get(r.selectedCandidatePairId); }); "
            "if (!pair) return null; const l = st.get(pair.localCandidateId), r = st.get(pair.remoteCandidateId); "
            "return {protocol: r.protocol, remote: r.address + ':' + r.port, remote_type: r.candidateType, "
            "local_type: l.candidateType, local_protocol: l.protocol}; })()" % json.dumps(stream))
        # Let the status table refresh at least once, for the screenshot.
        tab.pump(2.5)
        result["page"] = tab.eval("(() => { const c = document.querySelector('.card'); return c ? "
                                  "{state: c.querySelector('.state').textContent, viewers: c.querySelector('.viewers').textContent, "
                                  "fps: c.querySelector('.fps').textContent, encoder: c.querySelector('.encoder').textContent} : null; })()")
        result["ok"] = True
    # Nothing wider than the window (no sideways scrolling on a phone).
    result["overflow_px"] = tab.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if shot:
        screenshot(tab, shot)
    result["console_errors"] = tab.errors
    if not kill:
        # Close the tab as a person would: the page's pagehide handler sends the DELETE.
        tab.call("Page.close")
        time.sleep(0.5)


def cmd_tabs(args, b, result):
    url, stream, n = args[0], args[1], int(args[2])
    seconds = float(opt(args, "--seconds", 10))
    grant(b, url)
    tabs = [b.first_tab()]
    open_page(tabs[0], url)
    for _ in range(n - 1):
        t = b.new_tab("about:blank")
        open_page(t, url)
        tabs.append(t)
    states = [wait_playing(t, stream, 40) for t in tabs]
    result["modes"] = [s and s["mode"] for s in states]
    if all(s and s["mode"] == "webrtc" for s in states):
        tabs[0].pump(2)  # past the joins' transients
        window = {}
        result["tabs"] = measure(tabs, stream, seconds, window)
        result["window"] = window
        result["ok"] = True
    else:
        result["error"] = "not every tab plays WebRTC: %s" % json.dumps(states)
    result["console_errors"] = sum((t.errors for t in tabs), [])


# Reads the stamp benches/camstream/stamp.rs paints (64 16x16 blocks, then the inverted check
# row) from every frame as the compositor gets it, against this machine's wall clock.
STAMP_JS = r"""
(() => {
  const p = window.camstream.players[%s];
  const v = p.video, c = document.createElement('canvas');
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


def cmd_latency(args, b, result):
    url, stream = args[0], args[1]
    seconds = float(opt(args, "--seconds", 10))
    grant(b, url)
    tab = b.first_tab()
    open_page(tab, url)
    first = wait_playing(tab, stream, 25)
    if not first or first["mode"] != "webrtc":
        raise RuntimeError("no WebRTC video: %s" % json.dumps(first))
    tab.pump(2)  # past the join's transient
    tab.eval(STAMP_JS % json.dumps(stream))
    result["window"] = {"start": time.time()}
    tab.pump(seconds)
    result["window"]["end"] = time.time()
    result["latencies_ms"] = tab.eval("window.__lat")
    result["unreadable"] = tab.eval("window.__unreadable")
    result["ok"] = len(result["latencies_ms"]) > 0
    result["console_errors"] = tab.errors


def cmd_recordings(args, b, result):
    url, stream = args[0], args[1]
    shot = opt(args, "--screenshot", None)
    grant(b, url)
    tab = b.first_tab()
    open_page(tab, url)
    first = wait_playing(tab, stream, 25)
    result["live_mode"] = first and first["mode"]
    card = "document.querySelector('.card[data-stream=%s]')" % json.dumps(stream)
    deadline = time.time() + 10
    while time.time() < deadline and not tab.eval("(() => { const c = %s; return !!c && !c.querySelector('.recordings-button').hidden; })()" % card):
        tab.pump(0.2)
    tab.eval("%s.querySelector('.recordings-button').click()" % card)
    deadline = time.time() + 10
    links = 0
    while time.time() < deadline:
        links = tab.eval("%s.querySelectorAll('.spans a').length" % card)
        if links:
            break
        tab.pump(0.2)
    result["spans_listed"] = links
    if links:
        tab.eval("%s.querySelector('.spans a').click()" % card)
        deadline = time.time() + 30
        while time.time() < deadline:
            pb = tab.eval("(() => { const v = %s.querySelector('.playback'); return {t: v.currentTime, w: v.videoWidth, "
                          "e: v.error ? String(v.error.code) : null, src: v.currentSrc}; })()" % card)
            result["playback"] = pb
            if pb["e"] or pb["t"] >= 1.0:
                break
            tab.pump(0.25)
        result["ok"] = bool(result.get("playback")) and result["playback"]["t"] >= 1.0
    tab.pump(2.5)  # the status table's next refresh
    if shot:
        # The player below the card, in view.
        screenshot(tab, shot, "%s.querySelector('.playback')" % card)
    result["console_errors"] = tab.errors


PIXEL_JS = r"""
(() => {
  const v = window.camstream.players[%s].video;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(Math.floor(c.width * %s), Math.floor(c.height * 0.3), 1, 1).data;
  return [d[0], d[1], d[2]];
})()
"""


def cmd_image(args, b, result):
    """Mirrors STREAM through the page's Image form and reads the picture's left edge before
    and after, from the WebRTC video."""
    url, stream = args[0], args[1]
    shot = opt(args, "--screenshot", None)
    grant(b, url)
    tab = b.first_tab()
    open_page(tab, url)
    first = wait_playing(tab, stream, 25)
    if not first or first["mode"] != "webrtc":
        raise RuntimeError("no WebRTC video: %s" % json.dumps(first))
    s = json.dumps(stream)
    result["left_before"] = tab.eval(PIXEL_JS % (s, "0.05"))
    card = "document.querySelector('.card[data-stream=%s]')" % s
    tab.eval("%s.querySelector('.image-button').click()" % card)
    tab.eval("(() => { const f = %s.querySelector('form.image'); f.hflip.checked = true; "
             "f.querySelector('button[type=submit]').click(); })()" % card)
    deadline = time.time() + 15
    text = ""
    while time.time() < deadline:
        text = tab.eval("%s.querySelector('.image-result').textContent" % card)
        if text and text != "applying…":
            break
        tab.pump(0.2)
    result["result"] = text
    tab.pump(2)  # a few frames of the mirrored picture
    result["left_after"] = tab.eval(PIXEL_JS % (s, "0.05"))
    result["ok"] = text.startswith("applied")
    if shot:
        screenshot(tab, shot, "%s.querySelector('form.image')" % card)
    result["console_errors"] = tab.errors


def cmd_trend(args, b, result):
    """Opens the page and waits (at most --seconds, default 60) until STREAM's card draws an fps
    drop in its trend: a point in the upper half followed by one at the bottom (0 fps), then a
    recovery if --recovered. Reports the fps line's points (SVG units, y down)."""
    url, stream = args[0], args[1]
    shot = opt(args, "--screenshot", None)
    seconds = float(opt(args, "--seconds", "60"))
    tab = b.first_tab()
    open_page(tab, url)
    card = "document.querySelector('.card[data-stream=%s]')" % json.dumps(stream)
    read = ("(() => { const c = %s; if (!c) return null; const l = c.querySelector('polyline.trend-fps');"
            " if (!l) return null; return {points: l.getAttribute('points') || '', top: Number(l.dataset.top),"
            " height: window.camstreamTrend.height, label: c.querySelector('.trend-label').textContent}; })()" % card)
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        last = tab.eval(read)
        if last and last["points"]:
            pts = [tuple(map(float, p.split(","))) for p in last["points"].split()]
            h = last["height"]
            high = [i for i, (_, y) in enumerate(pts) if y <= h / 2]
            low = [i for i, (_, y) in enumerate(pts) if y >= h - 2.5]
            drop = next((j for j in low if high and j > high[0]), None)
            recovered = drop is not None and any(i > drop for i in high)
            if drop is not None and ("--recovered" not in args or recovered):
                result.update(ok=True, points=pts, drop_index=drop, recovered=recovered, top=last["top"],
                              label=last["label"])
                break
        tab.pump(0.5)
    else:
        result["last"] = last
    if shot:
        screenshot(tab, shot, card)
    result["console_errors"] = tab.errors


# --- signin (tests/signin.rs): the page's sign-in, roles and cross-site refusal --------------

def wait_js(tab, expr, timeout):
    """Polls a JS expression until it is truthy; a page being replaced (reload) is retried."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = tab.eval(expr)
            if v:
                return v
        except RuntimeError:
            pass
        tab.pump(0.2)
    return None


SIGNIN_FORM_SHOWN = "(() => { const f = document.getElementById('signin'); return !!f && !f.hidden; })()"


def sign_in(tab, user, password, role):
    tab.eval("(() => { const f = document.getElementById('signin'); f.hidden = false; f.username.value = %s; "
             "f.password.value = %s; f.requestSubmit(); return true; })()" % (json.dumps(user), json.dumps(password)))
    return wait_js(tab, "window.camstream && window.camstream.session() && window.camstream.session().role === %s"
                   % json.dumps(role), 15)


VISIBLE_CONTROLS = ("[...document.querySelectorAll('.controls button, form.image, form.live')]"
                    ".filter(e => e.offsetParent !== null).length")

# The other origin's page: what any web page open in the same browser could try.
ATTACK_HTML = """<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="%(cam)s/api/v1/streams/%(stream)s/keyframe">
<input name="x" value="y"></form>
<script>
window.results = {};
(async () => {
  const cam = %(cam)s_json;
  try {
    const r = await fetch(cam + '/api/v1/streams/%(stream)s', {method: 'PATCH', credentials: 'include',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({image: {brightness: -0.5}})});
    window.results.patch = 'status ' + r.status;
  } catch (e) { window.results.patch = 'blocked: ' + e.message; }
  try {
    const r = await fetch(cam + '/api/v1/streams/%(stream)s/keyframe', {method: 'POST', mode: 'no-cors',
      credentials: 'include', headers: {'Content-Type': 'text/plain'}, body: '{}'});
    window.results.post = 'sent (' + r.type + ')';
  } catch (e) { window.results.post = 'blocked: ' + e.message; }
  window.results.done = true;
})();
</script></body></html>"""


def attacker(cam, stream):
    """Serves ATTACK_HTML from another origin (another port on 127.0.0.1) in a thread."""
    import http.server
    import threading
    body = (ATTACK_HTML.replace("%(cam)s_json", json.dumps(cam)) % {"cam": cam, "stream": stream}).encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def cmd_signin(args, b, result):
    """Anonymous gets the form; a viewer signs in and plays with no controls; sign-out ends
    access; an operator changes brightness; another origin's requests are refused."""
    url, stream = args[0], args[1]
    viewer, operator = args[2].split(":", 1), args[3].split(":", 1)
    brightness = float(opt(args, "--brightness", 0.3))
    shot = opt(args, "--screenshot", None)
    grant(b, url)
    tab = b.first_tab()
    open_page(tab, url)
    shown = wait_js(tab, SIGNIN_FORM_SHOWN, 15)
    result["anonymous"] = {"form": bool(shown), "cards": tab.eval("document.querySelectorAll('.card').length"),
                           "session": tab.eval("window.camstream.session()")}
    if shot:
        screenshot(tab, shot)
    # A viewer: the picture, no controls.
    result["viewer_signed_in"] = bool(sign_in(tab, viewer[0], viewer[1], "viewer"))
    first = wait_playing(tab, stream, 25)
    tab.pump(1)
    result["viewer"] = {"mode": first and first["mode"], "frames": tab.eval(probe(stream))["frames"] if first else 0,
                        "visible_controls": tab.eval(VISIBLE_CONTROLS),
                        "who": tab.eval("document.getElementById('who').textContent")}
    # Sign-out: back to the form, and the API refuses the page.
    tab.eval("document.getElementById('signout-button').click()")
    tab.pump(1)
    result["signed_out"] = {
        "form": bool(wait_js(tab, SIGNIN_FORM_SHOWN, 15)),
        "status_api": tab.eval("fetch('/api/v1/status', {headers: {'X-Requested-With': 'camstream'}}).then(r => r.status)"),
        "cookie_visible_to_js": tab.eval("document.cookie"),
    }
    # An operator: controls shown, brightness applied.
    result["operator_signed_in"] = bool(sign_in(tab, operator[0], operator[1], "operator"))
    first = wait_playing(tab, stream, 25)
    card = "document.querySelector('.card[data-stream=%s]')" % json.dumps(stream)
    wait_js(tab, "%s && %s.querySelector('.image-button').offsetParent !== null" % (card, card), 10)
    result["operator"] = {"mode": first and first["mode"], "visible_controls": tab.eval(VISIBLE_CONTROLS)}
    tab.eval("%s.querySelector('.image-button').click()" % card)
    tab.eval("(() => { const f = %s.querySelector('form.image'); f.brightness.value = %s; "
             "f.querySelector('button[type=submit]').click(); })()" % (card, json.dumps(brightness)))
    text = wait_js(tab, "(() => { const t = %s.querySelector('.image-result').textContent; "
                   "return t && t !== 'applying…' ? t : null; })()" % card, 15)
    result["operator"]["image_result"] = text
    # The full-window view plays with the session too (its WHEP offer carries the CSRF token).
    tab.call("Page.navigate", url=url.rstrip("/") + "/view/" + urllib.parse.quote(stream))
    view = wait_js(tab, "(() => { const p = window.camstream && window.camstream.players[%s]; "
                   "return p && p.mode !== 'connecting' && p.video.getVideoPlaybackQuality().totalVideoFrames > 0 "
                   "? p.mode : null; })()" % json.dumps(stream), 25)
    result["view_page"] = view
    # The page's own errors; the other origin's CORS refusals below are expected.
    result["console_errors"] = list(tab.errors)
    # Another origin, with the operator's cookie in the browser.
    cam = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url))
    srv = attacker(cam, stream)
    try:
        tab.call("Page.navigate", url="http://127.0.0.1:%d/" % srv.server_address[1])
        cross = wait_js(tab, "window.results && window.results.done && window.results", 15) or {}
        tab.eval("document.getElementById('f').submit()")
        cross["form_post"] = wait_js(tab, "location.origin === %s && document.body && document.body.innerText" % json.dumps(cam), 15)
        result["cross_origin"] = cross
    finally:
        srv.shutdown()
    result["ok"] = True


# MJPEG (issue 28).
def cmd_mjpeg(args, b, result):
    """mjpeg URL PNG1 PNG2: an <img> showing the MJPEG stream at URL, two screenshots a second
    apart; reports the picture's size and whether the screenshots differ."""
    url, png1, png2 = args[0], args[1], args[2]
    tab = b.first_tab()
    # A page of the camera's own origin (its health probe) given nothing but the <img>.
    parts = urllib.parse.urlsplit(url)
    open_page(tab, "%s://%s/healthz" % (parts.scheme, parts.netloc))
    wait_js(tab, "document.readyState === 'complete'", 10)
    tab.eval("document.body.style.margin = '0'; document.body.innerHTML = '<img id=m src=' + %s + '>'; true"
             % json.dumps(json.dumps(url)))
    size = wait_js(tab, "(() => { const m = document.getElementById('m'); "
                        "return m && m.complete !== undefined && m.naturalWidth > 0 ? [m.naturalWidth, m.naturalHeight] : null; })()", 20)
    result["size"] = size
    if not size:
        result["error"] = "the <img> showed no picture within 20 s"
        return
    tab.pump(0.5)
    screenshot(tab, png1)
    tab.pump(1.0)
    screenshot(tab, png2)
    result["differ"] = open(png1, "rb").read() != open(png2, "rb").read()
    result["errors"] = tab.errors
    result["ok"] = True


def opt(args, name, default):
    return args[args.index(name) + 1] if name in args else default


def run(cmd, args):
    """Runs one command in a fresh browser and prints its result as JSON, errors included."""
    result = {"ok": False, "error": None}
    b = Browser()
    try:
        cmd(args, b, result)
    except Exception as e:  # reported, not hidden: the test prints it
        result["error"] = f"driver: {e}"
    finally:
        # --kill: the tab dies without its pagehide DELETE (play only).
        b.close(kill="--kill" in args)
    print(json.dumps(result))


if __name__ == "__main__":
    commands = {"play": cmd_play, "tabs": cmd_tabs, "latency": cmd_latency, "recordings": cmd_recordings,
                "image": cmd_image, "trend": cmd_trend, "signin": cmd_signin}
    commands["mjpeg"] = cmd_mjpeg  # MJPEG (issue 28)
    run(commands[sys.argv[1]], sys.argv[2:])
