#!/usr/bin/env node
// Drives Debian's Chromium through playwright-core against the hosted checkout page
// (`GET /c/{id}`) and reports what a customer's browser saw, for tests/checkout_page.rs.
//
//   node checkout.mjs <scenario> '<json args>'
//
// Prints exactly one JSON object on stdout. Page facts (missing elements, a dialog that fired,
// ...) are reported as data and judged by the Rust test; the exit code is non-zero only when the
// harness itself failed (bad arguments, Chromium would not start, the watchdog fired), and then
// the object is {"ok": false, "error": "..."}.
//
// Environment: PAYWATCH_CHROMIUM (default /usr/bin/chromium), PAYWATCH_BROWSER_TIMEOUT_MS
// (whole-run watchdog, default 60000).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const CHROMIUM = process.env.PAYWATCH_CHROMIUM || '/usr/bin/chromium';
const WATCHDOG_MS = Number(process.env.PAYWATCH_BROWSER_TIMEOUT_MS || 60000);
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const PHONE = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  colorScheme: 'light',
};
const DESKTOP = { viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, colorScheme: 'light' };
const ACTION_TIMEOUT_MS = 10000;

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

const watchdog = setTimeout(() => {
  fail(`watchdog: the scenario did not finish within ${WATCHDOG_MS} ms`);
}, WATCHDOG_MS);
watchdog.unref();

function need(args, ...keys) {
  for (const k of keys) {
    if (typeof args[k] !== 'string' || args[k] === '') {
      throw new Error(`argument ${k} (a non-empty string) is required`);
    }
  }
}

