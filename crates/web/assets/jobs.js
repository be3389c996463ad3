// vigil web app, whole-video jobs: upload a file (it goes to Kafka in
// chunks, as `vigil submit` sends it), follow the jobs, open a finished one
// to play its video with the boxes and ids the collectors found, download
// the results. Loaded before app.js, whose helpers ($, api, esc, main) it
// uses when called; Overlay is detect.js's. API: docs/api.md.
'use strict';

// A frame's boxes are drawn while the video is within this of its time.
const JOB_NEAR_US = 250e3;

const jobProgress = j => ({
  queued: 'queued',
  receiving: `receiving ${j.chunks_received}/${j.chunks} chunks`,
  analysing: `analysing ${j.frames_analysed}${j.frames ? '/' + j.frames : ''} frames`,
  done: `done, ${j.frames_analysed} frames`,
  failed: 'failed: ' + (j.error || ''),
})[j.state] || j.state;

// Sends `file` with the upload's progress in `bar`; the submission's answer.
function uploadFile(file, bar) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/jobs?name=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader('X-Vigil-CSRF', '1');
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = e => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) location.hash = '#/login';
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error(body?.error || xhr.statusText || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error('upload failed: the server is unreachable'));
    xhr.send(file);
  });
}

async function jobsPage() {
  main.replaceChildren($('#jobs-page').content.cloneNode(true));
  const list = $('#job-list', main), error = $('#job-error', main), bar = $('#upload-progress', main);
  const draw = async () => {
    const { jobs } = await api('/api/jobs');
    list.innerHTML = jobs.length ? '' : '<tr><td colspan="4" class="muted">No jobs yet: upload a video.</td></tr>';
    for (const j of jobs) {
      const tr = document.createElement('tr');
      tr.className = 'job ' + j.state;
      tr.dataset.id = j.id;
      const open = j.state === 'done' ? `<a href="#/jobs/${encodeURIComponent(j.id)}">open</a> · ` +
        `<a href="/api/jobs/${encodeURIComponent(j.id)}/results?download=1">results (JSON)</a>` : '';
      tr.innerHTML = `<td>${esc(j.name)}</td><td class="state">${esc(jobProgress(j))}</td>` +
        `<td class="muted">${esc(j.id.slice(0, 16))}…</td><td>${open}</td>`;
      list.append(tr);
    }
  };
  $('#upload', main).onsubmit = async ev => {
    ev.preventDefault();
    const file = $('#upload input[type=file]', main).files[0];
    if (!file) return;
    error.textContent = ''; bar.hidden = false; bar.value = 0;
    try {
      const sent = await uploadFile(file, bar);
      error.textContent = sent.known ? `${file.name} was submitted before (${sent.known}): not sent again` : '';
      await draw();
    } catch (e) {
      error.textContent = e.message;
    }
    bar.hidden = true;
  };
  await draw();
  const timer = setInterval(() => {
    if (location.hash !== '#/jobs') clearInterval(timer); else draw().catch(() => {});
  }, 1000);
}

// The frame record nearest `us` in `frames` (sorted by time_us), if close.
function nearestFrame(frames, us) {
  let lo = 0, hi = frames.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].time_us < us) lo = mid + 1; else hi = mid;
  }
  let best = null;
  for (const f of [frames[lo - 1], frames[lo]]) {
    if (f && Math.abs(f.time_us - us) <= JOB_NEAR_US && (!best || Math.abs(f.time_us - us) < Math.abs(best.time_us - us))) best = f;
  }
  return best;
}

async function jobPage(id) {
  main.replaceChildren($('#job-page').content.cloneNode(true));
  const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
  $('.job-name', main).textContent = job.name;
  $('#job-state', main).textContent = jobProgress(job);
  const q = encodeURIComponent(id);
  $('#job-download', main).href = `/api/jobs/${q}/results?download=1`;
  const r = await api(`/api/jobs/${q}/results`);
  const s = r.summary;
  if (s) {
    const classes = Object.entries(s.objects).map(([c, n]) => `${n} ${c}`).join(', ') || 'no objects';
    $('#job-summary', main).textContent =
      `${s.frames_analysed} frames, ${(s.duration_us / 1e6).toFixed(1)} s of video analysed in ${(s.processing_ms / 1e3).toFixed(1)} s by ${s.model}: ${classes}`;
  }
  // The video, with each analysed frame's boxes over it.
  const box = $('#job-player', main);
  const video = document.createElement('video');
  video.controls = true; video.muted = true; video.playsInline = true;
  video.src = `/api/jobs/${q}/video`;
  box.prepend(video);
  const stats = window.vigil.jobStats = { frames: r.frames.length };
  const overlay = new Overlay(box, stats);
  window.vigil.jobVideo = video;
  video.onerror = () => { $('#job-error', main).textContent = 'the video cannot be played (its chunks may be gone from Kafka)'; };
  const onFrame = (now, md) => {
    if (!box.isConnected) return;
    overlay.draw(nearestFrame(r.frames, md.mediaTime * 1e6));
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const rows = $('#job-objects', main);
  for (const o of r.objects) {
    const tr = document.createElement('tr');
    tr.innerHTML = `<td>${esc(o.class)}</td><td class="muted">${esc(o.object_id.split('/').slice(1).join('/'))}</td>` +
      `<td class="num">${(o.first_us / 1e6).toFixed(2)}-${(o.last_us / 1e6).toFixed(2)} s</td>` +
      `<td class="num">${o.frames_seen}</td><td class="num">${o.best_score.toFixed(2)}</td>`;
    tr.onclick = () => { video.currentTime = o.first_us / 1e6; };
    rows.append(tr);
  }
  video.play().catch(() => {});
}
