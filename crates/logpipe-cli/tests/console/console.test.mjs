// The web console in a real browser: Debian's Chromium driven by npm
// `playwright-core` (which never downloads a browser of its own).
//
//   node console.test.mjs BASE_URL SCREENSHOT_DIR
//
// BASE_URL is a running `logpipe up` with data flowing (e.g.
// http://127.0.0.1:34567). playwright-core is found next to this file, in
// NODE_PATH (ES-module imports ignore NODE_PATH, so it is loaded with
// createRequire) or in a parent's node_modules. LOGPIPE_TEST_CHROMIUM names
// the browser (default /usr/bin/chromium).
//
// One line per passed check; on a failure the check's name and the reason,
// a failure.png in SCREENSHOT_DIR, and exit code 1. The run is bounded:
// every wait has a timeout and the whole run stops after 90 s.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const TOTAL_MS = 85_000;
const started = Date.now();
const deadline = started + TOTAL_MS;
const base = (process.argv[2] || '').replace(/\/+$/, '');
const shots = process.argv[3] || '.';
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node console.test.mjs BASE_URL SCREENSHOT_DIR (e.g. http://127.0.0.1:34567 /tmp/shots)');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

let chromium;
try {
  ({ chromium } = createRequire(import.meta.url)('playwright-core'));
} catch (e) {
  console.error(`FAILED setup: cannot load playwright-core (${e.message}); install it with npm and set NODE_PATH to its node_modules`);
  process.exit(1);
}

/** A timeout for one wait: at most `ms`, and never past the run's deadline. */
const within = (ms) => Math.max(500, Math.min(ms, deadline - Date.now()));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tid = (id) => `[data-testid="${id}"]`;

class CheckFailed extends Error {}
const fail = (reason) => { throw new CheckFailed(reason); };

let browser = null;
let page = null;
let current = 'setup';
let passed = 0;
const problems = []; // console errors and page errors
let badSqlWindow = false; // the one deliberate failing request (step 6)
let allowedResourceErrors = 0;

async function finish(code, reason) {
  if (code !== 0) {
    console.error(`FAILED ${current}: ${reason}`);
    if (page) {
      try {
        await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true, timeout: 5000 });
        console.error(`screenshot: ${join(shots, 'failure.png')}`);
      } catch (_) { /* the page is gone */ }
    }
  }
  console.log(`${passed} passed, ${code === 0 ? 0 : 1} failed`);
  try { if (browser) await Promise.race([browser.close(), sleep(5000)]); } catch (_) { /* closing anyway */ }
  process.exit(code);
}

const watchdog = setTimeout(() => {
  finish(1, `the run took longer than ${Math.round((TOTAL_MS + 3000) / 1000)} s`);
}, TOTAL_MS + 3000);

function assertNoProblems() {
  if (problems.length) fail(`console or page errors: ${problems.join(' | ')}`);
}

