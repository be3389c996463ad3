// The web app in a real browser: Debian's chromium, driven by playwright-core.
// Run by crates/vigil/tests/web.rs against a running `vigil up`; prints one
// JSON line of results and exits non-zero on the first failed check.
//
// env: VIGIL_URL, ADMIN_PASSWORD, VIEWER_PASSWORD, CAMERAS (comma list, the
// viewer may see only the first), DOWNLOAD_DIR, MODE (mse|webcodecs)
import { chromium } from 'playwright-core';
import { waitUntil } from './launch.mjs';

const url = process.env.VIGIL_URL;
const cameras = process.env.CAMERAS.split(',');
const mode = process.env.MODE || 'mse';
const results = { mode };
const fail = msg => { throw new Error(msg); };
const sleep = ms => new Promise(r => setTimeout(r, ms));

const waitFor = (page, fn, arg, what, ms = 15000) =>
  waitUntil(page, fn, arg, what, () => JSON.stringify(window.vigil?.stats), ms);

async function login(page, user, password) {
  await page.goto(`${url}?mode=${mode}#/login`);
  await page.fill('input[name=user]', user);
  await page.fill('input[name=password]', password);
  await page.click('#login button');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.on('pageerror', e => console.error('page error:', e.message));

  // A wrong password is refused, with a message.
  await login(page, 'admin', 'not-the-password');
  await page.waitForFunction(() => document.querySelector('#login-error')?.textContent.length > 0, null, { timeout: 10000 });
  results.wrong_password = await page.textContent('#login-error');

  // The grid: video advances for every camera.
  await login(page, 'admin', process.env.ADMIN_PASSWORD);
  await page.waitForSelector('.tile', { timeout: 10000 });
  const tiles = await page.$$eval('.tile', ts => ts.map(t => t.dataset.camera));
  if (tiles.sort().join() !== [...cameras].sort().join()) fail(`grid shows ${tiles}, want ${cameras}`);
  await waitFor(page, cams => cams.every(c => (window.vigil.stats[c]?.frames || 0) >= 5), cameras, 'every tile shows frames');
  const before = await page.evaluate(() => Object.fromEntries(Object.entries(window.vigil.stats).map(([c, s]) => [c, s.frames])));
  await sleep(2000);
  const after = await page.evaluate(() => Object.fromEntries(Object.entries(window.vigil.stats).map(([c, s]) => [c, s.frames])));
  for (const c of cameras) if (!(after[c] > before[c])) fail(`camera ${c} did not advance: ${before[c]} → ${after[c]}`);
  results.grid_frames = after;
  results.codecs = await page.evaluate(() => Object.fromEntries(Object.entries(window.vigil.stats).map(([c, s]) => [c, s.codec])));

  // One camera, large; then play back a recorded range.
  const cam = cameras[0];
  await page.click(`.tile[data-camera="${cam}"]`);
  await page.waitForSelector('#big', { timeout: 10000 });
  await waitFor(page, c => (window.vigil.stats[c]?.frames || 0) >= 5, cam, 'the large view shows frames');
  await page.evaluate(() => window.vigil.play(Date.now() * 1000 - 8e6));
  await waitFor(page, () => window.vigil.playback && window.vigil.playback.currentTime > 1.0, null, 'playback advances');
  results.playback_time = await page.evaluate(() => window.vigil.playback.currentTime);

  // Export the last few seconds: a download.
  const now = Date.now();
  const local = ms => { const d = new Date(ms); return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); };
  await page.fill('#export input[name=from]', local(now - 6000));
  await page.fill('#export input[name=to]', local(now));
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 20000 }), page.click('#export button')]);
  const saved = `${process.env.DOWNLOAD_DIR}/${download.suggestedFilename()}`;
  await download.saveAs(saved);
  results.download = saved;

  // Log out; a viewer sees only their camera and cannot open another.
  await page.click('#logout');
  await login(page, 'viewer1', process.env.VIEWER_PASSWORD);
  await page.waitForSelector('.tile', { timeout: 10000 });
  const viewerTiles = await page.$$eval('.tile', ts => ts.map(t => t.dataset.camera));
  if (viewerTiles.join() !== cameras[0]) fail(`viewer grid shows ${viewerTiles}`);
  const other = cameras[1];
  const status = await page.evaluate(async c => (await fetch(`/api/cameras/${c}/ranges`)).status, other);
  if (status !== 403) fail(`viewer fetching ${other}: HTTP ${status}, want 403`);
  await page.goto(`${url}?mode=${mode}#/camera/${other}`);
  await page.waitForSelector('.error', { timeout: 10000 });
  results.viewer_other_camera = await page.textContent('.error');
  results.ok = true;
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
