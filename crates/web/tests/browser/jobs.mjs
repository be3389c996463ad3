// Whole-video jobs in a real browser: upload a file on the Jobs page, see
// the job progress to done, open it, play the video with its boxes and
// ids drawn. Run by crates/vigil/tests/web_jobs.rs against a running
// `vigil up` with a collector; prints one JSON line of results and exits
// non-zero on the first failed check (or after 150 s in all).
//
// env: VIGIL_URL, ADMIN_PASSWORD, VIDEO (a file with COCO objects)
import { adminPage, launch, waitUntil } from './launch.mjs';
import { basename } from 'node:path';

const url = process.env.VIGIL_URL;
const video = process.env.VIDEO;
const results = {};
const fail = msg => { throw new Error(msg); };
setTimeout(() => { console.error('jobs.mjs: over 150 s'); process.exit(3); }, 150000).unref();

const waitFor = (page, fn, arg, what, ms = 20000) => waitUntil(page, fn, arg, what,
  () => JSON.stringify({ jobs: document.querySelector('#job-list')?.innerText,
    error: document.querySelector('#job-error')?.innerText, stats: window.vigil?.jobStats }), ms);

const browser = await launch();
try {
  const page = await adminPage(browser, url, process.env.ADMIN_PASSWORD);

  // Upload on the Jobs page; the job shows up and ends done.
  await page.goto(`${url}#/jobs`);
  await page.setInputFiles('#upload input[type=file]', video);
  await page.click('#upload button');
  const name = basename(video);
  await waitFor(page, n => [...document.querySelectorAll('#job-list tr.job')].some(r => r.cells[0].textContent === n),
    name, 'the uploaded job listed', 30000);
  await waitFor(page, n => [...document.querySelectorAll('#job-list tr.job.done')].some(r => r.cells[0].textContent === n),
    name, 'the job done', 90000);
  results.state = await page.$eval('#job-list tr.job.done .state', td => td.textContent);

  // Open it: the video plays with boxes and ids.
  await page.click('#job-list tr.job.done a[href^="#/jobs/"]');
  await page.waitForSelector('#job-player video', { timeout: 10000 });
  await waitFor(page, () => (window.vigil.jobStats?.labelsShown || 0) > 3, null, 'boxes with labels over the video', 30000);
  results.labels = await page.evaluate(() => window.vigil.jobStats.lastLabels);
  results.played = await page.evaluate(() => window.vigil.jobVideo.currentTime);
  results.objects = await page.$$eval('#job-objects tr', rs => rs.map(r => r.cells[0].textContent));
  results.download = await page.$eval('#job-download', a => a.getAttribute('href'));
  if (!results.labels.some(l => l.startsWith('dog'))) fail(`no dog among ${results.labels}`);
  if (!results.objects.includes('dog')) fail(`no dog among the objects ${results.objects}`);
  results.ok = true;
  console.log(JSON.stringify(results));
} catch (e) {
  console.log(JSON.stringify({ ...results, ok: false, error: e.message }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
