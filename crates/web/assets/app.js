// vigil web app: live grid, one camera with timeline and playback, export,
// topics and status; detection boxes and the events page are in detect.js.
// Plain JS, no build step; the API is in docs/api.md.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const main = $('#main');
// Test and benchmark hook: per camera, frames shown and recent latencies.
window.vigil = { stats: {}, players: [] };

// ---- API -----------------------------------------------------------------

async function api(path, opts = {}) {
  const headers = { 'X-Vigil-CSRF': '1', ...(opts.body ? { 'Content-Type': 'application/json' } : {}) };
  const res = await fetch(path, { credentials: 'same-origin', ...opts, headers });
  if (res.status === 401 && !path.endsWith('/login')) {
    location.hash = '#/login';
    throw new Error('login required');
  }
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : null;
  if (!res.ok) throw new Error(body?.error || res.statusText);
  return body;
}

const fmtTime = us => new Date(us / 1000).toLocaleString();
const fmtBytes = b => b == null ? '?' : b > 1e9 ? (b / 1e9).toFixed(1) + ' GB' : (b / 1e6).toFixed(1) + ' MB';
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const toLocalInput = us => {
  const d = new Date(us / 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
};

// ---- Live ----------------------------------------------------------------

// WebCodecs draws each frame as soon as it is decoded; MSE buffers a little.
// Chosen per page with ?mode=mse or ?mode=webcodecs; WebCodecs by default
// where the browser has it (docs/benchmarks.md shows the difference).
function liveMode() {
  const m = new URLSearchParams(location.search).get('mode');
  if (m === 'mse' || m === 'webcodecs') return m;
  return 'VideoDecoder' in window ? 'webcodecs' : 'mse';
}

class LivePlayer {
  constructor(camera, box, mode) {
    this.camera = camera; this.box = box; this.mode = mode;
    this.stats = window.vigil.stats[camera] = { frames: 0, latencies: [], mode, codec: null, error: null };
    this.pending = []; this.queue = []; this.closed = false;
    this.overlay = new Overlay(box, this.stats, () => this.stats.frameUs);
    window.vigil.players.push(this);
    this.connect();
    this.report = setInterval(() => this.sendLatency(), 1000);
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = this.ws = new WebSocket(`${proto}://${location.host}/api/cameras/${encodeURIComponent(this.camera)}/live?mode=${this.mode}`);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = ev => typeof ev.data === 'string' ? this.text(JSON.parse(ev.data)) : this.media(ev.data);
    ws.onclose = () => { if (!this.closed) setTimeout(() => this.connect(), 1000); };
  }

  close() {
    this.closed = true;
    clearInterval(this.report);
    this.ws?.close();
    this.overlay.remove();
    try { this.decoder?.close(); } catch (e) { /* already closed */ }
    window.vigil.players = window.vigil.players.filter(p => p !== this);
  }

  note(text) {
    let n = $('.note', this.box);
    if (!n) { n = document.createElement('div'); n.className = 'note'; this.box.append(n); }
    n.textContent = text;
    this.stats.error = text;
  }

  // A frame captured at `captureUs` is on screen, `latencyMs` after capture.
  shown(latencyMs, captureUs) {
    this.stats.frames++;
    this.stats.frameUs = captureUs;
    if (latencyMs >= 0 && latencyMs < 600000) { this.pending.push(latencyMs); this.stats.latencies.push(latencyMs); }
    if (this.stats.latencies.length > 300) this.stats.latencies.shift();
  }

  sendLatency() {
    if (this.pending.length && this.ws?.readyState === 1) {
      this.ws.send(JSON.stringify({ type: 'latency', ms: this.pending }));
    }
    this.pending = [];
  }

  text(m) {
    if (m.type === 'detections') return this.overlay.live(m);
    if (m.type === 'hello') return this.hello(m);
  }

  hello(h) {
    this.stats.codec = h.codec;
    this.base = h.base_us;
    for (const el of this.box.querySelectorAll('video,canvas:not(.overlay),img')) el.remove();
    if (h.codec === 'mjpeg') return this.setupJpeg();
    if (this.mode === 'webcodecs') return this.setupDecoder(h);
    this.setupMse(h);
  }

  setupJpeg() {
    this.canvas = document.createElement('canvas');
    this.box.prepend(this.canvas);
  }

  async showJpeg(captureUs, bytes) {
    if (this.busy) return; // latest wins: drop while the previous one decodes
    this.busy = true;
    try {
      const img = await createImageBitmap(new Blob([bytes], { type: 'image/jpeg' }));
      this.canvas.width = img.width; this.canvas.height = img.height;
      this.canvas.getContext('2d').drawImage(img, 0, 0);
      img.close();
      this.shown(performance.timeOrigin + performance.now() - captureUs / 1000, captureUs);
    } catch (e) { this.note('bad JPEG from camera'); }
    this.busy = false;
  }

  async setupDecoder(h) {
    const config = { codec: h.codec_string, optimizeForLatency: true };
    const ok = await VideoDecoder.isConfigSupported(config).then(r => r.supported, () => false);
    if (!ok) return this.note(`this browser cannot decode ${h.codec.toUpperCase()} (${h.codec_string})`);
    this.canvas = document.createElement('canvas');
    this.canvas.width = h.width || 640; this.canvas.height = h.height || 360;
    this.box.prepend(this.canvas);
    const ctx = this.canvas.getContext('2d');
    this.decoder = new VideoDecoder({
      output: frame => {
        ctx.drawImage(frame, 0, 0, this.canvas.width, this.canvas.height);
        this.shown(performance.timeOrigin + performance.now() - frame.timestamp / 1000, frame.timestamp);
        frame.close();
      },
      error: e => this.note('decoder: ' + e.message),
    });
    this.decoder.configure(config);
    this.needKey = true;
  }

  setupMse(h) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(h.mime)) {
      return this.note(`this browser cannot play ${h.codec.toUpperCase()} (${h.mime})`);
    }
    const video = this.video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    this.box.prepend(video);
    const ms = new MediaSource();
    video.src = URL.createObjectURL(ms);
    this.queue = [];
    ms.addEventListener('sourceopen', () => {
      this.sb = ms.addSourceBuffer(h.mime);
      this.sb.mode = 'segments';
      this.sb.addEventListener('updateend', () => this.drain());
      this.drain();
    }, { once: true });
    const onFrame = (now, md) => {
      this.shown(performance.timeOrigin + md.presentationTime - (this.base / 1000 + md.mediaTime * 1000),
        this.base + md.mediaTime * 1e6);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  drain() {
    const sb = this.sb, v = this.video;
    if (!sb || sb.updating) return;
    // Latest wins: stay within a few frames of the newest one.
    if (v.buffered.length) {
      const end = v.buffered.end(v.buffered.length - 1);
      if (end - v.currentTime > 0.3) v.currentTime = Math.max(end - 0.05, v.buffered.start(v.buffered.length - 1));
      if (v.currentTime > 30 && !this.trimming && v.buffered.start(0) < v.currentTime - 20) {
        this.trimming = true;
        sb.remove(0, v.currentTime - 10);
        this.trimming = false;
        return;
      }
    }
    const next = this.queue.shift();
    if (next) { try { sb.appendBuffer(next); } catch (e) { this.note('player: ' + e.message); } }
    if (v.paused) v.play().catch(() => {});
  }

  media(buf) {
    const dv = new DataView(buf);
    const kind = dv.getUint8(0), key = (dv.getUint8(1) & 1) === 1;
    const captureUs = Number(dv.getBigInt64(2));
    const payload = new Uint8Array(buf, 10);
    if (kind === 3) return this.showJpeg(captureUs, payload);
    if (kind === 2 && this.decoder) {
      if (this.decoder.decodeQueueSize > 8) this.needKey = true; // behind: skip to the next key frame
      if (this.needKey && !key) return;
      this.needKey = false;
      this.decoder.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp: captureUs, data: payload }));
      return;
    }
    if (kind === 0 || kind === 1) {
      if (this.queue.length > 60) this.queue = this.queue.filter((_, i) => i === 0); // keep the init
      this.queue.push(payload);
      this.drain();
    }
  }
}