async function check(name, body) {
  current = name;
  await body();
  assertNoProblems();
  passed += 1;
  console.log(`ok ${passed} - ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

async function tab(name) {
  await page.locator(tid(`tab-${name}`)).click({ timeout: within(5000) });
  await page.locator(`section#${name}`).waitFor({ state: 'visible', timeout: within(5000) });
}

/** A number shown by an element: its data-value, else its digits. */
async function numberOf(selector) {
  const loc = page.locator(selector);
  const raw = (await loc.getAttribute('data-value', { timeout: within(5000) })) ?? (await loc.textContent({ timeout: within(5000) }));
  const n = Number(String(raw).replace(/[^0-9.-]/g, ''));
  return Number.isFinite(n) && String(raw).trim() !== '' ? n : NaN;
}

const pointsOf = async (name) => Number(await page.locator(tid(`chart-${name}`)).getAttribute('data-points', { timeout: within(5000) }));

async function waitFor(what, ms, probe, every = 500) {
  const end = Date.now() + within(ms);
  let last;
  for (;;) {
    last = await probe();
    if (last === true) return;
    if (Date.now() >= end) fail(`${what} (waited ${Math.round(ms / 1000)} s${last !== false && last !== undefined ? `; last seen: ${last}` : ''})`);
    await sleep(every);
  }
}

async function runSqlOnce(sql) {
  await page.locator(tid('sql-input')).fill(sql, { timeout: within(5000) });
  await page.locator(tid('sql-run')).click({ timeout: within(5000) });
  await page.waitForFunction(
    (sel) => { const s = document.querySelector(sel); return s && s.dataset.state !== 'running'; },
    tid('sql-status'), { timeout: within(15000), polling: 100 });
  const status = page.locator(tid('sql-status'));
  return { state: await status.getAttribute('data-state'), text: (await status.textContent()).trim() };
}

const token = randomBytes(6).toString('hex');
const message = `console-tail-${token}`;
const today = new Date().toISOString().slice(0, 10);

try {
  current = 'launch chromium';
  browser = await chromium.launch({
    executablePath: process.env.LOGPIPE_TEST_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    timeout: within(30000),
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(10000);
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (badSqlWindow && allowedResourceErrors === 0 && text.startsWith('Failed to load resource')) {
      allowedResourceErrors += 1;
      return;
    }
    problems.push(`console.error: ${text}`);
  });

  await check('page loads without errors', async () => {
    const res = await page.goto(`${base}/`, { waitUntil: 'load', timeout: within(15000) });
    if (!res || res.status() !== 200) fail(`GET / answered ${res ? res.status() : 'nothing'}`);
    await page.locator(tid('tab-overview')).waitFor({ state: 'visible', timeout: within(5000) });
    const title = await page.locator('header h1').textContent();
    if (!/logpipe/.test(title || '')) fail(`header says ${JSON.stringify(title)}, not logpipe`);
    await sleep(1500); // a few polls, so their errors would show
  });

  await check('overview charts move as data flows', async () => {
    await waitFor('chart-records has 3 points', 20000, async () => (await pointsOf('records')) >= 3 || `data-points=${await pointsOf('records')}`);
    for (const name of ['errors', 'p95', 'lag', 'lake']) {
      if (Number.isNaN(await pointsOf(name))) fail(`chart-${name} has no data-points attribute`);
    }
    const sel = tid('stat-records-accepted');
    let first = NaN;
    await waitFor('stat-records-accepted shows a number > 0', 15000, async () => {
      first = await numberOf(sel);
      return first > 0 || `"${await page.locator(sel).textContent()}"`;
    });
    const points = await pointsOf('records');
    await sleep(2000);
    await waitFor(`stat-records-accepted grows past ${first}`, 15000, async () => {
      const now = await numberOf(sel);
      return now > first || `${now}`;
    });
    await waitFor(`chart-records grows past ${points} points`, 10000, async () => (await pointsOf('records')) > points || `${await pointsOf('records')}`);
    if ((await pointsOf('lake')) < 3) fail(`chart-lake has ${await pointsOf('lake')} points`);
  });

  // The record goes to a service the generator runs, so the overview (the
  // README's screenshot) shows the generator's services only.
  const service = 'payment-service';
  await check('live tail shows a record just posted', async () => {
    const record = [{
      timestamp: Date.now() / 1000, level: 'ERROR', service, host: 'browser', message,
      metadata: { request_id: `console-${token}`, response_time_ms: 12, status_code: 500, endpoint: '/x', method: 'GET' },
    }];
    const res = await fetch(`${base}/api/collect/logs`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(record),
      signal: AbortSignal.timeout(within(10000)),
    });
    const answer = await res.text();
    if (res.status !== 200) fail(`POST /api/collect/logs answered ${res.status}: ${answer}`);
    await tab('topics');
    const topic = page.locator(tid('tail-topic'));
    await topic.locator('option[value="logs.raw"]').waitFor({ state: 'attached', timeout: within(10000) });
    await topic.selectOption('logs.raw', { timeout: within(5000) });
    await page.locator(tid('tail-service')).fill(service, { timeout: within(5000) });
    await page.locator(tid('tail-level')).selectOption('ERROR', { timeout: within(5000) });
    const row = page.locator(`${tid('tail-rows')} ${tid('tail-row')}`).filter({ hasText: message });
    try {
      await row.first().waitFor({ state: 'visible', timeout: within(20000) });
    } catch (_) {
      fail(`no tail-row with ${message}; tail status: "${await page.locator(tid('tail-status')).textContent()}"`);
    }
    const other = await page.locator(`${tid('tail-rows')} ${tid('tail-row')}`).allTextContents();
    const foreign = other.filter((t) => !t.includes(service) || !t.includes('ERROR'));
    if (foreign.length) fail(`the service filter let through: ${foreign[0]}`);
  });

  await check('SQL console lists tables and counts the posted record', async () => {
    await tab('sql');
    try {
      await page.locator(`${tid('sql-tables')} [data-table="logs"]`).waitFor({ state: 'attached', timeout: within(15000) });
    } catch (_) {
      fail(`sql-tables does not list logs: "${(await page.locator(tid('sql-tables')).textContent()).trim().slice(0, 200)}"`);
    }
    // The posted record alone: its message is unique to this run.
    const sql = `SELECT count(*) AS n FROM logs WHERE service = '${service}' AND message = '${message}'`;
    let last = '';
    await waitFor('sql-result shows the count 1', 30000, async () => {
      const { state, text } = await runSqlOnce(sql);
      last = `${state}: ${text}`;
      if (state !== 'ok') return last;
      const cells = (await page.locator(`${tid('sql-result')} td`).allTextContents()).map((t) => t.trim());
      return (cells.length === 1 && cells[0] === '1') || `${last}; cells ${JSON.stringify(cells)}`;
    }, 1000);
  });

  await check('a report run started from the page succeeds', async () => {
    await tab('jobs');
    await page.locator(tid('report-kind')).selectOption('daily', { timeout: within(5000) });
    await page.locator(tid('report-date')).fill(today, { timeout: within(5000) });
    const clicked = Date.now();
    await page.locator(tid('report-run-button')).click({ timeout: within(5000) });
    const msg = page.locator(tid('report-message'));
    await page.waitForFunction((sel) => {
      const m = document.querySelector(sel);
      return m && (m.dataset.state === 'ok' || m.dataset.state === 'error');
    }, tid('report-message'), { timeout: within(15000), polling: 100 });
    if ((await msg.getAttribute('data-state')) !== 'ok') fail(`report-message: ${await msg.textContent()}`);
    // Only a run started by this click (not an earlier one of the same day).
    const rows = `${tid('report-runs')} ${tid('report-run')}[data-job="daily_report"][data-target="${today}"]`;
    await waitFor(`a daily_report run for ${today} succeeds`, 60000, async () => {
      const runs = await page.locator(rows).evaluateAll((trs, since) => trs
        .filter((tr) => Number(tr.dataset.startedMs) >= since)
        .map((tr) => ({ status: tr.dataset.status, text: tr.textContent })), clicked - 5000);
      if (runs.some((r) => r.status === 'succeeded')) return true;
      if (runs.length && runs[0].status === 'failed') fail(`the run failed: ${runs[0].text}`);
      return runs.length ? `statuses ${runs.map((r) => r.status).join(',')}` : 'no run listed';
    });
  });

  await check('bad SQL shows the error and the page keeps working', async () => {
    await tab('sql');
    badSqlWindow = true;
    const { state, text } = await runSqlOnce('SELEC nope');
    await sleep(300); // the resource error's console message may come after the answer
    badSqlWindow = false;
    if (state !== 'error') fail(`sql-status is ${state}: "${text}"`);
    if (!text || !/error/i.test(text)) fail(`sql-status names no error: "${text}"`);
    const table = await page.locator(`${tid('sql-result')} td`).count();
    if (table !== 0) fail(`sql-result still shows ${table} cells after the error`);
    await tab('overview');
    const before = await pointsOf('records');
    await waitFor('the overview still polls after the SQL error', 10000, async () => (await pointsOf('records')) !== before || `${before} points`);
  });

  await check('screenshots of every tab', async () => {
    await tab('sql');
    const { state, text } = await runSqlOnce('SELECT service, level, count(*) AS n FROM logs GROUP BY service, level ORDER BY n DESC LIMIT 20');
    if (state !== 'ok') fail(`the sample query: ${text}`);
    await tab('topics');
    await page.locator(tid('tail-service')).fill('', { timeout: within(5000) });
    await page.locator(tid('tail-level')).selectOption('', { timeout: within(5000) });
    await page.locator(`${tid('tail-rows')} ${tid('tail-row')}`).first().waitFor({ state: 'visible', timeout: within(10000) });
    for (const name of ['alerts', 'topics', 'jobs', 'sql', 'overview']) {
      await tab(name);
      await sleep(1200); // one poll of the tab
      await page.screenshot({ path: join(shots, `console-${name}.png`), fullPage: true, timeout: within(10000) });
    }
    await page.screenshot({ path: join(shots, 'overview.png'), timeout: within(10000) });
  });

  clearTimeout(watchdog);
  await finish(0);
} catch (e) {
  clearTimeout(watchdog);
  await finish(1, e instanceof CheckFailed ? e.message : (e && e.stack) || String(e));
}
