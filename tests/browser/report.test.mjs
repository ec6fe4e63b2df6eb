// Browser test of the compliance report (run by scripts/browser-test after simulator.test.mjs and its seeding).
//
// Opens the HTML report from `countersign audit report` via file:// in headless Chromium with every request
// that is not the file itself aborted and recorded, and asserts none was attempted: the file is
// self-contained and opens offline. Checks that it renders (title, the per-policy table, the SVG chart's
// bars, the chain status line), and that every number the page shows equals (a) the JSON report written
// from the same store and (b) counts made here, independently of the Rust code, from the raw JSONL audit
// export (whose hash chain is also recomputed here). Saves a screenshot of the whole page.
//
// Environment: REPORT_HTML, REPORT_JSON, AUDIT_JSONL, SCREENSHOT_DIR, optional CHROMIUM (default
// /usr/bin/chromium).

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const HTML = env('REPORT_HTML');
const JSON_REPORT = env('REPORT_JSON');
const JSONL = env('AUDIT_JSONL');
const SHOTS = env('SCREENSHOT_DIR');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const TIMEOUT = 20_000;
const DAY_MS = 86_400_000;

let checks = 0;
function ok(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks += 1;
  console.log(`  ok ${checks} - ${what}`);
}
const show = (v) => JSON.stringify(v);
function same(actual, expected, what) {
  ok(show(actual) === show(expected), `${what}: ${show(actual)}${show(actual) === show(expected) ? '' : ` ≠ ${show(expected)}`}`);
}

// ---- the raw records, counted here ----------------------------------------------------------------------

const GENESIS = '0'.repeat(64);

