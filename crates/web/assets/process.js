// The stream processor in the web app: a camera's zones and lines drawn
// over its video (admins; saved to /api/cameras/{id}/rules, which the
// processors apply without a restart), its rule and motion events as a
// strip under the timeline, and its counts as a chart.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';

function svgEl(name, attrs = {}) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// The size of the camera's analysed frames (the pixels rules are in): the
// newest detection record's of the last 5 minutes; without a detector
// running, the video's own (the main stream's, unless the page shows the
// sub stream), else 640x360.
async function frameSize(id, big) {
  const to = Date.now() * 1000;
  try {
    const r = await api(`/api/cameras/${encodeURIComponent(id)}/detections?from=${to - 300e6}&to=${to}`);
    const last = r.records[r.records.length - 1];
    if (last?.width && last?.height) return [last.width, last.height];
  } catch (e) { /* no detector: fall through */ }
  const v = big.querySelector('video');
  if (v?.videoWidth) return [v.videoWidth, v.videoHeight];
  return [640, 360];
}

// The rules card and its overlay on the camera page.
async function rulesEditor(id, main, me) {
  const svg = $('#rules-svg', main), card = $('#rules-card', main), err = $('#rules-error', card);
  const admin = me?.role === 'admin';
  card.querySelectorAll('.admin-only').forEach(e => { e.hidden = !admin; });
  let rules = await api(`/api/cameras/${encodeURIComponent(id)}/rules`);
  const [W, H] = await frameSize(id, $('#big', main));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
  let draft = null; // { kind: 'zone'|'line', points: [[x, y]...] }
  window.vigil.rules = { size: [W, H], get rules() { return rules; }, get draft() { return draft; } };

  const label = (text, [x, y]) => { const t = svgEl('text', { x, y: y - 6 }); t.textContent = text; return t; };
  const draw = () => {
    svg.replaceChildren();
    for (const z of rules.zones) {
      svg.append(svgEl('polygon', { points: z.points.map(p => p.join(',')).join(' ') }), label(z.name, z.points[0]));
    }
    for (const l of rules.lines) {
      // An arrow head at the end: crossings are named as seen facing from start to end.
      const [a, b] = [l.start, l.end], dx = b[0] - a[0], dy = b[1] - a[1], n = Math.hypot(dx, dy) || 1, k = Math.min(14, n / 4);
      const head = [[b[0] - k * (dx + dy / 2) / n, b[1] - k * (dy - dx / 2) / n], b, [b[0] - k * (dx - dy / 2) / n, b[1] - k * (dy + dx / 2) / n]];
      svg.append(svgEl('line', { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }),
        svgEl('polyline', { points: head.map(p => p.join(',')).join(' ') }), label(l.name, a));
    }
    if (draft?.points.length) {
      const pts = draft.points.map(p => p.join(',')).join(' ');
      svg.append(svgEl(draft.kind === 'zone' ? 'polygon' : 'polyline', { points: pts, class: 'draft' }));
    }
    $('#rules-source', card).textContent = rules.source === 'web'
      ? `drawn here by ${rules.by}, ${fmtTime(rules.updated_us)}` : 'from the config file';
    const list = $('#rule-list', card);
    list.replaceChildren(...[...rules.zones.map(z => ['zone', z]), ...rules.lines.map(l => ['line', l])].map(([kind, r]) => {
      const li = document.createElement('li');
      li.dataset.rule = r.name;
      li.innerHTML = `<b>${esc(r.name)}</b> <span class="muted">${kind}${r.classes?.length ? ': ' + esc(r.classes.join(', ')) : ''}</span>
        <a href="#/events?camera=${encodeURIComponent(id)}&rule=${encodeURIComponent(r.name)}">events</a>`;
      if (admin) {
        const del = document.createElement('button');
        del.textContent = 'remove';
        del.onclick = () => { rules.zones = rules.zones.filter(x => x !== r); rules.lines = rules.lines.filter(x => x !== r); draw(); };
        li.append(del);
      }
      return li;
    }));
  };
  const hint = text => { $('#draw-hint', card).textContent = text; };
  const start = kind => {
    draft = { kind, points: [] };
    svg.classList.add('drawing');
    $('#finish-rule', card).disabled = false;
    hint(kind === 'zone' ? 'Click the zone\'s corners on the video, then Finish.' : 'Click where the line starts and where it ends.');
    draw();
  };
  const finish = () => {
    err.textContent = '';
    const name = $('#rule-name', card).value.trim();
    if (!draft) return;
    const need = draft.kind === 'zone' ? 3 : 2;
    if (draft.points.length < need) { err.textContent = `a ${draft.kind} needs ${need} points`; return; }
    if (!name) { err.textContent = 'name it first'; return; }
    if (draft.kind === 'zone') rules.zones.push({ name, points: draft.points });
    else rules.lines.push({ name, start: draft.points[0], end: draft.points[1] });
    draft = null;
    svg.classList.remove('drawing');
    $('#finish-rule', card).disabled = true;
    $('#rule-name', card).value = '';
    hint('Not saved yet: Save applies the rules to the running processors.');
    draw();
  };
  svg.onclick = e => {
    if (!draft) return;
    const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());
    draft.points.push([Math.round(Math.min(W, Math.max(0, p.x))), Math.round(Math.min(H, Math.max(0, p.y)))]);
    if (draft.kind === 'line' && draft.points.length === 2) finish(); else draw();
  };
  $('#draw-zone', card).onclick = () => start('zone');
  $('#draw-line', card).onclick = () => start('line');
  $('#finish-rule', card).onclick = finish;
  $('#save-rules', card).onclick = async () => {
    err.textContent = '';
    const strip = r => Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'camera'));
    try {
      await api(`/api/cameras/${encodeURIComponent(id)}/rules`, {
        method: 'PUT', body: JSON.stringify({ zones: rules.zones.map(strip), lines: rules.lines.map(strip) }),
      });
      rules = await api(`/api/cameras/${encodeURIComponent(id)}/rules`);
      hint('Saved: the processors apply them to the frames that follow.');
      draw();
    } catch (e) { err.textContent = e.message; }
  };
  $('#reset-rules', card).onclick = async () => {
    err.textContent = '';
    try {
      await api(`/api/cameras/${encodeURIComponent(id)}/rules`, { method: 'DELETE' });
      rules = await api(`/api/cameras/${encodeURIComponent(id)}/rules`);
      hint('');
      draw();
    } catch (e) { err.textContent = e.message; }
  };
  draw();
}

