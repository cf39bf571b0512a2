#!/usr/bin/env python3
"""Plays a URL in a <video> in headless Chromium (Debian's) over raw CDP and prints JSON:
{"ok": bool, "current_time": float, "ready_state": int, "error": str|null}.

Usage: play.py VIDEO_URL [SECONDS]. "ok" means currentTime advanced by at least 1 s. The page
is served by a small same-origin proxy here (Chromium refuses loopback media to a page of
another origin, such as a data: URL), which forwards the video's requests, Range headers
included, to VIDEO_URL's server. Every wait is bounded; only the Chromium process started here
is ended."""
import http.client
import http.server
import json
import os
import threading
import urllib.parse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), "chromium")


def proxy(target):
    """A server on 127.0.0.1:0 serving the page at / and forwarding anything else to target."""
    parsed = urllib.parse.urlsplit(target)
    video = parsed.path + ("?" + parsed.query if parsed.query else "")
    page = ("<html><body><video id=v muted autoplay playsinline src='%s'></video></body></html>"
            % video.replace("'", "%27")).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=15)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("range", "if-range", "if-none-match")}
            conn.request("GET", self.path, headers=headers)
            r = conn.getresponse()
            body = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() in ("content-type", "content-length", "content-range", "etag",
                                 "accept-ranges"):
                    self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    url, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    server = proxy(url)
    profile = tempfile.mkdtemp(prefix="camstream-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--mute-audio",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {"ok": False, "current_time": 0.0, "ready_state": 0, "error": None}
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        time.sleep(0.2)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        ws = websocket.create_connection(ws_url, suppress_origin=True, timeout=30)
        ids = iter(range(1, 1_000_000))

        def call(method, **params):
            i = next(ids)
            ws.send(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == i:
                    return msg.get("result", {})

        call("Page.navigate", url="http://127.0.0.1:%d/" % server.server_address[1])
        probe = ("(() => { const v = document.getElementById('v'); if (!v) return null; "
                 "return {t: v.currentTime, r: v.readyState, e: v.error ? v.error.message || String(v.error.code) : null}; })()")
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = call("Runtime.evaluate", expression=probe, returnByValue=True).get("result", {}).get("value")
            if value:
                result.update(current_time=value["t"], ready_state=value["r"], error=value["e"])
                if value["e"] or value["t"] >= 1.0:
                    break
            time.sleep(0.25)
        result["ok"] = result["current_time"] >= 1.0 and not result["error"]
        try:
            call("Browser.close")
        except Exception:
            pass
    except Exception as e:  # reported, not hidden: the test prints it
        result["error"] = f"driver: {e}"
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        server.shutdown()
        time.sleep(1)
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
