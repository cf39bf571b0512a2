#!/usr/bin/env python3
"""Sound and picture over WebRTC in headless Chromium (tests/audio_webrtc.rs), on camstream's
own page: the received audio track goes through WebAudio (MediaStreamSource -> AudioWorklet,
which finds beep onsets and measures loudness), the picture through requestVideoFrameCallback
(which finds white flashes). Both are timed on the page's clock (performance.now()): a flash by
the frame's expected display time, a beep by the moment WebAudio plays the onset's sample
(AudioContext.getOutputTimestamp) less the latency that WebAudio context reports for itself
(baseLatency + outputLatency): that context is the measuring instrument, not the way a viewer
hears the stream (the page's <video> element plays the sound), so its own output delay is not
counted against the stream; the offsets before that correction are reported too. Chromium in a
headless box has no sound card; WebAudio still renders (to a fake output) and the element stays
muted.

Usage:
  avsync.py sync URL STREAM [--seconds S] [--settle S]
      Plays STREAM, waits --settle seconds (default 4) for the browser's A/V sync to settle,
      then for S seconds (default 8) pairs each flash with the nearest beep onset and reports
      the offsets (beep minus flash, ms: positive means the sound comes late) as offsets_ms
      (corrected for the measuring context's latency) and raw_offsets_ms (not corrected).
  avsync.py watch URL STREAM [--seconds S]
      Plays STREAM for S seconds (default 12) and reports, in Unix time (ms), when the sound
      went quiet and when it came back (loudness windows of 20 ms), the longest gap between
      decoded frames, the frames decoded, and whether the same peer connection stayed connected.

Prints one JSON object. Every wait is bounded; only the Chromium started here is ended."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser, grant, open_page, opt, wait_playing  # noqa: E402

# The worklet: onsets (a sample over THRESHOLD after QUIET_S of quiet) and the RMS of every
# 20 ms, each stamped with its context time.
WORKLET = r"""
const THRESHOLD = 0.1, QUIET_S = 0.2;
class Listen extends AudioWorkletProcessor {
  constructor() { super(); this.quiet = 0; this.sum = 0; this.n = 0; this.start = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      const t = currentTime + i / sampleRate;
      const x = ch[i];
      if (Math.abs(x) > THRESHOLD) {
        if (this.quiet >= QUIET_S * sampleRate) this.port.postMessage({ onset: t });
        this.quiet = 0;
      } else {
        this.quiet++;
      }
      if (this.n === 0) this.start = t;
      this.sum += x * x; this.n++;
      if (this.n >= sampleRate / 50) {
        this.port.postMessage({ rms: Math.sqrt(this.sum / this.n), t: this.start });
        this.sum = 0; this.n = 0;
      }
    }
    return true;
  }
}
registerProcessor('listen', Listen);
"""

# Starts listening on STREAM's player: window.__av collects flashes, onsets and loudness, all
# in performance.now() milliseconds.
START_JS = r"""
(async (stream, worklet) => {
  const p = window.camstream.players[stream];
  const v = p.video, ms = v.srcObject;
  const track = ms && ms.getAudioTracks()[0];
  const av = window.__av = { flashes: [], onsets: [], rms: [], frames: 0, maxFrameGapMs: 0,
                             lastFrame: null, pc: p.pc, error: null };
  if (!track) { av.error = 'no audio track'; return av.error; }
  const ctx = new AudioContext();
  await ctx.resume();
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: 'text/javascript' })));
  const node = new AudioWorkletNode(ctx, 'listen');
  // The graph is pulled from the destination: the worklet feeds it through a silent gain.
  const mute = ctx.createGain(); mute.gain.value = 0;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(node);
  node.connect(mute).connect(ctx.destination);
  // Context time -> page time, at the moment WebAudio outputs that sample.
  const toPage = t => {
    const ts = ctx.getOutputTimestamp();
    return ts.performanceTime + (t - ts.contextTime) * 1000;
  };
  node.port.onmessage = e => {
    if (e.data.onset !== undefined) av.onsets.push(toPage(e.data.onset));
    else av.rms.push([toPage(e.data.t), e.data.rms]);
  };
  av.latency = { base: ctx.baseLatency, output: ctx.outputLatency, rate: ctx.sampleRate };
  const c = document.createElement('canvas'); c.width = 16; c.height = 12;
  const g = c.getContext('2d', { willReadFrequently: true });
  let bright = false;
  const onFrame = (now, meta) => {
    av.frames++;
    if (av.lastFrame !== null) av.maxFrameGapMs = Math.max(av.maxFrameGapMs, now - av.lastFrame);
    av.lastFrame = now;
    g.drawImage(v, 0, 0, 16, 12);
    const d = g.getImageData(0, 0, 16, 12).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    const luma = sum / (d.length / 4);
    if (luma > 225 && !bright) av.flashes.push(meta.expectedDisplayTime);
    bright = luma > 200;
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  return 'listening';
})(%s, %s)
"""

READ_JS = r"""
(() => { const av = window.__av, pc = av.pc;
  return { flashes: av.flashes, onsets: av.onsets, rms: av.rms, frames: av.frames,
           max_frame_gap_ms: av.maxFrameGapMs, latency: av.latency, error: av.error,
           time_origin: performance.timeOrigin, now: performance.now(),
           same_pc: pc === window.camstream.players[%s].pc, connection: pc.connectionState,
           mode: window.camstream.players[%s].mode }; })()
