// The card's trend: a stream's frame rate, bitrate and viewers over the last 10 minutes, from
// GET /api/v1/trends, drawn as inline SVG (no library). One sparkline per figure; the x axis is
// time, so a gap in sampling shows as a gap, and a stall as a line at the bottom.
(function () {
  'use strict';
  const NS = 'http://www.w3.org/2000/svg';
  const W = 300, H = 32, PAD = 2;
  const ROWS = [
    { key: 'fps', label: 'fps', fmt: v => v.toFixed(1) },
    { key: 'kbps', label: 'kbit/s', fmt: v => (v >= 1000 ? (v / 1000).toFixed(1) + 'k' : v.toFixed(0)) },
    { key: 'viewers', label: 'viewers', fmt: v => String(v) },
  ];

  function build(box) {
    box.textContent = '';
    ROWS.forEach(r => {
      const row = document.createElement('div');
      row.className = 'trend-row';
      const label = document.createElement('span');
      label.className = 'trend-label';
      const svg = document.createElementNS(NS, 'svg');
      svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
      svg.setAttribute('preserveAspectRatio', 'none');
      svg.setAttribute('class', 'trend-svg');
      const line = document.createElementNS(NS, 'polyline');
      line.setAttribute('class', 'trend-line trend-' + r.key);
      svg.appendChild(line);
      row.appendChild(label);
      row.appendChild(svg);
      box.appendChild(row);
    });
    box.dataset.built = '1';
  }

  // series: {t: [unix s], fps: [], kbps: [], viewers: []}; windowS: seconds shown;
  // floors: the smallest top of each scale (the configured fps, so a steady stream is a line
  // near the top, not a line across the middle).
  function draw(box, series, windowS, floors) {
    if (!box.dataset.built) build(box);
    const t = (series && series.t) || [];
    const end = t.length ? t[t.length - 1] : 0;
    // A young daemon's few minutes fill the width (at least a minute shown), up to the window.
    const span = Math.min(windowS, Math.max(60, t.length ? end - t[0] : 0));
    ROWS.forEach((r, i) => {
      const values = (series && series[r.key]) || [];
      const top = Math.max((floors && floors[r.key]) || 1, ...values);
      const points = values.map((v, j) => {
        const x = W - ((end - t[j]) / span) * W;
        const y = H - PAD - (v / top) * (H - 2 * PAD);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      const row = box.children[i];
      const line = row.querySelector('polyline');
      line.setAttribute('points', points.join(' '));
      line.dataset.top = String(top);
      const last = values.length ? r.fmt(values[values.length - 1]) : '–';
      row.querySelector('.trend-label').textContent = r.label + ' ' + last;
    });
    box.title = 'Last ' + Math.round(span / 60) + ' min';
  }

  window.camstreamTrend = { draw, width: W, height: H };
})();
