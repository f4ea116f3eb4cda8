// Drives one bpool browser session with Puppeteer, the way a user's script would, and prints
// what it saw as one JSON line (tests/test_puppeteer.py checks it).
//
//   BPOOL_KEY=... node drive_session.mjs WS_URL PAGE_URL SCREENSHOT_PATH
//
// The key comes from the environment, not argv, so it never shows in a process listing.
// Exit status 1 with {"error": ...} when connecting or any step fails.
import { readFileSync } from 'node:fs';
import puppeteer from 'puppeteer-core';

const [wsUrl, pageUrl, shotPath] = process.argv.slice(2);
const pkg = new URL('./node_modules/puppeteer-core/package.json', import.meta.url);
const version = JSON.parse(readFileSync(pkg, 'utf8')).version;
const viewport = { width: 640, height: 360 };

let browser;
try {
  browser = await puppeteer.connect({
    browserWSEndpoint: wsUrl,
    headers: { Authorization: `Bearer ${process.env.BPOOL_KEY ?? ''}` },
    defaultViewport: viewport,
    protocolTimeout: 60_000,
  });
  const page = await browser.newPage();
  const response = await page.goto(pageUrl, { waitUntil: 'load', timeout: 60_000 });
  const out = {
    puppeteer: version,
    browser: await browser.version(),
    status: response.status(),
    title: await page.title(),
    text: await page.$eval('#x', (el) => el.textContent),
    value: await page.evaluate(() => window.n),
    viewport,
  };
  const shot = await page.screenshot({ path: shotPath, type: 'png' });
  out.screenshot_bytes = shot.length;
  await page.close();
  await browser.disconnect(); // detach only: the session lives on until it is deleted
  console.log(JSON.stringify(out));
} catch (err) {
  if (browser) await browser.disconnect().catch(() => {});
  console.log(JSON.stringify({ error: String(err?.message ?? err) }));
  process.exitCode = 1;
}