async function launch() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set PAYWATCH_CHROMIUM)`);
  }
  // launch() gives every run a fresh temporary profile (user-data-dir) and deletes it on close.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  return browser;
}

/// Everything a page did that a test may want to hold against it.
function watch(page, pageUrl) {
  const origin = new URL(pageUrl).origin;
  const log = {
    consoleErrors: [],
    pageErrors: [],
    dialogs: [],
    externalRequests: [],
    failedRequests: [],
    badResponses: [],
    requests: [],
  };
  page.on('console', (m) => {
    if (m.type() === 'error') log.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => log.pageErrors.push(String(e && e.message ? e.message : e)));
  page.on('dialog', (d) => {
    log.dialogs.push({ type: d.type(), message: d.message() });
    d.dismiss().catch(() => {});
  });
  page.on('request', (r) => {
    const u = r.url();
    log.requests.push(`${r.method()} ${u}`);
    if (u.startsWith('data:') || u.startsWith('blob:') || u.startsWith('about:')) return;
    let o;
    try {
      o = new URL(u).origin;
    } catch {
      o = 'invalid';
    }
    if (o !== origin && r.frame() === page.mainFrame() && !r.isNavigationRequest()) {
      log.externalRequests.push(u);
    }
  });
  page.on('response', (r) => {
    // The browser's own favicon probe is not the page's doing.
    if (r.status() >= 400 && !new URL(r.url()).pathname.endsWith('/favicon.ico')) {
      log.badResponses.push(`${r.status()} ${r.url()}`);
    }
  });
  page.on('requestfailed', (r) => {
    const f = r.failure();
    const err = f ? f.errorText : 'failed';
    // An EventSource torn down by navigation is not a failure of the page.
    if (err === 'net::ERR_ABORTED') return;
    log.failedRequests.push(`${r.url()} ${err}`);
  });
  return log;
}

async function open(page, url) {
  const resp = await page.goto(url, { waitUntil: 'load', timeout: ACTION_TIMEOUT_MS });
  // Web fonts and images (the QR codes) settled before anything is measured or captured.
  await page.evaluate(() => (document.fonts ? document.fonts.ready.then(() => true) : true)).catch(() => {});
  await page
    .waitForFunction(() => Array.from(document.images).every((i) => i.complete), null, { timeout: 5000 })
    .catch(() => {});
  return resp;
}

/// The facts of the page that every scenario reports.
async function facts(page) {
  return page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    const txt = (s) => (q(s) ? q(s).textContent.trim() : null);
    const visible = (el) => {
      if (!el) return false;
      const st = getComputedStyle(el);
      const r = el.getBoundingClientRect();
      return st.display !== 'none' && st.visibility !== 'hidden' && r.width > 0 && r.height > 0;
    };
    const status = q('#status');
    return {
      title: document.title,
      lang: document.documentElement.lang,
      merchant: txt('#merchant'),
      amount: txt('#amount'),
      description: txt('#description'),
      status: status ? status.getAttribute('data-status') : null,
      countdown: !!q('#countdown'),
      testBanner: visible(q('#test-banner')),
      simulateForm: (() => {
        const f = q('form#simulate');
        if (!f) return null;
        return {
          method: (f.getAttribute('method') || '').toLowerCase(),
          action: f.getAttribute('action'),
          submit: !!f.querySelector('button[type=submit], button:not([type]), input[type=submit]'),
        };
      })(),
      optionCount: document.querySelectorAll('section.option').length,
      options: Array.from(document.querySelectorAll('section.option')).map((s) => {
        const img = s.querySelector('img.qr');
        const link = s.querySelector('a.deeplink');
        const payTo = s.querySelector('.pay-to');
        const payable = s.querySelector('.payable');
        const copyNear = (el) =>
          !!el && !!(el.querySelector('button.copy') || (el.parentElement && el.parentElement.querySelector('button.copy')));
        return {
          method: s.getAttribute('data-method'),
          visible: visible(s),
          qrSrc: img ? img.getAttribute('src') : null,
          qrAlt: img ? img.getAttribute('alt') : null,
          qrLoaded: !!img && img.complete && img.naturalWidth > 0,
          deeplink: link ? link.getAttribute('href') : null,
          payTo: payTo ? payTo.textContent.trim() : null,
          payable: payable ? payable.textContent.trim() : null,
          payToCopy: copyNear(payTo),
          payableCopy: copyNear(payable),
        };
      }),
      picker: Array.from(document.querySelectorAll('nav#methods a[data-method]')).map((a) =>
        a.getAttribute('data-method'),
      ),
      deeplinks: Array.from(document.querySelectorAll('a.deeplink')).map((a) => a.getAttribute('href')),
      qrAlts: Array.from(document.querySelectorAll('img.qr')).map((i) => i.getAttribute('alt')),
      langSwitch: Array.from(document.querySelectorAll('a.lang-switch')).map((a) => a.getAttribute('href')),
      metaRefresh: Array.from(document.querySelectorAll('meta[http-equiv]'))
        .filter((m) => m.getAttribute('http-equiv').toLowerCase() === 'refresh')
        .map((m) => m.getAttribute('content')),
      noscriptRefresh: Array.from(document.querySelectorAll('noscript')).some((n) =>
        /http-equiv\s*=\s*["']?refresh/i.test(n.innerHTML) || !!n.querySelector('meta[http-equiv=refresh i]'),
      ),
    };
  });
}

function headersOf(resp) {
  if (!resp) return { httpStatus: null, contentType: null, csp: null, refresh: null };
  const h = resp.headers();
  return {
    httpStatus: resp.status(),
    contentType: h['content-type'] || null,
    csp: h['content-security-policy'] || null,
    refresh: h['refresh'] || null,
  };
}

const slug = (s) => String(s).replace(/[^A-Za-z0-9_.-]+/g, '_');

// --- scenarios ------------------------------------------------------------------------------

async function screenshots(a) {
  need(a, 'url', 'outDir', 'name');
  fs.mkdirSync(a.outDir, { recursive: true });
  const b = await launch();
  const out = { ok: true, files: {}, qrFiles: {}, qrErrors: {} };

  const desktop = await b.newContext(DESKTOP);
  const dpage = await desktop.newPage();
  dpage.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const dlog = watch(dpage, a.url);
  await open(dpage, a.url);
  out.files.desktop = path.join(a.outDir, `${a.name}-desktop.png`);
  await dpage.screenshot({ path: out.files.desktop, fullPage: true });
  out.desktop = await facts(dpage);
  await desktop.close();

  const phone = await b.newContext(PHONE);
  const page = await phone.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const resp = await open(page, a.url);
  Object.assign(out, headersOf(resp));
  out.files.phone = path.join(a.outDir, `${a.name}-phone.png`);
  await page.screenshot({ path: out.files.phone, fullPage: true });
  const f = await facts(page);
  Object.assign(out, f);

  // Each QR alone, for a clean decode. With JS only the selected option shows: pick each one
  // through the picker first.
  for (const opt of f.options) {
    const m = opt.method || 'unknown';
    try {
      const sel = `section.option[data-method="${m}"]`;
      const img = page.locator(`${sel} img.qr`).first();
      if ((await img.count()) === 0) throw new Error(`no img.qr in ${sel}`);
      if (!(await img.isVisible())) {
        const pick = page.locator(`nav#methods a[data-method="${m}"]`).first();
        if ((await pick.count()) === 0) throw new Error(`img.qr in ${sel} is hidden and nav#methods has no link for it`);
        await pick.click();
        await img.waitFor({ state: 'visible', timeout: 3000 });
      }
      await img.evaluate((i) => (i.complete ? true : new Promise((r) => i.addEventListener('load', r, { once: true }))));
      const file = path.join(a.outDir, `${a.name}-qr-${slug(m)}.png`);
      await img.screenshot({ path: file, animations: 'disabled' });
      out.qrFiles[m] = file;
    } catch (e) {
      out.qrErrors[m] = String(e.message || e).split('\n')[0];
    }
  }
  out.phoneLog = log;
  out.desktopLog = dlog;
  await phone.close();
  return out;
}