function stopPlayers() {
  for (const p of [...window.vigil.players]) p.close();
  window.vigil.stats = {};
}

// ---- Pages ---------------------------------------------------------------

async function gridPage() {
  const cams = await api('/api/cameras');
  main.innerHTML = '<div class="grid"></div>';
  const grid = $('.grid', main);
  if (!cams.length) grid.outerHTML = '<p>No cameras you may see.</p>';
  const mode = liveMode();
  for (const c of cams) {
    const tile = document.createElement('div');
    tile.className = 'tile';
    tile.dataset.camera = c.id;
    tile.innerHTML = `<span class="label">${esc(c.id)} <span class="${c.up ? 'up' : 'down'}">●</span></span>`;
    tile.onclick = () => { location.hash = `#/camera/${encodeURIComponent(c.id)}`; };
    grid.append(tile);
    new LivePlayer(c.id, tile, mode);
  }
}

async function cameraPage(id, at) {
  const cams = await api('/api/cameras');
  const cam = cams.find(c => c.id === id);
  if (!cam) { main.innerHTML = `<p class="error">No camera ${esc(id)} (or no permission).</p>`; return; }
  main.replaceChildren($('#camera-page').content.cloneNode(true));
  $('.cam-id', main).textContent = id;
  $('#cam-events', main).href = `#/events?camera=${encodeURIComponent(id)}`;
  const big = $('#big', main);
  let live = null, playback = null;
  const goLive = () => {
    playback?.remove(); playback = null;
    live?.close();
    big.replaceChildren();
    live = new LivePlayer(id, big, liveMode());
    $('#mode', main).textContent = 'live';
    $('#cursor', main).style.display = 'none';
  };
  const play = fromUs => {
    live?.close(); live = null;
    big.replaceChildren();
    const to = Math.min(fromUs + 3600e6, Date.now() * 1000);
    playback = document.createElement('video');
    playback.controls = true; playback.muted = true; playback.autoplay = true;
    playback.src = `/api/cameras/${encodeURIComponent(id)}/recording.mp4?from=${Math.floor(fromUs)}&to=${Math.floor(to)}`;
    playback.playbackRate = Number($('#speed', main).value);
    playback.addEventListener('loadedmetadata', () => { playback.playbackRate = Number($('#speed', main).value); });
    const captureTime = playbackOverlay(id, big, playback, playback.src, fromUs, to);
    playback.addEventListener('timeupdate', () => {
      const at = captureTime();
      $('#position', main).textContent = fmtTime(at);
      moveCursor(at);
    });
    playback.addEventListener('error', () => { $('#position', main).textContent = 'nothing recorded there'; });
    big.prepend(playback);
    $('#mode', main).textContent = 'playback';
    window.vigil.playback = playback;
  };
  $('#go-live', main).onclick = goLive;
  $('#speed', main).onchange = e => { if (playback) playback.playbackRate = Number(e.target.value); };

  let range = null;
  const moveCursor = at => {
    if (!range) return;
    const c = $('#cursor', main);
    c.style.display = 'block';
    c.style.left = `${(100 * (at - range.from)) / (range.to - range.from)}%`;
  };
  const timeline = async () => {
    const secs = Number($('#window', main).value);
    const to = Date.now() * 1000, from = to - secs * 1e6;
    range = await api(`/api/cameras/${encodeURIComponent(id)}/ranges?from=${from}&to=${to}`);
    const tl = $('#timeline', main);
    tl.querySelectorAll('.rec').forEach(e => e.remove());
    for (const [a, b] of range.recorded) {
      const bar = document.createElement('div');
      bar.className = 'rec';
      bar.style.left = `${(100 * (a - from)) / (to - from)}%`;
      bar.style.width = `${Math.max(0.2, (100 * (b - a)) / (to - from))}%`;
      tl.append(bar);
    }
    $('#axis-from', main).textContent = fmtTime(from);
    $('#axis-to', main).textContent = 'now';
    await eventStrip(id, main, from, to, play);
  };
  $('#timeline', main).onclick = e => {
    if (!range) return;
    const r = e.currentTarget.getBoundingClientRect();
    play(range.from + ((e.clientX - r.left) / r.width) * (range.to - range.from));
  };
  $('#window', main).onchange = timeline;
  const form = $('#export', main);
  const now = Date.now() * 1000;
  form.from.value = toLocalInput(now - 5 * 60e6);
  form.to.value = toLocalInput(now);
  const exportRange = () => [new Date(form.from.value).getTime() * 1000, new Date(form.to.value).getTime() * 1000];
  const hlsLink = () => {
    const [a, b] = exportRange();
    $('#hls', main).href = `/api/cameras/${encodeURIComponent(id)}/hls.m3u8?from=${a}&to=${b}`;
  };
  form.onchange = hlsLink; hlsLink();
  form.onsubmit = async e => {
    e.preventDefault();
    const [a, b] = exportRange();
    $('#export-error', main).textContent = '';
    const url = `/api/cameras/${encodeURIComponent(id)}/export?from=${a}&to=${b}`;
    // Ask first so an empty range reads as a message, not a broken download.
    const r = await api(`/api/cameras/${encodeURIComponent(id)}/ranges?from=${a}&to=${b}`).catch(err => ({ error: err.message }));
    if (r.error || !r.recorded?.length) { $('#export-error', main).textContent = r.error || 'nothing recorded in that range'; return; }
    const link = document.createElement('a');
    link.href = url; link.download = ''; document.body.append(link); link.click(); link.remove();
  };
  window.vigil.play = play;
  if (at) play(at); else goLive();
  await timeline();
  $('#counts-hours', main).onchange = () => countsChart(id, main);
  await Promise.all([rulesEditor(id, main, window.vigil.me).catch(e => { $('#rules-error', main).textContent = e.message; }), countsChart(id, main)]);
  let ticks = 0;
  const refresh = setInterval(() => {
    if (!document.body.contains(form)) return clearInterval(refresh);
    timeline().catch(() => {});
    if (++ticks % 6 === 0) countsChart(id, main).catch(() => {});
  }, 10000);
}

