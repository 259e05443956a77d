// gradcam-stream's web view: live explained video over a WebSocket into Media Source
// Extensions (one fMP4 fragment a frame), each frame's verdict matched to the frame on screen
// by its media time, and the page's own glass-to-glass latency in window.gradcamStats.

window.gradcamStats = window.gradcamStats || {};

const COLOURS = ['#58a6ff', '#f0883e', '#3fb950', '#d2a8ff', '#ff7b72', '#79c0ff', '#ffa657',
  '#56d364', '#e3b341', '#db61a2'];

/// Plays one stream in a <video>: `onVerdict(v)` for every verdict received, `onFrame(v)` for
/// the verdict of each frame displayed.
export class LivePlayer {
  constructor(name, video, hooks = {}) {
    this.name = name;
    this.video = video;
    this.hooks = hooks;
    this.queue = [];
    this.verdicts = [];
    this.latencies = [];
    this.frames = 0;
    this.ended = false;
    this.stats = window.gradcamStats[name] = { frames: 0, latency_p50_ms: null, latency_p95_ms: null };
    video.muted = true;
    video.playsInline = true;
    this.open();
    const tick = (now, md) => { this.shown(md); video.requestVideoFrameCallback(tick); };
    video.requestVideoFrameCallback(tick);
  }

