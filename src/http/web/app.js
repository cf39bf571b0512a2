// camstream's web page: live WebRTC (WHEP) video per stream, its state from the status API,
// snapshots and recordings. Plain script, no dependencies, nothing fetched from elsewhere.
'use strict';
(function () {
  const config = window.CAMSTREAM || { iceServers: [], webrtc: false };
  const STATUS_EVERY_MS = 2000;
  const TREND_EVERY_MS = 2000;
  const CONNECT_TIMEOUT_MS = 10000;
  const SNAPSHOT_EVERY_MS = 1000;

  // A bearer token (when the API needs one) comes from "#token=..." once and is kept locally.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get('token')) {
    localStorage.setItem('camstream-token', hash.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  // Who is signed in (GET /api/v1/session); its CSRF token goes with every change.
  let session = null;
  function headers(extra) {
    // X-Requested-With: a 401 then carries no Basic challenge, so the browser never shows its
    // own password prompt over the page's sign-in form.
    const h = Object.assign({ 'X-Requested-With': 'camstream' }, extra || {});
    const t = localStorage.getItem('camstream-token');
    if (t) h.Authorization = 'Bearer ' + t;
    else if (session && session.csrf) h['X-CSRF-Token'] = session.csrf;
    return h;
  }
  async function loadSession() {
    session = await api('/api/v1/session');
    return session;
  }
  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: 'no-store' });
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  // Every player on the page, by stream, for people and tests to inspect.
  const players = {};

  // Plays `stream` in `video` over WHEP; on failure shows refreshed snapshots in `img` instead.
  function Player(stream, video, img, overlay) {
    this.stream = stream; this.video = video; this.img = img; this.overlay = overlay;
    this.mode = 'connecting'; this.error = null; this.location = null; this.pc = null;
    // Milliseconds from start() to: the answer, ICE+DTLS connected, the first decoded frame.
    this.timing = {};
    this.snapshotTimer = null; players[stream] = this;
  }
  Player.prototype.say = function (text) { this.overlay.textContent = text || ''; };
  Player.prototype.start = async function () {
    if (!config.webrtc || !window.RTCPeerConnection) {
      return this.fallback(config.webrtc ? 'this browser has no WebRTC' : 'WebRTC is off on the server');
    }
    this.say('connecting…');
    const t0 = performance.now();
    const mark = what => { if (this.timing[what] === undefined) this.timing[what] = Math.round(performance.now() - t0); };
    if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(() => mark('first_frame_ms'));
    const pc = new RTCPeerConnection({ iceServers: (config.iceServers || []).map(u => ({ urls: u })) });
    this.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = e => {
      this.video.srcObject = e.streams[0] || new MediaStream([e.track]);
      this.video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') this.fallback('WebRTC connection failed (is UDP blocked?)');
      if (pc.connectionState === 'disconnected') this.say('connection interrupted…');
      if (pc.connectionState === 'connected') { mark('connected_ms'); this.say(''); }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      // The server is ICE-lite and learns our address from our checks: no need to wait long.
      await new Promise(done => {
        if (pc.iceGatheringState === 'complete') return done();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
        setTimeout(done, 1500);
      });
      const r = await fetch('/whep/' + encodeURIComponent(this.stream), {
        method: 'POST', headers: headers({ 'Content-Type': 'application/sdp' }), body: pc.localDescription.sdp,
      });
      if (r.status !== 201) {
        let msg = 'HTTP ' + r.status;
        try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
        throw new Error(msg);
      }
      this.location = r.headers.get('Location');
      mark('answer_ms');
      await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    } catch (e) {
      return this.fallback('WebRTC unavailable: ' + e.message);
    }
    const started = Date.now();
    const check = () => {
      if (this.mode !== 'connecting') return;
      const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
      if (q && q.totalVideoFrames > 0) { this.mode = 'webrtc'; this.say(''); return; }
      if (Date.now() - started > CONNECT_TIMEOUT_MS) return this.fallback('no WebRTC video arrived (is UDP blocked?)');
      setTimeout(check, 200);
    };
    check();
  };
  Player.prototype.stop = function () {
    if (this.location) {
      fetch(this.location, { method: 'DELETE', headers: headers(), keepalive: true }).catch(() => {});
      this.location = null;
    }
    if (this.pc) { this.pc.close(); this.pc = null; }
  };
  Player.prototype.fallback = function (why) {
    this.stop();
    this.mode = 'snapshot'; this.error = why;
    this.video.hidden = true; this.img.hidden = false;
    this.say(why + ' — showing a snapshot every second');
    const refresh = async () => {
      try {
        const r = await fetch('/snapshot.jpg?stream=' + encodeURIComponent(this.stream),
          { headers: headers(), cache: 'no-store' });
        if (r.ok) {
          const url = URL.createObjectURL(await r.blob());
          const old = this.img.src;
          this.img.src = url;
          if (old.startsWith('blob:')) URL.revokeObjectURL(old);
        }
      } catch (e) { /* next round */ }
      this.snapshotTimer = setTimeout(refresh, SNAPSHOT_EVERY_MS);
    };
    refresh();
  };
  window.addEventListener('pagehide', () => Object.values(players).forEach(p => p.stop()));

  function fmtBitrate(bps) {
    if (!(bps >= 0)) return '–';
    return bps >= 1e6 ? (bps / 1e6).toFixed(2) + ' Mbit/s' : (bps / 1e3).toFixed(0) + ' kbit/s';
  }

  async function snapshot(stream) {
    const r = await fetch('/snapshot.jpg?stream=' + encodeURIComponent(stream), { headers: headers(), cache: 'no-store' });
    if (!r.ok) return alert('Snapshot failed: HTTP ' + r.status);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(await r.blob());
    a.download = stream + '-' + new Date().toISOString().replace(/[:.]/g, '-') + '.jpg';
    a.click();
  }

  async function recordings(card, stream) {
    const box = card.querySelector('.recordings');
    box.hidden = !box.hidden;
    if (box.hidden) return;
    const list = box.querySelector('.spans');
    list.textContent = 'loading…';
    try {
      const data = await api('/api/v1/recordings?stream=' + encodeURIComponent(stream));
      list.textContent = '';
      if (!data.spans.length) list.textContent = 'no recordings yet';
      data.spans.slice(-20).reverse().forEach(span => {
        const li = document.createElement('li');
        const b = document.createElement('a');
        b.href = '#';
        const secs = Math.min(Math.floor(span.duration_s), 600);
        b.textContent = new Date(span.start).toLocaleString() + ' (' + Math.round(span.duration_s) + ' s)';
        b.onclick = async ev => {
          ev.preventDefault();
          const v = box.querySelector('.playback');
          const url = '/recordings/' + encodeURIComponent(stream) + '.mp4?start=' + encodeURIComponent(span.start) + '&duration=' + Math.max(secs, 1);
          v.hidden = false;
          if (localStorage.getItem('camstream-token')) {
            // A <video src> cannot send the token: fetch the (bounded) clip instead.
            const r = await fetch(url, { headers: headers() });
            v.src = URL.createObjectURL(await r.blob());
          } else {
            v.src = url;
          }
          v.play().catch(() => {});
        };
        li.appendChild(b);
        // Event clips (motion): the event's picture and id beside the clip it begins.
        const names = new Set((span.segments || []).map(g => g.name));
        (data.events || []).filter(e => names.has(e.segment)).forEach(async e => {
          const img = document.createElement('img');
          img.className = 'clip-thumb';
          img.alt = 'motion ' + e.event_id;
          img.title = 'motion event ' + e.event_id;
          li.appendChild(img);
          if (localStorage.getItem('camstream-token')) {
            const r = await fetch(e.thumbnail, { headers: headers() });
            if (r.ok) img.src = URL.createObjectURL(await r.blob());
          } else {
            img.src = e.thumbnail;
          }
        });
        list.appendChild(li);
      });
    } catch (e) {
      list.textContent = 'cannot list recordings: ' + e.message;
    }
  }

  // Image controls (docs/image.md): the form shows the stream's settings and sends the changed
  // ones as PATCH /api/v1/streams/{name} {"image": {...}}, which needs the HTTP token.
  function imageForm(card, stream, settings) {
    const form = card.querySelector('form.image');
    const img = (settings && settings.image) || {};
    const fill = () => {
      form.hflip.checked = !!img.hflip;
      form.vflip.checked = !!img.vflip;
      form.rotation.value = String(img.rotation || 0);
      form.brightness.value = img.brightness || 0;
      form.contrast.value = img.contrast === undefined ? 1 : img.contrast;
      form.saturation.value = img.saturation === undefined ? 1 : img.saturation;
      form.overlay.value = (img.overlay && img.overlay.text) || '';
    };
    fill();
    card.querySelector('.image-button').onclick = () => { form.hidden = !form.hidden; };
    form.onsubmit = async ev => {
      ev.preventDefault();
      const result = form.querySelector('.image-result');
      const image = {
        hflip: form.hflip.checked, vflip: form.vflip.checked, rotation: Number(form.rotation.value),
        brightness: Number(form.brightness.value), contrast: Number(form.contrast.value),
        saturation: Number(form.saturation.value), overlay: { text: form.overlay.value },
      };
      result.textContent = 'applying…';
      try {
        const r = await fetch('/api/v1/streams/' + encodeURIComponent(stream), {
          method: 'PATCH', headers: headers({ 'Content-Type': 'application/json' }), body: JSON.stringify({ image }),
        });
        const body = await r.json().catch(() => ({}));
        result.textContent = r.ok ? 'applied: ' + body.applied : (body.error || 'HTTP ' + r.status);
        if (r.ok) Object.assign(img, image);
      } catch (e) {
        result.textContent = 'failed: ' + e.message;
      }
    };
  }

  // Encoder controls: bitrate and keyframe interval (PATCH), a keyframe now (POST).
  function liveForm(card, stream, settings) {
    const form = card.querySelector('form.live');
    const enc = (settings && settings.encoder) || {};
    form.bitrate_kbps.value = enc.bitrate_kbps || '';
    form.keyframe_interval.value = enc.keyframe_interval || '';
    const result = form.querySelector('.live-result');
    card.querySelector('.live-button').onclick = () => { form.hidden = !form.hidden; };
    const send = async (method, path, body) => {
      result.textContent = 'applying…';
      try {
        const r = await fetch(path, {
          method, headers: headers({ 'Content-Type': 'application/json' }), body: body && JSON.stringify(body),
        });
        const b = await r.json().catch(() => ({}));
        result.textContent = r.ok ? 'applied' + (b.applied ? ': ' + b.applied : '') : (b.error || 'HTTP ' + r.status);
      } catch (e) {
        result.textContent = 'failed: ' + e.message;
      }
    };
    const base = '/api/v1/streams/' + encodeURIComponent(stream);
    form.onsubmit = ev => {
      ev.preventDefault();
      send('PATCH', base, { encoder: {
        bitrate_kbps: Number(form.bitrate_kbps.value), keyframe_interval: Number(form.keyframe_interval.value) } });
    };
    form.querySelector('.keyframe').onclick = () => send('POST', base + '/keyframe');
  }

  // The sign-in form: JSON to POST /api/v1/session; the answer sets the session cookie.
  function signInForm() {
    const form = document.getElementById('signin');
    const err = form.querySelector('.signin-error');
    form.onsubmit = async ev => {
      ev.preventDefault();
      err.hidden = true;
      try {
        const r = await fetch('/api/v1/session', {
          method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'camstream' },
          body: JSON.stringify({ username: form.username.value, password: form.password.value }),
        });
        if (r.ok) { location.reload(); return; }
        const b = await r.json().catch(() => ({}));
        err.textContent = r.status === 401 ? 'Wrong user name or password.' : (b.error || 'HTTP ' + r.status);
      } catch (e) {
        err.textContent = 'Cannot sign in: ' + e.message;
      }
      err.hidden = false;
      form.password.value = '';
      form.password.focus();
    };
    return form;
  }

  // The stream list: cards made once per stream, figures refreshed from the status API.
  async function index() {
    const main = document.getElementById('streams');
    const notice = document.getElementById('notice');
    const cards = {};
    const last = {};
    document.getElementById('token-button').onclick = () => {
      const t = prompt('HTTP API token (kept in this browser):', localStorage.getItem('camstream-token') || '');
      if (t !== null) { t ? localStorage.setItem('camstream-token', t) : localStorage.removeItem('camstream-token'); location.reload(); }
    };
    const form = signInForm();
    const showSignIn = why => {
      main.hidden = true;
      form.hidden = false;
      document.getElementById('signin-button').hidden = true;
      const err = form.querySelector('.signin-error');
      err.textContent = why || '';
      err.hidden = !why;
      document.getElementById('summary').textContent = 'sign in to watch';
    };
    try {
      await loadSession();
    } catch (e) {
      notice.hidden = false;
      notice.textContent = e.status === 401
        ? 'The token kept in this browser is not valid: press "Token" to change it'
        : 'Cannot reach camstream: ' + e.message;
      return;
    }
    document.getElementById('open-banner').hidden = session.access !== 'open';
    if (session.role) {
      const who = document.getElementById('who');
      who.hidden = false;
      who.textContent = session.name + ' (' + session.role + ')';
      const out = document.getElementById('signout-button');
      out.hidden = session.via !== 'session';
      out.onclick = async () => {
        await fetch('/api/v1/session', { method: 'DELETE', headers: headers() }).catch(() => {});
        location.reload();
      };
    } else if (session.sign_in) {
      const b = document.getElementById('signin-button');
      b.hidden = false;
      b.onclick = () => { form.hidden = !form.hidden; };
    }
    // Without accounts (a bare http.token) there is nothing to sign in with: the status call
    // below says a token is needed.
    if (!session.may.view && session.sign_in) return showSignIn();
    let signedOut = false;
    async function refresh() {
      if (signedOut) return;
      let status;
      try {
        status = await api('/api/v1/status');
        notice.hidden = true;
      } catch (e) {
        if (e.status === 401 && session.sign_in && !localStorage.getItem('camstream-token')) {
          // The session ended (signed out elsewhere, expired, or the account changed).
          signedOut = true;
          Object.values(players).forEach(p => p.stop());
          return showSignIn('Your session ended: sign in again.');
        }
        notice.hidden = false;
        notice.textContent = e.status === 401
          ? 'The status API needs the HTTP token: press "Token" or open this page as /#token=…'
          : 'Cannot read the status: ' + e.message;
        return;
      }
      document.getElementById('summary').textContent =
        'version ' + status.version + ' · ' + status.gstreamer + ' · up ' + Math.round(status.uptime_s) + ' s';
      const now = performance.now();
      status.streams.forEach(s => {
        let card = cards[s.name];
        if (!card) {
          card = document.getElementById('card').content.firstElementChild.cloneNode(true);
          card.dataset.stream = s.name;
          card.querySelector('.name').textContent = s.name;
          card.querySelector('.fullscreen').href = '/view/' + encodeURIComponent(s.name);
          card.querySelector('.snapshot').onclick = () => snapshot(s.name);
          imageForm(card, s.name, s.settings);
          liveForm(card, s.name, s.settings);
          // A viewer sees the picture and recordings; live controls are for operators.
          card.querySelector('.controls').hidden = !session.may.control;
          const rb = card.querySelector('.recordings-button');
          rb.onclick = () => recordings(card, s.name);
          main.appendChild(card);
          cards[s.name] = card;
          new Player(s.name, card.querySelector('video'), card.querySelector('img'), card.querySelector('.overlay')).start();
        }
        const enc = s.encodings[0] || {};
        card.dataset.fps = enc.fps || '';
        const st = card.querySelector('.state');
        st.textContent = s.state; st.className = 'state badge ' + s.state;
        card.querySelector('.encoder').textContent = s.encoder || '–';
        card.querySelector('.resolution').textContent = enc.width ? enc.width + '×' + enc.height : '–';
        const f = s.frames || {};
        const prev = last[s.name];
        if (prev && now > prev.t) {
          const dt = (now - prev.t) / 1000;
          card.querySelector('.fps').textContent = ((f.encoded - prev.frames) / dt).toFixed(1) + ' fps (set ' + enc.fps + ')';
          card.querySelector('.bitrate').textContent = fmtBitrate((f.bytes - prev.bytes) * 8 / dt);
        }
        last[s.name] = { t: now, frames: f.encoded, bytes: f.bytes };
        card.querySelector('.viewers').textContent =
          (enc.viewers || 0) + ' RTSP · ' + (enc.webrtc_viewers || 0) + ' WebRTC';
        card.querySelector('.restarts').textContent = s.restarts;
        card.querySelector('.last-error').textContent =
          s.last_error ? (s.last_error.message || String(s.last_error)) : 'none';
        const rec = s.settings && s.settings.record && s.settings.record.enabled;
        card.querySelector('.recordings-button').hidden = !rec;
      });
    }
    // The trends: the last 10 minutes of each card's fps, bitrate and viewers.
    async function trends() {
      if (!window.camstreamTrend) return;
      let data;
      try {
        data = await api('/api/v1/trends');
      } catch (e) {
        return; // the status refresh already says why the API cannot be read
      }
      Object.keys(cards).forEach(name => {
        const series = data.streams[name];
        const fps = Number(cards[name].dataset.fps) || 1;
        if (series) window.camstreamTrend.draw(cards[name].querySelector('.trend'), series, data.window_s, { fps });
      });
    }
    await refresh();
    await trends();
    setInterval(refresh, STATUS_EVERY_MS);
    setInterval(trends, TREND_EVERY_MS);
  }

  // One stream, full window (embeddable in an <iframe>).
  async function view() {
    const stream = decodeURIComponent(location.pathname.split('/').pop());
    document.title = stream + ' · camstream';
    const p = document.querySelector('.player');
    // The session's CSRF token goes with the WHEP offer.
    try { await loadSession(); } catch (e) { /* the offer says why */ }
    new Player(stream, p.querySelector('video'), p.querySelector('img'), p.querySelector('.overlay')).start();
  }

  window.camstream = { index, view, players, session: () => session };
})();