"""


def listen(b, url, stream, result):
    grant(b, url)
    tab = b.first_tab()
    open_page(tab, url)
    first = wait_playing(tab, stream, 25)
    if not first or first["mode"] != "webrtc":
        raise RuntimeError("no WebRTC video: %s" % json.dumps(first))
    # The audio track arrives with the answer; give it a moment to be attached.
    deadline = time.time() + 10
    while time.time() < deadline and not tab.eval(
            "(() => { const v = window.camstream.players[%s].video; return !!v.srcObject && "
            "v.srcObject.getAudioTracks().length > 0; })()" % json.dumps(stream)):
        tab.pump(0.2)
    started = tab.eval(START_JS % (json.dumps(stream), json.dumps(WORKLET)))
    if started != "listening":
        raise RuntimeError("cannot listen: %s" % started)
    result["sound_button"] = tab.eval(
        "(() => { const c = document.querySelector('.card[data-stream=%s]'); const b = c && c.querySelector('.sound');"
        " return b ? {shown: !b.hidden, text: b.textContent} : null; })()" % json.dumps(stream))
    return tab


def read(tab, stream):
    s = json.dumps(stream)
    return tab.eval(READ_JS % (s, s))


def cmd_sync(args, b, result):
    url, stream = args[0], args[1]
    seconds = float(opt(args, "--seconds", 8))
    settle = float(opt(args, "--settle", 4))
    tab = listen(b, url, stream, result)
    tab.pump(settle + seconds)
    av = read(tab, stream)
    start = av["now"] - seconds * 1000
    flashes = [f for f in av["flashes"] if f >= start]
    lat = av["latency"] or {}
    instrument_ms = 1000.0 * ((lat.get("base") or 0) + (lat.get("output") or 0))
    raw = []
    for f in flashes:
        near = min(av["onsets"], key=lambda o: abs(o - f), default=None)
        if near is not None and abs(near - f) < 500:
            raw.append(round(near - f, 1))
    pairs = [round(r - instrument_ms, 1) for r in raw]
    # Chromium's own view: the sender reports it got of each track, and the sender time
    # (from those reports) of what it plays out now, sound minus picture.
    result["stats"] = tab.eval(
        "(async () => { const st = await window.camstream.players[%s].pc.getStats(); const o = {};"
        " st.forEach(r => { if (r.type === 'remote-outbound-rtp') o[r.kind + '_reports'] = r.reportsSent;"
        " if (r.type === 'inbound-rtp') o[r.kind + '_playout'] = r.estimatedPlayoutTimestamp; });"
        " o.playout_gap_ms = o.audio_playout - o.video_playout; return o; })()" % json.dumps(stream))
    result.update(offsets_ms=pairs, raw_offsets_ms=raw, instrument_latency_ms=round(instrument_ms, 1),
                  flashes=len(flashes), onsets=len([o for o in av["onsets"] if o >= start]),
                  frames=av["frames"], latency=av["latency"], error=av["error"], connection=av["connection"])
    # The card's unmute button (the element starts muted) unmutes.
    result["unmuted"] = tab.eval(
        "(() => { const c = document.querySelector('.card[data-stream=%s]'); const b = c && c.querySelector('.sound');"
        " if (!b || b.hidden) return false; b.click(); const v = window.camstream.players[%s].video;"
        " return !v.muted && b.textContent === 'Mute'; })()" % (json.dumps(stream), json.dumps(stream)))
    result["ok"] = bool(pairs) and av["error"] is None
    result["console_errors"] = tab.errors


def cmd_watch(args, b, result):
    url, stream = args[0], args[1]
    seconds = float(opt(args, "--seconds", 12))
    tab = listen(b, url, stream, result)
    result["listening_since_ms"] = tab.eval("performance.timeOrigin + performance.now()")
    tab.pump(seconds)
    av = read(tab, stream)
    origin = av["time_origin"]
    # Quiet and loud spans from the 20 ms loudness windows (-40 dBFS between them).
    quiet, back, loud = [], [], None
    for t, rms in av["rms"]:
        now_loud = rms > 0.01
        if loud is not None and now_loud != loud:
            (back if now_loud else quiet).append(round(origin + t))
        loud = now_loud
    result.update(quiet_at_ms=quiet, back_at_ms=back, frames=av["frames"],
                  max_frame_gap_ms=round(av["max_frame_gap_ms"]), same_pc=av["same_pc"],
                  connection=av["connection"], mode=av["mode"], error=av["error"],
                  loud_windows=sum(1 for _, r in av["rms"] if r > 0.01), windows=len(av["rms"]))
    result["ok"] = av["error"] is None
    result["console_errors"] = tab.errors


def run(cmd, args):
    result = {"ok": False, "error": None}
    b = Browser()
    try:
        cmd(args, b, result)
    except Exception as e:  # reported, not hidden: the test prints it
        result["error"] = f"driver: {e}"
    finally:
        b.close()
    print(json.dumps(result))


if __name__ == "__main__":
    run({"sync": cmd_sync, "watch": cmd_watch}[sys.argv[1]], sys.argv[2:])
