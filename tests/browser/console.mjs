#!/usr/bin/env node
// Drives Debian's Chromium through playwright-core against the operator console (`/console` on
// the operator listener) for tests/console_page.rs, and reports what the operator saw.
//
//   node console.mjs '<json args>'
//
// Prints exactly one JSON object on stdout. Page facts are reported as data and judged by the
// Rust test; the exit code is non-zero only when the harness itself failed (then the object is
// {"ok": false, "error": "..."}).

import { chromium } from 'playwright-core';
import path from 'node:path';
import crypto from 'node:crypto';

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret: what an authenticator app shows.
function totp(secretB32, now = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of secretB32.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 30000)));
  const h = crypto.createHmac('sha1', key).update(counter).digest();
  const o = h[h.length - 1] & 0xf;
  const n = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(n % 1000000).padStart(6, '0');
}

const CHROMIUM = process.env.PAYWATCH_CHROMIUM || '/usr/bin/chromium';
const WATCHDOG_MS = Number(process.env.PAYWATCH_BROWSER_TIMEOUT_MS || 60000);
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'];
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const T = 10000;

let browser = null;
let printed = false;
function emit(obj, code) {
  if (!printed) {
    printed = true;
    process.stdout.write(JSON.stringify(obj) + '\n');
  }
  process.exitCode = code;
}
async function fail(message) {
  emit({ ok: false, error: message }, 1);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
setTimeout(() => fail(`watchdog: no result within ${WATCHDOG_MS} ms`), WATCHDOG_MS).unref();

async function text(page, sel) {
  const el = await page.$(sel);
  return el ? (await el.innerText()).trim() : null;
}

async function main() {
  const a = JSON.parse(process.argv[2] || '{}');
  for (const k of ['admin', 'name', 'password', 'secret', 'reference', 'session', 'credit', 'key', 'refund', 'token_refund', 'unknown_refund', 'artifacts']) {
    if (typeof a[k] !== 'string' || !a[k]) throw new Error(`argument ${k} is required`);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  const ctx = await browser.newContext(PHONE);
  const page = await ctx.newPage();
  const external = [];
  const origin = new URL(a.admin).origin;
  page.on('request', (r) => {
    if (!r.url().startsWith(origin)) external.push(r.url());
  });
  const out = { ok: true };

  // A wrong password does not log in.
  await page.goto(`${a.admin}/console/login`, { timeout: T });
  await page.fill('#name', a.name);
  await page.fill('#password', 'not-the-password');
  await page.fill('#code', totp(a.secret));
  await Promise.all([page.waitForLoadState('load'), page.click('#login button[type=submit]')]);
  out.wrongError = await text(page, '#error');
  out.wrongCookies = (await ctx.cookies()).filter((c) => c.name === 'pw_console').length;
  await page.goto(`${a.admin}/console/sessions`, { timeout: T });
  out.wrongLandedOn = new URL(page.url()).pathname;

  // Name, password and the authenticator's code do, with an HttpOnly SameSite=Strict cookie.
  await page.fill('#name', a.name);
  await page.fill('#password', a.password);
  await page.fill('#code', totp(a.secret));
  await Promise.all([page.waitForURL('**/console/sessions', { timeout: T }), page.click('#login button[type=submit]')]);
  out.loggedInOn = new URL(page.url()).pathname;
  const cookie = (await ctx.cookies()).find((c) => c.name === 'pw_console');
  out.cookie = cookie ? { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path, secure: cookie.secure } : null;
  out.who = await text(page, '#who');
  const resp = await page.goto(`${a.admin}/console/sessions`, { timeout: T });
  out.csp = resp.headers()['content-security-policy'] || null;

  // Find the session by its order id.
  await page.fill('#filters input[name=client_reference_id]', a.reference);
  await Promise.all([page.waitForLoadState('load'), page.click('#filters button[type=submit]')]);
  out.filteredIds = await page.$$eval('#sessions tbody tr', (rows) => rows.map((r) => r.dataset.id));
  await Promise.all([page.waitForLoadState('load'), page.click(`#sessions a[href$="${a.session}"]`)]);
  out.statusBefore = await text(page, '#status');

  // Assign the unmatched credit to it; the session completes.
  await page.goto(`${a.admin}/console/credits`, { timeout: T });
  const credit = `section[data-credit="${a.credit}"]`;
  out.creditShown = (await page.$(credit)) !== null;
  await page.fill(`${credit} input[name=session]`, a.session);
  await Promise.all([page.waitForLoadState('load'), page.click(`${credit} form[action$="/assign"] button`)]);
  out.assignNotice = await text(page, '#notice');
  await page.goto(`${a.admin}/console/sessions/${a.session}`, { timeout: T });
  out.statusAfter = await text(page, '#status');

  // A form without the CSRF token is refused (same cookie, no token).
  const forged = await ctx.request.post(`${a.admin}/console/keys/${a.key}/revoke`, { form: { csrf: 'guess' }, maxRedirects: 0 });
  out.forgedStatus = forged.status();

  // Revoke a key.
  await page.goto(`${a.admin}/console/keys`, { timeout: T });
  await Promise.all([page.waitForLoadState('load'), page.click(`tr[data-key="${a.key}"] button`)]);
  out.revokeNotice = await text(page, '#notice');
  out.keyRow = await text(page, `tr[data-key="${a.key}"]`);

  // Refunds: the token refund offers an EIP-681 link and QR; the unknown sender's does not.
  await page.goto(`${a.admin}/console/refunds`, { timeout: T });
  await page.waitForFunction(() => Array.from(document.images).every((i) => i.complete), null, { timeout: 5000 }).catch(() => {});
  const tok = `section[data-refund="${a.token_refund}"]`;
  out.tokenUri = await page.$eval(`${tok} a.uri`, (e) => e.getAttribute('href')).catch(() => null);
  out.tokenQrLoaded = await page.$eval(`${tok} img.qr`, (i) => i.complete && i.naturalWidth > 0).catch(() => false);
  const qr = await page.$(`${tok} img.qr`);
  if (qr) {
    out.qrShot = path.join(a.artifacts, 'console-refund-qr.png');
    await qr.screenshot({ path: out.qrShot });
  }
  out.unknownWarn = await text(page, `section[data-refund="${a.unknown_refund}"] .warn`);
  out.unknownHasQr = (await page.$(`section[data-refund="${a.unknown_refund}"] img.qr`)) !== null;
  out.pageShot = path.join(a.artifacts, 'console-refunds-phone.png');
  await page.screenshot({ path: out.pageShot, fullPage: true });
  out.overflowX = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);

  // Mark the UPI refund succeeded with its UTR.
  const up = `section[data-refund="${a.refund}"]`;
  await page.fill(`${up} input[name=utr]`, '612345678901');
  await Promise.all([page.waitForLoadState('load'), page.click(`${up} form[action$="/succeed"] button`)]);
  out.refundNotice = await text(page, '#notice');
  await page.goto(`${a.admin}/console/refunds?status=succeeded`, { timeout: T });
  out.succeededShown = (await page.$(up)) !== null;

  // Escaping: the hostile description is text, not markup.
  await page.goto(`${a.admin}/console/sessions/${a.session}`, { timeout: T });
  out.injected = await page.$('#pwned') !== null;

  // The audit log shows what was done.
  await page.goto(`${a.admin}/console/audit`, { timeout: T });
  out.auditActions = await page.$$eval('#audit tbody tr', (rows) => rows.map((r) => r.dataset.action));
  out.auditShot = path.join(a.artifacts, 'console-audit-phone.png');
  await page.screenshot({ path: out.auditShot, fullPage: true });

  out.external = external;
  await browser.close();
  emit(out, 0);
}

main().catch((e) => fail(String(e && e.stack ? e.stack : e)));
