// Glass-to-glass latency: headless chromium shows the live grid of every
// camera for SECONDS; the page reports each presented frame's latency to
// the server (which `vigil-bench live` reads back). Exits non-zero if a
// camera shows nothing.
//
// env: VIGIL_URL (a server run with --insecure-no-auth), MODE, SECONDS, CAMERAS
import { chromium } from 'playwright-core';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1600, height: 900 } })).newPage();
  await page.goto(`${process.env.VIGIL_URL}?mode=${process.env.MODE}#/`);
  await page.waitForSelector('.tile', { timeout: 20000 });
  await new Promise(r => setTimeout(r, Number(process.env.SECONDS) * 1000));
  const stats = await page.evaluate(() => Object.fromEntries(
    Object.entries(window.vigil.stats).map(([c, s]) => [c, { frames: s.frames, error: s.error }])));
  const dark = process.env.CAMERAS.split(',').filter(c => !(stats[c]?.frames > 0));
  if (dark.length) throw new Error(`no frames shown for ${dark}: ${JSON.stringify(stats)}`);
  console.log(JSON.stringify(stats));
} finally {
  await browser.close();
}