function successServer(successUrl) {
  const u = new URL(successUrl);
  const hits = [];
  if (u.hostname !== '127.0.0.1' || !u.port) return Promise.resolve({ hits, close: async () => {} });
  const srv = http.createServer((req, res) => {
    hits.push(req.url);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><html lang="en"><head><title>Thanks</title></head><body><h1 id="thanks">Paid</h1></body></html>');
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(Number(u.port), '127.0.0.1', () =>
      resolve({ hits, close: () => new Promise((r) => srv.close(() => r())) }),
    );
  });
}

async function simulateSuccess(a) {
  need(a, 'url', 'simulateUrl', 'successUrl');
  const waitMs = Number(a.waitMs || 10000);
  const server = await successServer(a.successUrl);
  const b = await launch();
  const ctx = await b.newContext(PHONE);
  const page = await ctx.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const t0 = Date.now();
  const statuses = []; // every data-status the page showed, with ms since start
  const navigations = []; // main-frame navigations after the first load
  let loaded = false;
  await page.exposeFunction('__paywatchStatus', (s, href) => {
    const last = statuses[statuses.length - 1];
    if (!last || last.status !== s || last.url !== href) statuses.push({ status: s, url: href, ms: Date.now() - t0 });
  });
  // Runs in every document before its own scripts (CDP, so the page's CSP does not apply):
  // a MutationObserver sees a change even when navigation follows at once; the 50 ms poll
  // backs it up.
  await page.addInitScript(() => {
    const report = () => {
      const el = document.getElementById('status');
      const s = el ? el.getAttribute('data-status') : null;
      if (s !== null && window.__paywatchStatus) window.__paywatchStatus(s, location.href);
    };
    setInterval(report, 50);
    const start = () => {
      report();
      new MutationObserver(report).observe(document.documentElement, {
        attributes: true,
        attributeFilter: ['data-status'],
        subtree: true,
        childList: true,
      });
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
    else start();
  });
  const live = { events: 0, status: 0 };
  page.on('request', (r) => {
    const p = new URL(r.url()).pathname;
    if (p.endsWith('/events')) live.events++;
    if (p.endsWith('/status')) live.status++;
  });
  page.on('framenavigated', (fr) => {
    if (fr === page.mainFrame() && loaded) navigations.push({ url: fr.url(), ms: Date.now() - t0 });
  });

  const out = { ok: true };
  const resp = await open(page, a.url);
  loaded = true;
  Object.assign(out, headersOf(resp));
  const before = await facts(page);
  out.initialStatus = before.status;
  // Give the page a moment to open its live channel (SSE, or the polling fallback).
  const liveDeadline = Date.now() + 3000;
  while (live.events + live.status === 0 && Date.now() < liveDeadline) await page.waitForTimeout(50);
  await page.waitForTimeout(300);
  out.liveChannel = { ...live };

  const sim = await fetch(a.simulateUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: a.simulateBody ? JSON.stringify(a.simulateBody) : '{}',
  });
  out.simulateStatus = sim.status;
  out.simulateBody = await sim.text();
  const tSim = Date.now() - t0;

  try {
    await page.waitForURL((u) => u.href.startsWith(a.successUrl), { timeout: waitMs, waitUntil: 'commit' });
    out.redirected = true;
  } catch {
    out.redirected = false;
    // One last look at what the page shows, for the report.
    const f = await facts(page).catch(() => null);
    if (f && f.status !== null) statuses.push({ status: f.status, url: page.url(), ms: Date.now() - t0 });
  }
  out.finalUrl = page.url();
  const onCheckout = statuses.filter((s) => !s.url.startsWith(a.successUrl));
  out.statuses = statuses;
  out.statusBeforeRedirect = onCheckout.length ? onCheckout[onCheckout.length - 1].status : null;
  out.sawComplete = onCheckout.some((s) => s.status === 'complete');
  const firstComplete = onCheckout.find((s) => s.status === 'complete');
  out.msSimulateToComplete = firstComplete ? firstComplete.ms - tSim : null;
  const arrival = navigations.find((n) => n.url.startsWith(a.successUrl));
  out.msSimulateToRedirect = arrival ? arrival.ms - tSim : null;
  const strip = (u) => u.split('#')[0];
  out.navigations = navigations;
  out.reloads = navigations.filter(
    (n) => !n.url.startsWith(a.successUrl) && (!arrival || n.ms <= arrival.ms),
  ).length;
  out.reloadsToSameUrl = navigations.filter((n) => strip(n.url) === strip(a.url)).length;
  out.successHits = server.hits;
  out.log = log;
  await ctx.close();
  await server.close();
  return out;
}

