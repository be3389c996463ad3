// Detections in a real browser: boxes over the live view, the events page
// with thumbnails, a click that plays the moment back with its boxes.
// Run by crates/vigil/tests/web_detect.rs against a running `vigil up`
// whose camera CAMERA shows COCO objects; prints one JSON line of results
// and exits non-zero on the first failed check (or after 150 s in all).
//
// env: VIGIL_URL, ADMIN_PASSWORD, CAMERA
import { adminPage, launch, waitUntil } from './launch.mjs';

const url = process.env.VIGIL_URL;
const cam = process.env.CAMERA;
const results = {};
const fail = msg => { throw new Error(msg); };
setTimeout(() => { console.error('detect.mjs: over 150 s'); process.exit(3); }, 150000).unref();

const waitFor = (page, fn, arg, what, ms = 20000) => waitUntil(page, fn, arg, what,
  () => JSON.stringify({ live: window.vigil?.stats, playback: window.vigil?.playbackStats }), ms);

const browser = await launch();
try {
  const page = await adminPage(browser, url, process.env.ADMIN_PASSWORD);
  await page.waitForSelector('.tile', { timeout: 10000 });

  // Live: the camera's view gets boxes with labels.
  await page.goto(`${url}#/camera/${encodeURIComponent(cam)}`);
  await page.waitForSelector('#big canvas.overlay', { timeout: 10000 });
  await waitFor(page, c => (window.vigil.stats[c]?.labelsShown || 0) > 0, cam, 'a live box with a label', 45000);
  results.live_labels = await page.evaluate(c => window.vigil.stats[c].lastLabels, cam);

  // Events: a list with thumbnails that loaded.
  await page.goto(`${url}#/events?camera=${encodeURIComponent(cam)}`);
  await page.waitForSelector('.event', { timeout: 20000 });
  await waitFor(page, () => [...document.querySelectorAll('.event img.thumb')].some(i => i.complete && i.naturalWidth > 0),
    null, 'a thumbnail loaded');
  results.events = await page.$$eval('.event', es => es.length);
  results.thumbnail = await page.$eval('.event img.thumb', i => [i.naturalWidth, i.naturalHeight]);
  const first = await page.$eval('.event', e => ({ camera: e.dataset.camera, time: Number(e.dataset.time) }));

  // A click plays that moment back, with its boxes.
  await page.click('.event');
  await waitFor(page, () => document.querySelector('#mode')?.textContent === 'playback', null, 'the camera page in playback');
  await waitFor(page, () => window.vigil.playback && window.vigil.playback.currentTime > 0.5, null, 'playback advances');
  results.playback_hash = await page.evaluate(() => location.hash);
  if (!results.playback_hash.includes(`t=${first.time}`)) fail(`playback at ${results.playback_hash}, want t=${first.time}`);
  await waitFor(page, () => (window.vigil.playbackStats?.labelsShown || 0) > 0, null, 'a box over recorded video');
  results.playback_labels = await page.evaluate(() => window.vigil.playbackStats.lastLabels);
  results.ok = true;
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
