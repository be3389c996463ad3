// vigil web app, what the detector found: boxes over live and recorded
// video, and the events page. Loaded before app.js, whose helpers ($, api,
// esc, fmtTime, toLocalInput, main) it uses when called. API: docs/api.md.
'use strict';

// Live boxes stay this long after the newest record, then fade out.
const BOX_HOLD_MS = 1500, BOX_FADE_MS = 500;
// Recorded boxes: the record nearest the video's time, if this close.
const NEAR_US = 500e3;
// Recorded detections are fetched a minute at a time.
const CHUNK_US = 60e6;

const PALETTE = ['#ffcc00', '#00e5ff', '#ff4081', '#76ff03', '#ff9100', '#d500f9', '#00e676', '#2979ff'];
function colorOf(key) {
  let h = 0;
  for (const c of String(key)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

// The part of an object id after the camera (`camera/seq/index`).
const shortId = id => id.split('/').slice(-2).join('/');

function boxLabel(o) {
  return `${o.class} ${o.score.toFixed(2)}${o.object_id ? ' #' + shortId(o.object_id) : ''}`;
}

// A canvas over a player box that draws one detection record, scaled from
// the record's width/height to the video as shown (object-fit: contain).
// `stats` receives what was drawn (the browser tests read it). Live,
// `frameUs()` is the capture time of the frame on screen: boxes that trail
// it by over a second (a detector slower than the camera) say so.
class Overlay {
  constructor(box, stats, frameUs = null) {
    this.frameUs = frameUs;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'overlay';
    box.append(this.canvas);
    this.stats = Object.assign(stats, { detections: 0, labels: [], labelsShown: 0, lastLabels: [] });
    this.record = null; this.at = 0; this.raf = null;
  }

  remove() {
    if (this.raf) cancelAnimationFrame(this.raf);
    this.canvas.remove();
  }

  // Live: show `record` now; it fades out unless a newer one follows.
  live(record) {
    this.record = record; this.at = performance.now();
    this.stats.detections++;
    if (this.raf) return;
    const tick = () => {
      this.raf = null;
      const age = performance.now() - this.at;
      const alpha = age < BOX_HOLD_MS ? 1 : Math.max(0, 1 - (age - BOX_HOLD_MS) / BOX_FADE_MS);
      this.draw(this.record, alpha);
      if (alpha > 0 && this.canvas.isConnected) this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  }

  draw(record, alpha = 1) {
    const c = this.canvas, W = c.clientWidth, H = c.clientHeight, dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    if (!record || alpha <= 0 || !record.width || !record.height || !W || !H) { this.stats.labels = []; return; }
    const s = Math.min(W / record.width, H / record.height);
    const ox = (W - record.width * s) / 2, oy = (H - record.height * s) / 2;
    ctx.globalAlpha = alpha; ctx.lineWidth = 2; ctx.font = '12px system-ui, sans-serif'; ctx.textBaseline = 'top';
    const labels = [];
    for (const o of record.objects) {
      const [x1, y1, x2, y2] = o.box;
      const x = ox + x1 * s, y = oy + y1 * s, color = colorOf(o.object_id || o.class);
      ctx.strokeStyle = color;
      ctx.strokeRect(x, y, (x2 - x1) * s, (y2 - y1) * s);
      const label = boxLabel(o), ty = y >= 16 ? y - 16 : y;
      ctx.fillStyle = color;
      ctx.fillRect(x, ty, ctx.measureText(label).width + 6, 16);
      ctx.fillStyle = '#000';
      ctx.fillText(label, x + 3, ty + 2);
      labels.push(label);
    }
    const behind = this.frameUs ? (this.frameUs() - record.capture_us) / 1e6 : 0;
    this.stats.behindS = behind;
    if (behind > 1) {
      const note = `boxes ${behind.toFixed(1)} s behind the video`;
      ctx.fillStyle = '#000a';
      ctx.fillRect(4, H - 20, ctx.measureText(note).width + 8, 16);
      ctx.fillStyle = '#fc6';
      ctx.fillText(note, 8, H - 18);
    }
    ctx.globalAlpha = 1;
    this.stats.labels = labels;
    if (labels.length) { this.stats.labelsShown++; this.stats.lastLabels = labels; }
  }
}

// A camera's recorded detection records, fetched by the minute as
// playback needs them.
class RecordedDetections {
  constructor(camera) { this.camera = camera; this.chunks = new Map(); }

  want(at) {
    const k = Math.floor(at / CHUNK_US);
    for (const c of [k - 1, k, k + 1]) if (!this.chunks.has(c)) this.load(c);
  }

  async load(k) {
    const entry = { records: [] };
    this.chunks.set(k, entry);
    const [from, to] = [k * CHUNK_US, (k + 1) * CHUNK_US];
    try {
      const r = await api(`/api/cameras/${encodeURIComponent(this.camera)}/detections?from=${from}&to=${to}`);
      entry.records = r.records;
    } catch (e) {
      console.warn('detections', e.message);
    }
    // The minute still being recorded (or a failed fetch) is asked again.
    if (to > Date.now() * 1000 - 10e6 || !entry.records.length) setTimeout(() => this.chunks.delete(k), 5000);
  }

  near(at) {
    let best = null;
    const k = Math.floor(at / CHUNK_US);
    for (const c of [k - 1, k, k + 1]) {
      for (const r of this.chunks.get(c)?.records || []) {
        const d = Math.abs(r.capture_us - at);
        if (d <= NEAR_US && (!best || d < Math.abs(best.capture_us - at))) best = r;
      }
    }
    return best;
  }
}

// Maps a recording's media time (s) to capture time (µs): the recording
// starts at `X-Vigil-Start-Us` and leaves recording gaps out, so media
// time walks through the recorded stretches that `/ranges` lists.
async function playbackClock(camera, src, toUs) {
  const res = await fetch(src, { method: 'HEAD', credentials: 'same-origin' });
  const start = Number(res.headers.get('x-vigil-start-us'));
  if (!res.ok || !start) return null;
  const r = await api(`/api/cameras/${encodeURIComponent(camera)}/ranges?from=${start}&to=${Math.max(toUs, start + 1)}`);
  const stretches = r.recorded.length ? r.recorded : [[start, toUs]];
  return t => {
    let acc = 0;
    for (const [a, b] of stretches) {
      const len = (b - a) / 1e6;
      if (t <= acc + len) return a + (t - acc) * 1e6;
      acc += len;
    }
    return stretches[stretches.length - 1][1] + (t - acc) * 1e6;
  };
}

// Boxes over a playback <video>: each presented frame shows the record
// nearest its capture time. Returns a function that gives the capture time
// of the current position (null until known).
function playbackOverlay(camera, box, video, src, fromUs, toUs) {
  const stats = window.vigil.playbackStats = {};
  const overlay = new Overlay(box, stats);
  const recorded = new RecordedDetections(camera);
  let clock = null;
  playbackClock(camera, src, toUs).then(c => { clock = c; }, e => console.warn('playback clock', e.message));
  const now = () => (clock ? clock(video.currentTime) : fromUs + video.currentTime * 1e6);
  const draw = () => {
    if (!video.isConnected) { removeEventListener('resize', draw); return overlay.remove(); }
    const at = now();
    recorded.want(at);
    const r = recorded.near(at);
    if (r) stats.detections++;
    overlay.draw(r);
  };
  if ('requestVideoFrameCallback' in video) {
    const onFrame = () => { draw(); if (video.isConnected) video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
  }
  for (const ev of ['timeupdate', 'seeked', 'pause']) video.addEventListener(ev, draw);
  addEventListener('resize', draw);
  return now;
}

// ---- Events page -----------------------------------------------------------

function thumbnailUrl(camera, best) {
  const [x1, y1, x2, y2] = best.box;
  const box = [Math.floor(x1), Math.floor(y1), Math.ceil(x2), Math.ceil(y2)].join(',');
  return `/api/cameras/${encodeURIComponent(camera)}/thumbnail?seq=${best.seq}&box=${box}`;
}

function eventRow(e) {
  const o = e.object;
  const li = document.createElement('li');
  li.className = 'event';
  li.dataset.camera = e.camera; li.dataset.time = o.best.time_us; li.dataset.object = o.object_id;
  const img = document.createElement('img');
  img.className = 'thumb'; img.alt = o.class; img.loading = 'lazy';
  img.onerror = () => li.classList.add('no-thumb');
  img.src = thumbnailUrl(e.camera, o.best);
  const text = document.createElement('div');
  const until = e.kind === 'object-left' ? fmtTime(o.last_seen_us) : 'still in view';
  text.innerHTML = `<div><b>${esc(o.class)}</b> ${o.best.score.toFixed(2)} <span class="muted">#${esc(shortId(o.object_id))}</span></div>
    <div>${esc(e.camera)}</div><div class="muted">${esc(fmtTime(o.first_seen_us))} – ${esc(until)}</div>`;
  li.append(img, text);
  li.title = 'Play back this moment';
  // The best sighting, where the thumbnail comes from.
  li.onclick = () => { location.hash = `#/camera/${encodeURIComponent(e.camera)}?t=${o.best.time_us}`; };
  return li;
}

async function eventsPage(params) {
  const cams = await api('/api/cameras');
  main.replaceChildren($('#events-page').content.cloneNode(true));
  const form = $('#event-filter', main);
  for (const c of cams) form.camera.append(new Option(c.id, c.id));
  form.camera.value = params.get('camera') || '';
  form.class.value = params.get('class') || '';
  form.rule.value = params.get('rule') || '';
  const now = Date.now() * 1000;
  const from = Number(params.get('from')) || now - 24 * 3600e6 + 60e6, to = Number(params.get('to')) || null;
  form.from.value = toLocalInput(from);
  form.to.value = to ? toLocalInput(to) : '';
  form.onsubmit = ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (form.camera.value) q.set('camera', form.camera.value);
    if (form.class.value.trim()) q.set('class', form.class.value.trim());
    if (form.rule.value.trim()) q.set('rule', form.rule.value.trim());
    if (form.from.value) q.set('from', new Date(form.from.value).getTime() * 1000);
    if (form.to.value) q.set('to', new Date(form.to.value).getTime() * 1000);
    const hash = `#/events?${q}`;
    if (location.hash === hash) route(); else location.hash = hash;
  };
  const q = new URLSearchParams({ from: Math.floor(from), limit: '500' });
  if (to) q.set('to', Math.floor(to));
  for (const k of ['camera', 'class', 'rule']) if (params.get(k)) q.set(k, params.get(k));
  let events;
  try {
    events = await api(`/api/events?${q}`);
  } catch (e) {
    $('#event-error', main).textContent = e.message;
    return;
  }
  if (params.get('rule')) {
    // A rule's events (zones, lines, motion): each its own row.
    $('#event-list', main).replaceChildren(...events.map(ruleRow));
    $('#event-count', main).textContent = events.length ? `${events.length} events` : 'no events in that range';
    return;
  }
  // One row per object: its newest event (the list comes newest first).
  const seen = new Set();
  const rows = events.filter(e => !seen.has(e.object.object_id) && seen.add(e.object.object_id));
  $('#event-list', main).replaceChildren(...rows.map(eventRow));
  const classes = [...new Set(events.map(e => e.object.class))].sort();
  $('#event-classes', main).replaceChildren(...classes.map(c => new Option(c)));
  $('#event-count', main).textContent = rows.length ? `${rows.length} objects` : 'no events in that range';
}