  open() {
    this.sb = null;
    this.codec = null;
    this.queue = [];
    this.ms = new MediaSource();
    this.video.src = URL.createObjectURL(this.ms);
    this.ms.addEventListener('sourceopen', () => this.connect(), { once: true });
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/live/${encodeURIComponent(this.name)}`);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.text(JSON.parse(ev.data));
      else { this.queue.push(ev.data); this.pump(); }
    };
    ws.onclose = () => {
      if (this.ended) return;
      // The server went away or dropped this viewer: start afresh from the next key frame.
      setTimeout(() => this.open(), 2000);
    };
    this.ws = ws;
  }

  text(m) {
    if (m.type === 'init') {
      const type = `video/mp4; codecs="${m.codec}"`;
      if (!this.sb) {
        this.sb = this.ms.addSourceBuffer(type);
        this.sb.mode = 'segments';
        this.sb.addEventListener('updateend', () => { this.liveEdge(); this.pump(); });
      } else if (m.codec !== this.codec && this.sb.changeType) {
        this.sb.changeType(type);
      }
      this.codec = m.codec;
    } else if (m.type === 'verdict') {
      this.verdicts.push(m);
      if (this.verdicts.length > 1500) this.verdicts.splice(0, 500);
      this.hooks.onVerdict?.(m);
    } else if (m.type === 'end') {
      this.ended = true;
      this.hooks.onEnd?.();
    }
  }

  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || !this.queue.length) return;
    const b = sb.buffered;
    // Keep the last half minute in the buffer: a live page runs for days.
    if (b.length && this.video.currentTime - b.start(0) > 30) {
      sb.remove(b.start(0), this.video.currentTime - 10);
      return;
    }
    try {
      sb.appendBuffer(this.queue.shift());
    } catch (e) {
      console.warn(`${this.name}: ${e}`);
    }
  }

  /// Stay at the live edge: a player that fell behind (a stall, a hidden tab) jumps ahead.
  liveEdge() {
    const b = this.sb?.buffered;
    if (!b || !b.length) return;
    const start = b.start(b.length - 1), end = b.end(b.length - 1);
    const t = this.video.currentTime;
    if (t < start || end - t > 0.5) this.video.currentTime = Math.max(start, end - 0.05);
    if (this.video.paused) this.video.play().catch(() => {});
  }

  /// The verdict of the frame with media time `t` (the latest at or before it).
  lookup(t) {
    const v = this.verdicts;
    let lo = 0, hi = v.length - 1, best = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (v[mid].t <= t + 0.0005) { best = v[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    return best;
  }

  shown(md) {
    const v = this.lookup(md.mediaTime);
    if (!v) return;
    this.frames += 1;
    const latency = performance.timeOrigin + md.expectedDisplayTime - v.cap;
    this.latencies.push(latency);
    if (this.latencies.length > 1000) this.latencies.shift();
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
    Object.assign(this.stats, {
      frames: this.frames,
      latency_p50_ms: Math.round(q(0.5)),
      latency_p95_ms: Math.round(q(0.95)),
    });
    this.hooks.onFrame?.(v);
  }
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === 'style') for (const d of v.split(';')) {
      const [prop, value] = d.split(':');
      if (value !== undefined) e.style.setProperty(prop.trim(), value.trim());
    }
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

const pct = (p) => `${(p * 100).toFixed(1)}%`;

async function json(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

/// Frames per second from successive counts.
class Rate {
  constructor() { this.last = null; }
  update(count) {
    const now = performance.now();
    let fps = null;
    if (this.last) fps = (count - this.last.count) * 1000 / Math.max(1, now - this.last.at);
    this.last = { count, at: now };
    return fps;
  }
}

function stateBadge(node, s) {
  node.textContent = s.state;
  node.className = `state ${s.state}`;
}

/// An RTSP camera's packet loss over the last minute and its damaged frames (nothing for
/// other inputs).
function lossText(s) {
  if (s.loss_percent === undefined) return '';
  return ` · ${s.loss_percent.toFixed(1)}% packets lost (last minute) · ${s.frames_damaged} damaged`;
}

/// The overview: a tile a stream, each playing live.
export async function overview(root) {
  const tiles = new Map();
  const refresh = async () => {
    let list;
    try { list = await json('/api/streams'); } catch { return; }
    for (const s of list) {
      let t = tiles.get(s.name);
      if (!t) {
        const video = el('video', { muted: '', autoplay: '', playsinline: '' });
        const name = el('span', { class: 'name' }, s.name);
        const state = el('span', { class: 'state' });
        const cls = el('span', { class: 'class' }, '–');
        const counts = el('span', { class: 'counts' });
        const reason = el('span', { class: 'reason' });
        const tile = el('article', { class: 'tile', 'data-stream': s.name },
          el('a', { href: `/stream/${encodeURIComponent(s.name)}` }, video),
          el('div', { class: 'info' }, name, state, cls, counts, reason));
        root.append(tile);
        const player = new LivePlayer(s.name, video, {
          onFrame: (v) => { cls.textContent = `${v.label || 'class ' + v.class} ${pct(v.prob)}`; },
        });
        t = { state, counts, reason, player, rate: new Rate() };
        tiles.set(s.name, t);
      }
      stateBadge(t.state, s);
      const fps = t.rate.update(s.frames_out);
      t.counts.textContent = `${fps === null ? '–' : fps.toFixed(1)} fps · ${s.dropped} dropped${lossText(s)}`;
      t.reason.textContent = s.reason || '';
    }
  };
  await refresh();
  setInterval(refresh, 1000);
}

/// One stream: the video large, the timeline of its verdicts, the top-k of the frame shown.
export async function streamPage(name) {
  document.title = `${name} · gradcam-stream`;
  const video = document.querySelector('.screen video');
  const peak = document.querySelector('.peak');
  const markPeak = document.getElementById('mark-peak');
  const status = document.getElementById('status');
  const verdictLine = document.getElementById('verdict');
  const topk = document.getElementById('topk');
  const timeline = new Timeline(document.getElementById('timeline'), 300);
  try { for (const v of await json(`/api/history/${encodeURIComponent(name)}`)) timeline.add(v); } catch {}
  const player = new LivePlayer(name, video, {
    onVerdict: (v) => timeline.add(v),
    onFrame: (v) => {
      if (v.boxes) {
        // A detector's frame: its boxes, each with its track, class and score.
        verdictLine.textContent = `${v.boxes.length} box${v.boxes.length === 1 ? '' : 'es'}`;
        topk.dataset.boxes = String(v.boxes.length);
        topk.replaceChildren(...v.boxes.map((b) => el('div', { class: 'row', 'data-track': String(b.id) },
          el('span', {}, `#${b.id} ${b.label}`), el('div', { class: 'track' }, el('div', { class: 'bar', style: `width:${(100 * b.score).toFixed(1)}%` })),
          el('span', {}, pct(b.score)))));
        peak.hidden = true;
        return;
      }
      verdictLine.textContent = `${v.label || 'class ' + v.class} ${pct(v.prob)}`;
      // Bars against the most likely class: an ImageNet model's top-1 is often a few percent.
      const most = Math.max(...v.top.map(([, p]) => p), 1e-9);
      topk.replaceChildren(...v.top.map(([label, p]) => el('div', { class: `row${label === v.label ? ' shown' : ''}` },
        el('span', {}, label), el('div', { class: 'track' }, el('div', { class: 'bar', style: `width:${(100 * p / most).toFixed(1)}%` })),
        el('span', {}, pct(p)))));
      peak.hidden = !markPeak.checked;
      if (markPeak.checked && v.width) {
        peak.style.left = `${(100 * v.peak[0] / v.width).toFixed(2)}%`;
        peak.style.top = `${(100 * v.peak[1] / v.height).toFixed(2)}%`;
      }
    },
  });
  const rate = new Rate();
  const refresh = async () => {
    let s;
    try { s = (await json('/api/streams')).find((x) => x.name === name); } catch { return; }
    if (!s) return;
    const fps = rate.update(s.frames_out);
    const st = player.stats;
    status.textContent = `${s.state}${s.reason ? ' (' + s.reason + ')' : ''} · ${fps === null ? '–' : fps.toFixed(1)} fps · ` +
      `${s.dropped} dropped${lossText(s)} · latency p50 ${st.latency_p50_ms ?? '–'} ms, p95 ${st.latency_p95_ms ?? '–'} ms over ${st.frames} frames`;
    timeline.draw();
  };
  setInterval(refresh, 1000);
  refresh();
}