async function xss(a) {
  need(a, 'url');
  const b = await launch();
  const ctx = await b.newContext(DESKTOP);
  const page = await ctx.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const resp = await open(page, a.url);
  await page.waitForTimeout(Number(a.settleMs || 1000));
  const d = await page.evaluate(() => {
    const el = document.querySelector('#description');
    return {
      description: el ? el.textContent.trim() : null,
      descriptionChildElements: el ? el.childElementCount : null,
      scriptsInBody: Array.from(document.querySelectorAll('body script')).map((s) => s.getAttribute('src') || '(inline)'),
      title: document.title,
    };
  });
  const out = { ok: true, ...headersOf(resp), ...d };
  out.dialogs = log.dialogs;
  out.dialogFired = log.dialogs.length > 0;
  out.consoleErrors = log.consoleErrors;
  out.pageErrors = log.pageErrors;
  out.log = log;
  await ctx.close();
  return out;
}

async function nojs(a) {
  need(a, 'url');
  const b = await launch();
  const ctx = await b.newContext({ ...PHONE, javaScriptEnabled: false });
  const page = await ctx.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const resp = await open(page, a.url);
  const f = await facts(page);
  const out = { ok: true, ...headersOf(resp), ...f };
  out.images = await page.evaluate(() =>
    Array.from(document.querySelectorAll('img.qr')).map((i) => {
      const r = i.getBoundingClientRect();
      return {
        src: i.getAttribute('src'),
        alt: i.getAttribute('alt'),
        naturalWidth: i.naturalWidth,
        loaded: i.complete && i.naturalWidth > 0,
        visible: r.width > 0 && r.height > 0 && getComputedStyle(i).visibility !== 'hidden',
      };
    }),
  );
  out.qrLoaded = out.images.length > 0 && out.images.every((i) => i.loaded);
  out.refreshPresent = f.metaRefresh.length > 0 || f.noscriptRefresh || !!out.refresh;
  if (a.outDir && a.name) {
    fs.mkdirSync(a.outDir, { recursive: true });
    out.screenshot = path.join(a.outDir, `${a.name}-nojs-phone.png`);
    await page.screenshot({ path: out.screenshot, fullPage: true });
  }
  out.log = log;
  await ctx.close();
  return out;
}