async function topicsPage() {
  const draw = async () => {
    const topics = await api('/api/topics');
    main.innerHTML = `<h1>Topics</h1><p class="muted">Each topic's delivery guarantee is chosen on purpose; the numbers show what it costs.</p>
      <table><tr><th>topic<th>guarantee<th>partitions<th>records/s<th>records held<th>retention<th>consumer groups (lag)<th>what it means</tr>
      ${topics.map(t => `<tr><td>${esc(t.name)}<td>${esc(t.delivery)}<td class=num>${t.partitions}
        <td class=num>${t.records_per_s == null ? '…' : t.records_per_s.toFixed(1)}<td class=num>${t.records}
        <td>${t.retention_ms == null ? '' : (t.retention_ms / 3600000).toFixed(1) + ' h'}
        <td>${t.groups.map(g => `${esc(g.group)} (${g.lag})`).join('<br>')}<td class=muted>${esc(t.meaning)}`).join('')}</table>`;
  };
  await draw();
  const timer = setInterval(() => { if (!location.hash.startsWith('#/topics')) clearInterval(timer); else draw().catch(() => {}); }, 2000);
}

async function statusPage() {
  const s = await api('/api/status');
  main.innerHTML = `<h1>Status</h1>
    <p>Archive: ${fmtBytes(s.archive_bytes)} used, ${fmtBytes(s.free_bytes)} free; reaches back to ${s.oldest_us ? fmtTime(s.oldest_us) : '—'}. Live feeds: ${s.live_feeds}.</p>
    <table><tr><th>camera<th>state<th>since<th>reconnects<th>last error<th>source<th>codec<th>newest frame<th>oldest frame<th>frames archived</tr>
    ${s.cameras.map(c => `<tr><td><a href="#/camera/${encodeURIComponent(c.id)}">${esc(c.id)}</a>
      <td class="${c.up ? 'up' : 'down'}">${c.up ? 'up' : 'down'}<td>${c.state ? fmtTime(c.state.since_us) : ''}
      <td class=num>${c.state ? c.state.reconnects : ''}<td class=muted>${esc(c.state?.last_error || '')}
      <td>${esc(c.source)}<td>${esc(c.codec || '')}
      <td>${c.last_us ? fmtTime(c.last_us) : '—'}<td>${c.first_us ? fmtTime(c.first_us) : '—'}<td class=num>${c.frames}`).join('')}</table>`;
}

