// Stripe's official Node library (npm `stripe`) as a paywatch client, run by
// tests/stripe_libraries.rs against the real binary. Every step asserts; the last line of stdout
// is a JSON summary. Usage: node flow.js (flow|ratelimit) with PAYWATCH_BASE, PAYWATCH_KEY and
// RECEIVER_URL in the environment.
'use strict';
const assert = require('assert/strict');
const Stripe = require('stripe');

const base = new URL(process.env.PAYWATCH_BASE);
const options = {
  host: base.hostname,
  port: Number(base.port),
  protocol: base.protocol.replace(':', ''),
  // Retries would hide a 429 and resend POSTs; paywatch's answers are what is tested.
  maxNetworkRetries: 0,
};
const stripe = new Stripe(process.env.PAYWATCH_KEY, options);

async function expectError(promise, type, check) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.type, type, `${e.type}: ${e.message}`);
    if (check) check(e);
    return;
  }
  assert.fail(`expected ${type}`);
}

async function flow() {
  const out = { library: 'node', version: Stripe.PACKAGE_VERSION };

  const ep = await stripe.webhookEndpoints.create({
    url: process.env.RECEIVER_URL,
    enabled_events: ['checkout.session.completed', 'refund.created'],
  });
  assert.ok(ep.id.startsWith('we_'));
  assert.ok(ep.secret.startsWith('whsec_'));
  assert.deepEqual(ep.enabled_events, ['checkout.session.completed', 'refund.created']);
  out.endpoint_secret = ep.secret;

  const s = await stripe.checkout.sessions.create({
    mode: 'payment',
    amount: 14999,
    currency: 'inr',
    payment_method_types: ['upi'],
    metadata: { order_id: 'ORD-1' },
    cancel_url: 'https://shop.example/cart',
    expand: ['payment_intent'],
  });
  assert.equal(s.object, 'checkout.session');
  assert.equal(s.amount, 14999);
  assert.equal(s.amount_total, 14999);
  assert.equal(s.url, s.checkout_url);
  assert.ok(Number.isInteger(s.created) && Number.isInteger(s.expires_at));
  assert.ok(Math.abs(s.expires_at - s.created - 1800) <= 5);
  assert.deepEqual(s.payment_method_types, ['upi']);
  assert.equal(s.metadata.order_id, 'ORD-1');
  out.session = s.id;

  const got = await stripe.checkout.sessions.retrieve(s.id, { expand: ['line_items'] });
  assert.equal(got.id, s.id);
  assert.equal(got.expires_at, s.expires_at);

  const made = [s.id];
  for (let i = 0; i < 4; i++) {
    made.push((await stripe.checkout.sessions.create({ amount: 200 + i, currency: 'inr' })).id);
  }
  const first = await stripe.checkout.sessions.list({ limit: 2 });
  assert.equal(first.has_more, true);
  assert.equal(first.url, '/v1/checkout/sessions');
  const seen = [];
  for await (const x of stripe.checkout.sessions.list({ limit: 2 })) seen.push(x.id);
  assert.equal(new Set(seen).size, seen.length, `repeated ids: ${seen}`);
  for (const id of made) assert.ok(seen.includes(id), `auto-pagination missed ${id}`);
  out.paged = seen.length;

  const expired = await stripe.checkout.sessions.expire(made[1]);
  assert.equal(expired.status, 'expired');

  const r = await fetch(`${process.env.PAYWATCH_BASE}/c/${s.id}/simulate`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  });
  assert.equal(r.status, 200);
  let paid;
  for (let i = 0; i < 100; i++) {
    paid = await stripe.checkout.sessions.retrieve(s.id);
    if (paid.status === 'complete') break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(paid.status, 'complete');
  assert.ok(Number.isInteger(paid.completed_at));

  const refund = await stripe.refunds.create({ session: s.id, amount: 5000 });
  assert.ok(refund.id.startsWith('re_'));
  assert.equal(refund.status, 'pending');
  assert.equal(refund.amount, 5000);
  assert.equal(refund.amount_decimal, '50.00');
  assert.equal((await stripe.refunds.retrieve(refund.id)).id, refund.id);
  const refunds = await stripe.refunds.list({ session: s.id }).autoPagingToArray({ limit: 10 });
  assert.deepEqual(refunds.map((x) => x.id), [refund.id]);
  out.refund = refund.id;

  const events = await stripe.events.list({ limit: 1 }).autoPagingToArray({ limit: 100 });
  const types = new Set(events.map((e) => e.type));
  assert.ok(types.has('checkout.session.completed') && types.has('refund.created'), [...types].join());
  const one = await stripe.events.retrieve(events[0].id);
  assert.equal(one.id, events[0].id);
  assert.ok(Number.isInteger(one.created));

  const ep2 = await stripe.webhookEndpoints.create({ url: 'https://shop.example/hooks', enabled_events: ['*'] });
  const eps = await stripe.webhookEndpoints.list().autoPagingToArray({ limit: 100 });
  assert.ok(eps.some((e) => e.id === ep2.id));
  const gone = await stripe.webhookEndpoints.del(ep2.id);
  assert.equal(gone.deleted, true);

  await expectError(stripe.checkout.sessions.create({ amount: -5, currency: 'inr' }),
    'StripeInvalidRequestError', (e) => {
      assert.equal(e.param, 'amount');
      assert.equal(e.code, 'parameter_invalid');
      assert.equal(e.statusCode, 400);
    });
  await expectError(stripe.checkout.sessions.retrieve('cs_test_nope'), 'StripeInvalidRequestError',
    (e) => assert.equal(e.code, 'resource_missing'));
  const wrong = new Stripe('pw_test_not_a_real_key', options);
  await expectError(wrong.checkout.sessions.list(), 'StripeAuthenticationError');
  return out;
}

async function ratelimit() {
  for (let i = 0; i < 20; i++) {
    try {
      await stripe.checkout.sessions.list({ limit: 1 });
    } catch (e) {
      assert.equal(e.type, 'StripeRateLimitError', e.message);
      return { rate_limited_after: i };
    }
  }
  throw new Error('20 requests in a row were never rate limited');
}

(process.argv[2] === 'ratelimit' ? ratelimit() : flow()).then(
  (out) => console.log(JSON.stringify(out)),
  (e) => { console.error(e); process.exit(1); },
);