// docs/architecture.md, "The audit chain": compact JSON, keys in lexicographic order, details sorted, v = 1.
function canonical(e) {
  const details = Object.fromEntries(Object.entries(e.details).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return JSON.stringify({
    actor: e.actor, at: e.at, details, kind: e.kind, prev_hash: e.prev_hash, request_id: e.request_id,
    seq: e.seq, v: 1,
  });
}

function readExport(path) {
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const parsed = lines.map((l) => JSON.parse(l));
  const summary = parsed.pop();
  ok(summary && summary.summary && !summary.summary.filtered, 'the export ends with its (unfiltered) summary line');
  return { records: parsed, summary: summary.summary };
}

// The request.* kinds the report counts per policy (crates/core/src/domain/audit.rs), by the column they feed.
const OUTCOME = {
  'request.created': 'requests',
  'request.approved': 'approved',
  'request.auto_approved': 'auto_approved',
  'request.denied': 'denied',
  'request.expired': 'expired',
  'request.cancelled': 'cancelled',
  'request.redeemed': 'redeemed',
  'request.unused': 'unused',
};
const zero = () => ({ requests: 0, approved: 0, auto_approved: 0, denied: 0, expired: 0, cancelled: 0, redeemed: 0, unused: 0 });

function countRecords(records) {
  const policies = {};
  const refusals = {};
  const approvers = {};
  const created = {};
  const times = {};
  const unnamed = [];
  for (const e of records) {
    if (e.kind === 'request.refused') {
      const who = e.actor.replace(/^aws:/, '');
      refusals[who] = (refusals[who] ?? 0) + 1;
      continue;
    }
    const policy = e.details.policy;
    const column = OUTCOME[e.kind];
    if (column) {
      if (typeof policy !== 'string' || policy === '' || !e.request_id) unnamed.push(e.seq);
      policies[policy] ??= zero();
      policies[policy][column] += 1;
    }
    if (e.kind === 'request.created') created[e.request_id] = Date.parse(e.at);
    if ((e.kind === 'request.approved' || e.kind === 'request.denied') && created[e.request_id] !== undefined) {
      (times[policy] ??= []).push((Date.parse(e.at) - created[e.request_id]) / 1000);
    }
    if (e.kind === 'vote.approve') {
      const user = e.actor.replace(/^slack:/, '');
      (approvers[policy] ??= {})[user] = (approvers[policy]?.[user] ?? 0) + 1;
    }
  }
  // The report's percentile: nearest rank, round(q · (n − 1)) of the sorted times.
  same(unnamed, [], 'every request.* record names its request and its policy');
  const percentile = (t, q) => (t.length === 0 ? null : t[Math.min(Math.round(q * (t.length - 1)), t.length - 1)]);
  for (const [policy, t] of Object.entries(times)) {
    t.sort((a, b) => a - b);
    policies[policy].median = percentile(t, 0.5);
    policies[policy].p90 = percentile(t, 0.9);
  }
  return { policies, refusals, approvers };
}

// ---- the page -------------------------------------------------------------------------------------------

const HEADERS = ['policy', 'requests', 'approved', 'auto', 'denied', 'expired', 'cancelled', 'redeemed', 'unused', 'median', 'p90'];
const COLUMN = { requests: 'requests', approved: 'approved', auto: 'auto_approved', denied: 'denied', expired: 'expired', cancelled: 'cancelled', redeemed: 'redeemed', unused: 'unused' };

// Everything the page shows, read from the DOM as rendered.
async function readPage(page) {
  return page.evaluate(() => {
    const table = document.querySelector('table#policies');
    const rows = table ? [...table.querySelectorAll('tr')].map((tr) => [...tr.children].map((c) => c.textContent.trim())) : [];
    const svg = document.querySelector('svg');
    const bars = svg ? [...svg.querySelectorAll('rect')].map((r) => {
      const box = r.getBoundingClientRect();
      const label = r.previousElementSibling;
      const count = r.nextElementSibling;
      return {
        width: Number(r.getAttribute('width')),
        renderedWidth: box.width,
        renderedHeight: box.height,
        label: label && label.tagName.toLowerCase() === 'text' ? label.textContent : null,
        count: count && count.tagName.toLowerCase() === 'text' ? count.textContent : null,
      };
    }) : [];
    // Anything that could make the browser fetch: the elements that load by src/href/data/poster/srcset, and
    // url(…) in styles. Only same-document fragments and data: URLs are self-contained.
    const refs = [];
    for (const el of document.querySelectorAll('[src],[srcset],[poster],[data],link[href],image,use,script,iframe,object,embed')) {
      for (const a of ['src', 'srcset', 'poster', 'data', 'href', 'xlink:href']) {
        const v = el.getAttribute(a);
        if (v !== null && el.tagName.toLowerCase() !== 'a') refs.push(`${el.tagName.toLowerCase()} ${a}=${v}`);
      }
    }
    const css = [...document.querySelectorAll('style')].map((s) => s.textContent)
      .concat([...document.querySelectorAll('[style]')].map((e) => e.getAttribute('style')));
    for (const text of css) for (const m of text.matchAll(/url\(\s*['"]?([^'")]*)/g)) refs.push(`css url(${m[1]})`);
    for (const text of css) for (const m of text.matchAll(/@import\s+[^;]+/g)) refs.push(`css ${m[0]}`);
    return {
      title: document.title,
      h1: document.querySelector('h1')?.textContent ?? null,
      chain: document.querySelector('#chain')?.textContent ?? null,
      rows,
      tableVisible: table ? table.getBoundingClientRect().height > 0 : false,
      bars,
      svgVisible: svg ? svg.getBoundingClientRect().width > 0 : false,
      drift: [...document.querySelectorAll('#drift li')].map((li) => li.textContent),
      external: refs.filter((r) => !/=(#|data:)|url\((#|data:)/.test(r)),
    };
  });
}

const seconds = (cell) => (cell === '—' ? null : Number(cell.replace(/ s$/, '')));

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const report = JSON.parse(readFileSync(JSON_REPORT, 'utf8'));
  const { records, summary } = readExport(JSONL);

  console.log('# the raw records');
  same(records.length, summary.records, 'the export has as many records as its summary says');
  let prev = GENESIS;
  let intact = true;
  records.forEach((e, i) => {
    if (e.seq !== i + 1 || e.prev_hash !== prev || createHash('sha256').update(canonical(e)).digest('hex') !== e.hash) {
      intact = false;
    }
    prev = e.hash;
  });
  ok(intact, `the exported chain recomputes here: seq 1..${records.length}, every hash and link`);
  const cutoff = Date.now() - 30 * DAY_MS;
  ok(records.every((e) => Date.parse(e.at) >= cutoff), 'every record is within --since 30d, so all of them are counted');
  const mine = countRecords(records);
  const kinds = (k) => records.filter((e) => e.kind === k).length;
  ok(kinds('request.approved') >= 1 && kinds('request.denied') >= 1 && kinds('request.refused') >= 1,
    `the store has approvals (${kinds('request.approved')}), denials (${kinds('request.denied')}) and refusals (${kinds('request.refused')})`);
  ok(Object.keys(mine.refusals).length >= 2, 'refusals come from more than one principal');

  console.log('# the JSON report against the raw records');
  same(report.report.records, records.length, 'the report counted every record');
  ok(report.chain === `verified from genesis: ${records.length} records intact`, `its chain line: "${report.chain}"`);
  const jsonPolicies = report.report.policies;
  same(Object.keys(jsonPolicies).sort(), Object.keys(mine.policies).sort(), 'its policies are those with requests');
  for (const [name, s] of Object.entries(mine.policies)) {
    const j = jsonPolicies[name] ?? {};
    for (const k of Object.keys(zero())) same(j[k], s[k], `${name}: ${k}`);
    same(j.median_seconds_to_decision, s.median ?? null, `${name}: median seconds to decision`);
    same(j.p90_seconds_to_decision, s.p90 ?? null, `${name}: p90 seconds to decision`);
    same(j.approvers, mine.approvers[name] ?? {}, `${name}: approvals per approver`);
  }
  const jsonRefusals = Object.fromEntries(Object.entries(report.report.refusals)
    .map(([p, codes]) => [p, Object.values(codes).reduce((a, b) => a + b, 0)]));
  same(jsonRefusals, mine.refusals, 'its refusals per principal');

  console.log('# the HTML report in Chromium, offline');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 2, serviceWorkers: 'block' });
    const url = pathToFileURL(HTML).href;
    // Every request but the file itself is aborted and recorded, whichever way it is made.
    const attempts = new Set();
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (u === url) return route.continue();
      attempts.add(u);
      return route.abort('internetdisconnected');
    });
    context.on('request', (r) => { if (r.url() !== url) attempts.add(r.url()); });
    const attempted = () => [...attempts];
    await context.setOffline(true);
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });

    await page.goto(url, { waitUntil: 'load' });
    await page.waitForLoadState('networkidle');
    const shown = await readPage(page);
    same(attempted(), [], 'the page attempted no request besides its own file');
    same(shown.external, [], 'it references nothing outside itself');
    same(shown.title, 'Countersign compliance report', 'its title');
    same(shown.h1, 'Countersign compliance report', 'its heading');
    ok(/^verified from genesis: \d+ records intact$/.test(shown.chain ?? ''), `the chain line says verified: "${shown.chain}"`);
    same(shown.chain, report.chain, 'the chain line is the JSON report\'s');

    console.log('# the per-policy table');
    ok(shown.tableVisible, 'the per-policy table is rendered');
    same(shown.rows[0], HEADERS, 'its header row');
    const table = Object.fromEntries(shown.rows.slice(1).map((cells) => [cells[0], cells]));
    same(shown.rows.length - 1, Object.keys(table).length, 'each policy has one row');
    same(Object.keys(table).sort(), Object.keys(mine.policies).sort(), 'its rows are the policies with requests');
    for (const [name, cells] of Object.entries(table)) {
      for (const [header, key] of Object.entries(COLUMN)) {
        const cell = Number(cells[HEADERS.indexOf(header)]);
        same(cell, jsonPolicies[name]?.[key], `${name}: ${header} shown = JSON`);
        same(cell, mine.policies[name]?.[key], `${name}: ${header} shown = counted from the records`);
      }
      for (const [header, key] of [['median', 'median'], ['p90', 'p90']]) {
        const cell = seconds(cells[HEADERS.indexOf(header)]);
        const want = mine.policies[name]?.[key] ?? null;
        ok(cell === null ? want === null : want !== null && Math.abs(cell - want) <= 0.5,
          `${name}: ${header} shown (${cells[HEADERS.indexOf(header)]}) is ${want === null ? 'empty' : `${want} s rounded`}`);
      }
    }

    console.log('# the refusals chart');
    ok(shown.svgVisible, 'the SVG chart is rendered');
    const expected = Object.entries(mine.refusals).sort(([a, n], [b, m]) => m - n || (a < b ? -1 : a > b ? 1 : 0)).slice(0, 10);
    same(shown.bars.length, expected.length, 'it has one bar per refusing principal (top 10)');
    const max = Math.max(1, ...expected.map(([, n]) => n));
    expected.forEach(([principal, n], i) => {
      const bar = shown.bars[i];
      same(bar.label, principal.slice(0, 60), `bar ${i + 1} is labelled with its principal`);
      same(Number(bar.count), n, `bar ${i + 1} (${principal}) shows its refusals`);
      same(Number(bar.count), jsonRefusals[principal], `bar ${i + 1} shows the JSON report's refusals`);
      same(bar.width, Math.floor((300 * n) / max), `bar ${i + 1} is as long as its count`);
      ok(bar.renderedWidth > 0 && bar.renderedHeight > 0, `bar ${i + 1} is drawn (${bar.renderedWidth.toFixed(0)}×${bar.renderedHeight.toFixed(0)} px)`);
    });
    same(shown.drift.length, report.report.drift.length, 'the drift list has the JSON report\'s entries');

    const path = join(SHOTS, 'report.png');
    await page.screenshot({ path, fullPage: true });
    console.log(`  screenshot: ${path}`);
    same(attempted(), [], 'still no request attempted after rendering and the screenshot');
    ok(pageErrors.length === 0, `the page logged no errors (${pageErrors.join('; ')})`);
  } finally {
    await browser.close();
  }
  console.log(`report test: ${checks} checks passed`);
}

main().catch((e) => {
  console.error(`report test FAILED after ${checks} checks: ${e.stack || e}`);
  process.exit(1);
});