async function hindi(a) {
  need(a, 'url');
  const b = await launch();
  const ctx = await b.newContext({ ...PHONE, locale: 'hi-IN', extraHTTPHeaders: { 'Accept-Language': 'hi' } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const resp = await open(page, a.url);
  const f = await facts(page);
  const out = { ok: true, ...headersOf(resp) };
  out.lang = f.lang;
  out.langSwitch = f.langSwitch;
  out.text = await page.evaluate(() => document.body.innerText.slice(0, 2000));
  if (a.outDir && a.name) {
    fs.mkdirSync(a.outDir, { recursive: true });
    out.screenshot = path.join(a.outDir, `${a.name}-hi-phone.png`);
    await page.screenshot({ path: out.screenshot, fullPage: true });
  }
  out.log = log;
  await ctx.close();
  return out;
}

// Every language in one browser: `?lang=<code>` for each of a.codes, a phone screenshot each,
// and what the Rust test needs to judge it (lang, dir, text, where the merchant name and the
// language menu sit, whether the amount reads left to right).
async function locales(a) {
  need(a, 'url');
  if (!Array.isArray(a.codes) || a.codes.length === 0) throw new Error('argument codes (a list) is required');
  const b = await launch();
  const ctx = await b.newContext({ ...PHONE });
  const out = { ok: true, pages: {} };
  for (const code of a.codes) {
    const page = await ctx.newPage();
    page.setDefaultTimeout(ACTION_TIMEOUT_MS);
    const url = `${a.url}?lang=${encodeURIComponent(code)}`;
    const log = watch(page, url);
    await open(page, url);
    const p = await page.evaluate(() => {
      const box = (sel) => {
        const el = document.querySelector(sel);
        if (!el) return null;
        const r = el.getBoundingClientRect();
        return { left: r.left, right: r.right, width: r.width };
      };
      const amount = document.querySelector('#amount');
      // Characters the page's fonts cannot draw: each letter rendered alone on a canvas in
      // the page's font, compared pixel for pixel with an unassigned code point's box (tofu).
      const font = getComputedStyle(document.body).font;
      const draw = (ch) => {
        const cv = document.createElement('canvas');
        cv.width = 48; cv.height = 48;
        const g = cv.getContext('2d');
        g.font = font; g.textBaseline = 'top'; g.fillStyle = '#000';
        g.fillText(ch, 4, 4);
        return g.getImageData(0, 0, 48, 48).data.join(',');
      };
      const notdef = draw('\u0378');
      const letters = [...new Set(document.body.innerText.match(/[^\u0000-\u024f\s\p{M}\p{P}\p{S}\p{N}]/gu) || [])];
      const tofu = letters.filter((ch) => draw(ch) === notdef);
      return {
        lang: document.documentElement.lang,
        dir: document.documentElement.dir,
        computedDir: getComputedStyle(document.body).direction,
        text: document.body.innerText,
        title: document.title,
        merchant: box('#merchant'),
        langs: box('.langs'),
        amountDir: amount ? getComputedStyle(amount.querySelector('bdi') || amount).direction : null,
        switches: document.querySelectorAll('a.lang-switch').length,
        letters: letters.length,
        tofu,
        // Text that rendered at zero width (a missing font shows as tofu, which still has
        // width; an empty string has none): every visible text element must have some.
        emptyVisible: Array.from(document.querySelectorAll('h1, #status, .hint, summary, label, button, .warning'))
          // checkVisibility: content of a closed <details> keeps its offsetParent but is not shown.
          .filter((e) => e.checkVisibility() && e.innerText.trim() === '')
          .map((e) => e.outerHTML.slice(0, 120)),
      };
    });
    if (a.outDir) {
      fs.mkdirSync(a.outDir, { recursive: true });
      p.screenshot = path.join(a.outDir, `locale-${code}-phone.png`);
      await page.screenshot({ path: p.screenshot, fullPage: true });
    }
    p.log = log;
    out.pages[code] = p;
    await page.close();
  }
  await ctx.close();
  return out;
}

/// The counter QR, scanned: the customer's phone opens the link's page, types the amount,
/// lands on that one session's checkout page, and (the money arriving from elsewhere) sees it
/// turn "paid" live — with JavaScript through the page's live channel, without it through the
/// page's own refresh.
async function counter(a) {
  need(a, 'url', 'amount', 'outDir', 'name');
  fs.mkdirSync(a.outDir, { recursive: true });
  const waitMs = Number(a.waitMs || 20000);
  const b = await launch();
  const ctx = await b.newContext({ ...PHONE, javaScriptEnabled: a.javascript !== false });
  const page = await ctx.newPage();
  page.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const log = watch(page, a.url);
  const out = { ok: true, javascript: a.javascript !== false };
  const resp = await open(page, a.url);
  out.linkStatus = resp ? resp.status() : null;
  out.linkHasForm = (await page.locator('form#link-form input#amount-input').count()) === 1;
  out.files = { form: path.join(a.outDir, `${a.name}-form.png`) };
  await page.screenshot({ path: out.files.form, fullPage: true });
  await page.locator('#amount-input').fill(a.amount);
  await Promise.all([
    page.waitForURL((u) => u.pathname.startsWith('/c/'), { waitUntil: 'load' }),
    page.locator('form#link-form button[type="submit"]').click(),
  ]);
  out.checkoutUrl = page.url();
  const id = new URL(out.checkoutUrl).pathname.split('/')[2];
  const img = page.locator('section.option img.qr').first();
  await img.waitFor({ state: 'visible' });
  await img.evaluate((i) => (i.complete ? true : new Promise((r) => i.addEventListener('load', r, { once: true }))));
  out.files.qr = path.join(a.outDir, `${a.name}-qr.png`);
  await img.screenshot({ path: out.files.qr, animations: 'disabled' });
  out.files.before = path.join(a.outDir, `${a.name}-before.png`);
  await page.screenshot({ path: out.files.before, fullPage: true });
  const statusOf = async () => {
    try {
      return await page.locator('#status').getAttribute('data-status', { timeout: 1000 });
    } catch {
      return null;
    }
  };
  out.initialStatus = await statusOf();
  out.amountShown = (await page.locator('#amount').textContent().catch(() => '')).trim();
  const origin = new URL(out.checkoutUrl).origin;
  const sim = await fetch(`${origin}/c/${id}/simulate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  out.simulateStatus = sim.status;
  const t0 = Date.now();
  let navigations = 0;
  page.on('framenavigated', (fr) => {
    if (fr === page.mainFrame()) navigations++;
  });
  out.finalStatus = null;
  while (Date.now() - t0 < waitMs) {
    const st = await statusOf();
    if (st === 'complete') {
      out.finalStatus = st;
      break;
    }
    await page.waitForTimeout(200);
  }
  out.msToPaid = out.finalStatus ? Date.now() - t0 : null;
  out.reloads = navigations;
  out.statusText = (await page.locator('#status').textContent().catch(() => '')).trim();
  out.files.after = path.join(a.outDir, `${a.name}-after.png`);
  await page.screenshot({ path: out.files.after, fullPage: true });
  out.log = log;
  await ctx.close();
  return out;
}

const SCENARIOS = { screenshots, simulate_success: simulateSuccess, xss, nojs, hindi, locales, counter };

async function main() {
  const [scenario, raw] = process.argv.slice(2);
  const run = SCENARIOS[scenario];
  if (!run) return fail(`usage: node checkout.mjs <${Object.keys(SCENARIOS).join('|')}> '<json args>'`);
  let args;
  try {
    args = JSON.parse(raw || '{}');
  } catch (e) {
    return fail(`the second argument is not JSON: ${e.message}`);
  }
  try {
    const result = await run(args);
    emit({ scenario, ...result }, 0);
  } catch (e) {
    emit({ ok: false, scenario, error: String((e && e.stack) || e) }, 1);
  } finally {
    if (browser) await browser.close().catch(() => {});
    clearTimeout(watchdog);
  }
}

main();
