// Browser test of local mode (run by scripts/browser-test, which starts `countersign dev` first).
//
// Creates requests signed (SigV4, implemented here with node:crypto: an independent signer) as a dev
// identity; in the Slack simulator page, sees the message with its verified and stated parts, acts as the
// pipeline's owner (refused, ephemeral reply), then as two approvers who click Approve through the
// confirmation dialog; checks the API says `approved` and the page shows the final message without buttons.
// Then the same with Deny through the modal, with a reason. Screenshots of each final message are saved.
//
// Environment: CS_URL, CS_ACCESS_KEY_ID, CS_SECRET_ACCESS_KEY, CS_REGION, SCREENSHOT_DIR,
// optional CHROMIUM (default /usr/bin/chromium) and DOCS_SCREENSHOT (also save the reviewer's view there).

import { createHash, createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('CS_URL');
const KEY_ID = env('CS_ACCESS_KEY_ID');
const SECRET = env('CS_SECRET_ACCESS_KEY');
const REGION = env('CS_REGION', 'us-east-1');
const SHOTS = env('SCREENSHOT_DIR');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const DOCS_SCREENSHOT = process.env.DOCS_SCREENSHOT;
const TIMEOUT = 20_000;

const ALICE = 'U012AB3CD';
const BOB = 'U045EF6GH';
const OLIVIA = 'U0OWNER01';
const CHANNEL = 'C0APPROVALS';

let checks = 0;
function ok(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks += 1;
  console.log(`  ok ${checks} - ${what}`);
}

// ---- SigV4 (AWS4-HMAC-SHA256, service execute-api) ------------------------------------------------------

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const hmac = (k, s) => createHmac('sha256', k).update(s).digest();
const enc = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

async function api(method, path, body) {
  const url = new URL(path, BASE);
  const payload = body === undefined ? '' : JSON.stringify(body);
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers = { host: url.host, 'x-amz-date': amzDate };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const names = Object.keys(headers).sort();
  const query = [...url.searchParams].map(([k, v]) => [enc(k), enc(v)]).sort()
    .map(([k, v]) => `${k}=${v}`).join('&');
  const canonical = [method, url.pathname.split('/').map(enc).join('/'), query,
    names.map((n) => `${n}:${headers[n]}\n`).join(''), names.join(';'), sha256(payload)].join('\n');
  const scope = `${date}/${REGION}/execute-api/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  let key = hmac(`AWS4${SECRET}`, date);
  for (const part of [REGION, 'execute-api', 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  const sent = { ...headers };
  delete sent.host;
  sent.authorization = `AWS4-HMAC-SHA256 Credential=${KEY_ID}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  const r = await fetch(url, { method, headers: sent, body: body === undefined ? undefined : payload });
  const json = await r.json().catch(() => null);
  return { status: r.status, json };
}

async function createRequest(reason) {
  const r = await api('POST', '/v1/requests', {
    action: 'deploy', environment: 'production', resource: 'service/payments', reason,
    details: { commit: '9f1c2ab', pipeline: 'payments/main #1234' },
  });
  if (r.status !== 201) throw new Error(`creating a request failed: ${r.status} ${JSON.stringify(r.json)}`);
  ok(true, `request "${reason}" is created (201)`);
  ok(r.json.status === 'pending' && r.json.notification === 'posted', 'it is pending and its message was posted');
  return r.json.id;
}

async function waitForStatus(id, status) {
  const until = Date.now() + TIMEOUT;
  for (;;) {
    const r = await api('GET', `/v1/requests/${id}?wait=0`);
    if (r.status === 200 && r.json.status === status) return r.json;
    if (Date.now() > until) throw new Error(`request ${id} never became ${status}: ${JSON.stringify(r.json)}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

// ---- the page -------------------------------------------------------------------------------------------

const messageOf = (page, id) => page.locator('.message:not(.ephemeral)', { hasText: id });

async function actAs(page, user) {
  await page.selectOption('#acting-as', user);
  // Until the page has rendered what the server answered for this user, it still shows the previous one's view.
  await page.waitForFunction((u) => {
    const s = window.countersignSim.state();
    return s.user === u && (s.renderedKey || '').split('|')[1] === u;
  }, user);
}

async function approve(page, id) {
  const msg = messageOf(page, id);
  await msg.locator('button[data-action-id="countersign_approve"]').click();
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ timeout: TIMEOUT });
  ok((await dialog.innerText()).includes('sensitive environment'), 'Approve in production asks for confirmation');
  await dialog.locator('button.confirm').click();
  await dialog.waitFor({ state: 'detached', timeout: TIMEOUT });
}

async function shot(locator, name) {
  await locator.page().mouse.move(0, 0);
  const path = join(SHOTS, name);
  await locator.screenshot({ path });
  console.log(`  screenshot: ${path}`);
  return path;
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 2 });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });

    console.log('# approve');
    const id = await createRequest('Release 2026.11.3: fixes the refund rounding bug');
    await page.goto(`${BASE}/slack/?as=${ALICE}&channel=${CHANNEL}`);
    const msg = messageOf(page, id);
    await msg.waitFor();
    const text = await msg.innerText();
    ok(text.includes('deploy → production'), 'the message has its header');
    ok(text.includes('Verified by AWS IAM') && text.includes('111122223333') && text.includes('github-deploy'),
      'the message shows what AWS IAM verified (account, role)');
    ok(text.includes('run-42'), 'it shows the caller-chosen session name');
    ok(text.includes('Stated by the workload') && text.includes('refund rounding bug') && text.includes('service/payments'),
      'it shows what the workload stated, apart');
    ok(text.includes('0 of 2 approvals'), 'it waits for 2 approvals');
    ok(await msg.locator('button[data-action-id="countersign_approve"]').count() === 1, 'it has an Approve button');
    ok(await msg.locator('.b-fields .mention', { hasText: '@alice' }).count() === 1, 'approvers are rendered as mentions');
    const pending = await shot(msg, 'pending.png');
    if (DOCS_SCREENSHOT) {
      mkdirSync(dirname(DOCS_SCREENSHOT), { recursive: true });
      await page.mouse.move(0, 0);
      await msg.screenshot({ path: DOCS_SCREENSHOT });
      console.log(`  screenshot: ${DOCS_SCREENSHOT} (copy of ${pending})`);
    }

    await actAs(page, OLIVIA);
    await approve(page, id);
    const refusal = page.locator('.message.ephemeral', { hasText: 'you own the identity' });
    await refusal.waitFor();
    ok(await refusal.locator('.only-you').count() === 1, "the owner's click is refused with a reply only they see");

    await actAs(page, ALICE);
    ok(await page.locator('.message.ephemeral').count() === 0, "alice does not see olivia's ephemeral reply");
    await approve(page, id);
    await msg.filter({ hasText: '1 of 2 approvals' }).waitFor();
    ok(true, "alice's approval is counted: 1 of 2");
    await actAs(page, BOB);
    await approve(page, id);
    const approved = await waitForStatus(id, 'approved');
    ok(approved.approvals.map((a) => a.user_id).sort().join(',') === [ALICE, BOB].sort().join(','),
      'the API shows approved, by alice and bob');
    await msg.filter({ hasText: 'Approved' }).filter({ hasNotText: 'Waiting for approval' }).waitFor();
    await page.waitForFunction((rid) => {
      const m = [...document.querySelectorAll('.message:not(.ephemeral)')].find((n) => n.innerText.includes(rid));
      return m && m.querySelectorAll('button[data-action-id]').length === 0;
    }, id);
    ok(await msg.locator('button').count() === 0, 'the final message has no buttons');
    ok((await msg.innerText()).includes('@alice') && (await msg.innerText()).includes('@bob'), 'it names both approvers');
    await shot(msg, 'approved.png');

    console.log('# deny');
    const id2 = await createRequest('Release 2026.11.4: hotfix');
    await actAs(page, ALICE);
    const msg2 = messageOf(page, id2);
    await msg2.waitFor();
    await msg2.locator('button[data-action-id="countersign_deny"]').click();
    const modal = page.locator('#modal');
    await modal.waitFor();
    ok((await modal.innerText()).includes('Deny request') && (await modal.innerText()).includes(id2),
      'Deny opens the modal for this request');
    await modal.locator('button.submit').click();
    await modal.locator('.dialog-error', { hasText: 'required' }).waitFor();
    ok(true, 'an empty reason is not submitted');
    const reason = 'Not during the change freeze <!channel>';
    await modal.locator('textarea').fill(reason);
    await modal.locator('button.submit').click();
    await modal.waitFor({ state: 'detached' });
    ok(true, 'submitting the reason closes the modal');
    const denied = await waitForStatus(id2, 'denied');
    ok(denied.denial && denied.denial.reason === reason && denied.denial.user_id === ALICE,
      'the API shows denied, by alice, with the reason');
    await msg2.filter({ hasText: 'Denied' }).waitFor();
    await page.waitForFunction((rid) => {
      const m = [...document.querySelectorAll('.message:not(.ephemeral)')].find((n) => n.innerText.includes(rid));
      return m && m.querySelectorAll('button[data-action-id]').length === 0;
    }, id2);
    const text2 = await msg2.innerText();
    ok(text2.includes('Not during the change freeze <!channel>'), 'the reason is shown as text, mention syntax inert');
    ok(await msg2.locator('.mention', { hasText: '@channel' }).count() === 0, 'no @channel mention was rendered');
    ok(await msg2.locator('button').count() === 0, 'the final message has no buttons');
    await shot(msg2, 'denied.png');

    console.log('# break-glass (row 41)');
    const bg = await api('POST', '/v1/requests', {
      action: 'deploy', environment: 'production', resource: 'service/payments', break_glass: true,
      reason: 'INC-4711: payments are down, rolling back now',
    });
    ok(bg.status === 201 && bg.json.status === 'approved' && bg.json.break_glass === true,
      `a break-glass is approved at once (${bg.status})`);
    ok(bg.json.review && bg.json.review.status === 'pending', 'its review is pending');
    const id3 = bg.json.id;
    await actAs(page, ALICE);
    const msg3 = messageOf(page, id3);
    await msg3.waitFor();
    const text3 = await msg3.innerText();
    ok(text3.includes('BREAK-GLASS') && text3.includes('approved at once'), 'the message carries the break-glass banner');
    ok(await msg3.locator('.mention', { hasText: '@security' }).count() >= 1, 'the banner mentions who is notified');
    ok(await msg3.locator('button[data-action-id="countersign_approve"]').count() === 0, 'there is nothing to vote on');
    ok(await msg3.locator('button[data-action-id="countersign_review_ok"]').count() === 1, 'it has the Review action');
    await shot(msg3, 'break-glass.png');
    await actAs(page, OLIVIA);
    await msg3.locator('button[data-action-id="countersign_review_ok"]').click();
    await page.locator('.message.ephemeral', { hasText: 'Your review was not recorded' }).waitFor();
    ok(true, "the owner's review is refused with a reply only they see");
    await actAs(page, ALICE);
    await msg3.locator('button[data-action-id="countersign_review_ok"]').click();
    await page.waitForFunction((rid) => {
      const m = [...document.querySelectorAll('.message:not(.ephemeral)')].find((n) => n.innerText.includes(rid));
      return m && m.querySelectorAll('button[data-action-id]').length === 0;
    }, id3);
    ok((await msg3.innerText()).includes('Reviewed — OK by'), 'once reviewed, the message says by whom');
    ok(await msg3.locator('button[data-action-id]').count() === 0, 'and the Review action is gone');
    const reviewed = await api('GET', `/v1/requests/${id3}`);
    ok(reviewed.json.review.status === 'ok' && reviewed.json.review.by === ALICE, 'the API shows the review, by alice');
    await page.goto(`${BASE}/slack/?as=${ALICE}&channel=C0BREAKGLASS`);
    await messageOf(page, id3).filter({ hasText: 'Reviewed — OK by' }).waitFor();
    ok(true, 'the copy in the break-glass channel shows the review too');
    await shot(messageOf(page, id3), 'break-glass-reviewed.png');
    await page.goto(`${BASE}/slack/?as=${ALICE}&channel=${CHANNEL}`);
    await messageOf(page, id).waitFor();
    await shot(page.locator('#app'), 'simulator.png');
    ok(pageErrors.length === 0, `the page logged no errors (${pageErrors.join('; ')})`);
  } finally {
    await browser.close();
  }
  console.log(`browser test: ${checks} checks passed`);
}

main().catch((e) => {
  console.error(`browser test FAILED after ${checks} checks: ${e.stack || e}`);
  process.exit(1);
});
