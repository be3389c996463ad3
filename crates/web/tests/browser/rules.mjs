// The stream processor in a real browser: a camera's rules over its video,
// its counts chart and event strip, an admin drawing a zone and saving it,
// and the events page listing a rule's events. Run by
// crates/vigil/tests/rules.rs against a running `vigil serve` whose camera
// CAMERA has a drawn zone `yard` with four entries; prints one JSON line
// of results and exits non-zero on the first failed check (or after 150 s).
//
// env: VIGIL_URL, ADMIN_PASSWORD, CAMERA
import { adminPage, launch, waitUntil } from './launch.mjs';

const url = process.env.VIGIL_URL;
const cam = process.env.CAMERA;
const results = {};
const fail = msg => { throw new Error(msg); };
setTimeout(() => { console.error('rules.mjs: over 150 s'); process.exit(3); }, 150000).unref();

const waitFor = (page, fn, arg, what, ms = 20000) => waitUntil(page, fn, arg, what,
  () => JSON.stringify({ counts: window.vigil?.counts, strip: window.vigil?.strip,
    error: document.querySelector('#rules-error')?.textContent, hint: document.querySelector('#draw-hint')?.textContent,
    rules: window.vigil?.rules?.rules, draft: window.vigil?.rules?.draft }), ms);

const browser = await launch();
try {
  const page = await adminPage(browser, url, process.env.ADMIN_PASSWORD);
  await page.goto(`${url}#/camera/${encodeURIComponent(cam)}`);

  // The drawn zone, over the video and in the list; its counts; its events on the strip.
  await page.waitForSelector('#rule-list li[data-rule="yard"]', { timeout: 20000 });
  results.overlay_polygons = await page.$$eval('#rules-svg polygon', ps => ps.length);
  if (results.overlay_polygons < 1) fail('no zone drawn over the video');
  await waitFor(page, () => window.vigil.counts?.yard === 4, null, 'the counts chart with yard\'s 4 entries');
  results.counts = await page.evaluate(() => window.vigil.counts);
  await waitFor(page, () => window.vigil.strip >= 4, null, 'rule events on the strip under the timeline');
  results.strip_marks = await page.$$eval('#event-strip .mark', ms => ms.length);

  // An admin draws a zone: three corners, a name, Finish, Save.
  await page.click('#draw-zone');
  // (Clicking the button scrolled the page: the video back into view.)
  // The picture as shown: the frame's size fitted into the player.
  const box = await page.$eval('#rules-svg', s => {
    s.scrollIntoView();
    const r = s.getBoundingClientRect(), [w, h] = window.vigil.rules.size;
    const k = Math.min(r.width / w, r.height / h);
    return [r.x + (r.width - w * k) / 2, r.y + (r.height - h * k) / 2, w * k, h * k];
  });
  for (const [fx, fy] of [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]]) {
    await page.mouse.click(box[0] + fx * box[2], box[1] + fy * box[3]);
  }
  await page.fill('#rule-name', 'porch');
  await page.click('#finish-rule');
  await page.click('#save-rules');
  await waitFor(page, () => document.querySelector('#draw-hint').textContent.startsWith('Saved')
    && window.vigil.rules.rules.zones.some(z => z.name === 'porch'), null, 'the zone saved');
  results.size = await page.evaluate(() => window.vigil.rules.size);
  results.porch = await page.evaluate(() => window.vigil.rules.rules.zones.find(z => z.name === 'porch').points);
  results.source = await page.evaluate(() => window.vigil.rules.rules.source);

  // The events page lists the rule's events.
  await page.goto(`${url}#/events?camera=${encodeURIComponent(cam)}&rule=yard`);
  await page.waitForSelector('.rule-event', { timeout: 20000 });
  results.rule_events = await page.$$eval('.rule-event', es => es.map(e => e.dataset.kind));
  results.ok = true;
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
