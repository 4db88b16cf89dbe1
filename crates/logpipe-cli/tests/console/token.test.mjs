// The console against a logpipe with [[auth.tokens]]: the page asks for a
// token (the server's 401 reason shown), takes one, and then shows data.
// Usage: node token.test.mjs BASE_URL TOKEN   (playwright-core via NODE_PATH,
// Debian's Chromium; exits 1 naming the failed step).
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node token.test.mjs BASE_URL TOKEN');
  process.exit(2);
}
const watchdog = setTimeout(() => { console.error('FAILED: timed out'); process.exit(1); }, 60000);
let step = 'launch chromium';
const browser = await chromium.launch({
  executablePath: process.env.LOGPIPE_TEST_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  step = 'the page asks for a token';
  await page.goto(base + '/');
  await page.locator('[data-testid=token-bar]').waitFor({ state: 'visible', timeout: 15000 });
  const why = await page.locator('#token-why').textContent();
  if (!why.includes('scope query')) throw new Error(`the bar says ${JSON.stringify(why)}`);
  console.log('ok 1 - the page asks for a token: ' + why);
  step = 'with the token the page shows data';
  await page.locator('[data-testid=token-input]').fill(token);
  await page.locator('[data-testid=token-save]').click();
  await page.waitForLoadState('load');
  await page.waitForFunction(() => {
    const e = document.querySelector('[data-testid=stat-records-accepted]');
    return e && /[1-9]/.test(e.textContent);
  }, null, { timeout: 20000 });
  if (!(await page.locator('[data-testid=token-bar]').isHidden())) throw new Error('the token bar is still shown');
  console.log('ok 2 - with the token the page shows data');
  clearTimeout(watchdog);
  await browser.close();
} catch (e) {
  console.error(`FAILED ${step}: ${e && e.message ? e.message : e}`);
  await browser.close();
  process.exit(1);
}