/// The shown class's probability over time, a series (colour) per class; for a detector, each
/// track's score, a series per track (`#3 face`).
class Timeline {
  constructor(node, seconds) {
    this.node = node;
    this.seconds = seconds;
    this.points = [];
    this.plot = null;
    this.classes = [];
  }

  add(v) {
    if (v.boxes) {
      for (const b of v.boxes) this.points.push([v.cap / 1000, `#${b.id} ${b.label}`, b.score]);
      return;
    }
    this.points.push([v.cap / 1000, v.label || `class ${v.class}`, v.prob]);
  }

  draw() {
    const now = Date.now() / 1000;
    this.points = this.points.filter((p) => p[0] >= now - this.seconds);
    this.node.dataset.points = String(this.points.length);
    const classes = [...new Set(this.points.map((p) => p[1]))];
    const xs = this.points.map((p) => p[0]);
    const ys = classes.map((c) => this.points.map((p) => (p[1] === c ? p[2] : null)));
    const data = [xs, ...ys];
    if (!this.plot || classes.join('\n') !== this.classes.join('\n')) {
      this.plot?.destroy();
      this.classes = classes;
      this.plot = new uPlot({
        width: Math.max(300, this.node.clientWidth || 800),
        height: 180,
        scales: { y: { range: [0, 1] } },
        series: [{}, ...classes.map((c, i) => ({
          label: c, stroke: COLOURS[i % COLOURS.length], width: 0,
          points: { show: true, size: 4, fill: COLOURS[i % COLOURS.length] }, spanGaps: false,
        }))],
        legend: { show: false },
        axes: [{ stroke: '#8b949e' }, { stroke: '#8b949e', size: 60, values: (u, v) => v.map((x) => `${Math.round(x * 100)}%`) }],
      }, data, this.node);
    } else {
      this.plot.setData(data);
    }
    // A legend of the classes shown most in the window, in their colours.
    const counts = classes.map((c, i) => [c, ys[i].filter((y) => y !== null).length, COLOURS[i % COLOURS.length]]);
    counts.sort((a, b) => b[1] - a[1]);
    this.legend ??= this.node.parentNode.appendChild(el('p', { class: 'legend' }));
    this.legend.replaceChildren(...counts.slice(0, 8).map(([c, n, colour]) =>
      el('span', { style: `color:${colour}` }, `● ${c} (${Math.round(100 * n / Math.max(1, xs.length))}%)`)));
  }
}

/// The run's files, newest first; one plays with its metadata's timeline beside it.
export async function recordingsPage() {
  const list = document.getElementById('list');
  const video = document.getElementById('playback');
  const metaBox = document.getElementById('meta-timeline');
  let plot = null;
  const play = async (r, li) => {
    for (const x of list.children) x.classList.remove('current');
    li.classList.add('current');
    video.src = r.url;
    video.play().catch(() => {});
    plot?.destroy();
    plot = null;
    if (!r.metadata_url) return;
    const text = await (await fetch(r.metadata_url)).text();
    const rows = text.split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return null; } })
      .filter((m) => m && m.pts_ns !== null && m.pts_ns / 1e9 >= r.begins_at);
    if (!rows.length) return;
    const t0 = r.begins_at || rows[0].pts_ns / 1e9;
    plot = new uPlot({
      width: Math.max(300, metaBox.clientWidth || 800), height: 160, scales: { y: { range: [0, 1] } },
      series: [{}, { label: 'score', stroke: '#f0883e', width: 1 }],
    }, [rows.map((m) => m.pts_ns / 1e9 - t0), rows.map((m) => m.score)], metaBox);
  };
  const files = await json('/api/recordings');
  if (!files.length) list.append(el('li', {}, 'no recordings yet: a live stream with a file output writes one'));
  for (const r of files) {
    const li = el('li', { 'data-file': r.file },
      el('span', { class: 'stream-name' }, r.stream), r.file, ` (${(r.bytes / 1e6).toFixed(1)} MB)`);
    li.addEventListener('click', () => play(r, li));
    list.append(li);
  }
}