// Rule and motion events of [from, to) as marks under the timeline; a
// click plays the moment back.
async function eventStrip(id, main, from, to, play) {
  const strip = $('#event-strip', main);
  let events = [];
  try {
    const q = new URLSearchParams({ camera: id, rule: '*', from: Math.floor(from), to: Math.floor(to), limit: '1000' });
    events = await api(`/api/events?${q}`);
  } catch (e) { /* the strip stays empty */ }
  strip.replaceChildren(...events.map(e => {
    const m = document.createElement('div');
    const kind = e.rule.rule === 'motion' ? (e.kind === 'tamper' ? 'tamper' : 'motion') : e.kind.startsWith('line') ? 'line' : 'zone';
    m.className = `mark ${kind}`;
    m.style.left = `${(100 * (e.time_us - from)) / (to - from)}%`;
    m.title = `${fmtTime(e.time_us)} ${e.detail}`;
    m.onclick = ev => { ev.stopPropagation(); play(e.time_us - 2e6); };
    return m;
  }));
  window.vigil.strip = events.length;
}

// The camera's counts per rule: a bar per minute (entries or crossings up,
// exits down; motion seconds for the motion row) and mean occupancy.
async function countsChart(id, main) {
  const box = $('#counts-chart', main);
  const hours = Number($('#counts-hours', main).value);
  const to = Date.now() * 1000, from = to - hours * 3600e6;
  let rows;
  try {
    rows = await api(`/api/cameras/${encodeURIComponent(id)}/counts?from=${Math.floor(from)}&to=${Math.floor(to)}`);
  } catch (e) { box.innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  const byRule = new Map();
  for (const c of rows) {
    if (!byRule.has(c.rule)) byRule.set(c.rule, new Map());
    const m = byRule.get(c.rule);
    const t = m.get(c.start_us) || { up: 0, down: 0, occ: 0, motion: 0 };
    t.up += c.entries + c.crossings_left_to_right; t.down += c.exits + c.crossings_right_to_left;
    t.occ += c.occupancy_mean; t.motion += c.motion_s;
    m.set(c.start_us, t);
  }
  if (!byRule.size) { box.innerHTML = '<p class="muted">No counts in this range (they come a minute at a time).</p>'; return; }
  const x = us => (1000 * (us - from)) / (to - from), bw = Math.max(1, 1000 / (hours * 60) - 0.5);
  box.replaceChildren(...[...byRule].map(([rule, minutes]) => {
    const row = document.createElement('div');
    row.className = 'counts-row'; row.dataset.rule = rule;
    const vals = [...minutes.values()];
    const sum = k => vals.reduce((s, t) => s + t[k], 0);
    const motion = rule === 'motion';
    const max = Math.max(1, ...vals.map(t => motion ? t.motion : Math.max(t.up, t.down)));
    const peakOcc = Math.max(1, ...vals.map(t => t.occ));
    const svg = svgEl('svg', { viewBox: '0 0 1000 60', preserveAspectRatio: 'none' });
    const occ = [];
    for (const [start, t] of [...minutes].sort((a, b) => a[0] - b[0])) {
      const up = motion ? t.motion : t.up;
      if (up) svg.append(svgEl('rect', { class: 'in', x: x(start), width: bw, y: 30 - (28 * up) / max, height: (28 * up) / max }));
      if (!motion && t.down) svg.append(svgEl('rect', { class: 'out', x: x(start), width: bw, y: 30, height: (28 * t.down) / max }));
      if (!motion) occ.push(`${x(start) + bw / 2},${58 - (56 * t.occ) / peakOcc}`);
    }
    if (occ.length > 1 && vals.some(t => t.occ > 0)) svg.append(svgEl('polyline', { points: occ.join(' ') }));
    const head = document.createElement('div');
    head.innerHTML = motion
      ? `<b>motion</b> <span class="muted">${sum('motion').toFixed(0)} s of motion</span>`
      : `<b>${esc(rule)}</b> <span class="muted">in / left-to-right ${sum('up')} (up), out / right-to-left ${sum('down')} (down); yellow: mean occupancy</span>`;
    row.append(head, svg);
    return row;
  }));
  window.vigil.counts = Object.fromEntries([...byRule].map(([r, m]) => [r, [...m.values()].reduce((s, t) => s + t.up, 0)]));
}

// A rule event on the events page.
function ruleRow(e) {
  const r = e.rule;
  const li = document.createElement('li');
  li.className = 'event rule-event';
  li.dataset.camera = e.camera; li.dataset.time = e.time_us; li.dataset.rule = r.rule; li.dataset.kind = e.kind;
  const img = document.createElement('img');
  img.className = 'thumb'; img.alt = r.class; img.loading = 'lazy';
  img.onerror = () => li.classList.add('no-thumb');
  if (r.box) img.src = thumbnailUrl(e.camera, { seq: r.seq, box: r.box }); else li.classList.add('no-thumb');
  const text = document.createElement('div');
  const who = r.object_id ? ` <span class="muted">#${esc(shortId(r.object_id))}</span>` : '';
  text.innerHTML = `<div><b>${esc(e.kind)}</b> ${esc(r.rule)}</div><div>${esc(r.class)}${who}</div>
    <div>${esc(e.camera)}</div><div class="muted">${esc(fmtTime(e.time_us))} ${esc(e.detail)}</div>`;
  li.append(img, text);
  li.title = 'Play back this moment';
  li.onclick = () => { location.hash = `#/camera/${encodeURIComponent(e.camera)}?t=${e.time_us - 2e6}`; };
  return li;
}
