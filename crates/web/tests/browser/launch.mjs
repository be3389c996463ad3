// What the browser tests share: chromium as the tests run it (headless,
// no network of its own, video that plays without a gesture) and logging
// in as admin.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
}

// A page logged in as admin at `url`, page errors on stderr.
export async function adminPage(browser, url, password) {
  const page = await browser.newPage();
  page.on('pageerror', e => console.error('page error:', e.message));
  await page.goto(`${url}#/login`);
  await page.fill('input[name=user]', 'admin');
  await page.fill('input[name=password]', password);
  await page.click('#login button');
  // Logged in once the app shows who: a page opened before that (under a
  // loaded machine the login takes seconds) would find no session.
  await page.waitForSelector('#who:not(:empty)', { timeout: 60000 });
  return page;
}

// Waits until `fn(arg)` holds in the page (polled every 200 ms); else
// throws, naming `what` and adding what `state()`, run in the page, says.
export async function waitUntil(page, fn, arg, what, state, ms) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 200 });
  } catch (e) {
    const seen = await page.evaluate(state).catch(() => '?');
    throw new Error(`${what}: not within ${ms} ms (${seen})`);
  }
}