function loginPage() {
  main.replaceChildren($('#login-page').content.cloneNode(true));
  $('#login').onsubmit = async e => {
    e.preventDefault();
    const f = e.target;
    try {
      await api('/api/login', { method: 'POST', body: JSON.stringify({ user: f.user.value, password: f.password.value }) });
      location.hash = '#/';
      await who();
    } catch (err) {
      $('#login-error').textContent = err.message;
    }
  };
}

async function who() {
  try {
    const me = await api('/api/me');
    window.vigil.me = me;
    $('#who').textContent = `${me.user} (${me.role})`;
    $('#logout').hidden = me.user === 'anonymous';
    return me;
  } catch (e) {
    $('#who').textContent = '';
    $('#logout').hidden = true;
    return null;
  }
}

$('#logout').onclick = async () => {
  await api('/api/logout', { method: 'POST' }).catch(() => {});
  location.hash = '#/login';
  await who();
};

async function route() {
  stopPlayers();
  const h = location.hash || '#/';
  try {
    if (h === '#/login') return loginPage();
    if (!(await who())) { location.hash = '#/login'; return; }
    if (h.startsWith('#/camera/')) {
      const [path, query] = h.slice(9).split('?');
      return await cameraPage(decodeURIComponent(path), Number(new URLSearchParams(query || '').get('t')) || null);
    }
    if (h === '#/events' || h.startsWith('#/events?')) return await eventsPage(new URLSearchParams(h.split('?')[1] || ''));
    if (h === '#/jobs') return await jobsPage();
    if (h.startsWith('#/jobs/')) return await jobPage(decodeURIComponent(h.slice(7)));
    if (h === '#/topics') return await topicsPage();
    if (h === '#/status') return await statusPage();
    return await gridPage();
  } catch (e) {
    if (location.hash !== '#/login') main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

window.addEventListener('hashchange', route);
route();
