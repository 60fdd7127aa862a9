// Verifies one callback as a Stripe receiver would, with the Node library's own
// stripe.webhooks.constructEvent. Usage: node verify.js BODY_FILE SIGNATURE_HEADER SECRET.
'use strict';
const fs = require('fs');
const Stripe = require('stripe');

const stripe = new Stripe('pw_test_unused');
const [file, header, secret] = process.argv.slice(2);
const body = fs.readFileSync(file);
const event = stripe.webhooks.constructEvent(body, header, secret);
const refused = [];
const tries = {
  'tampered body': [Buffer.concat([body, Buffer.from(' ')]), secret],
  'wrong secret': [body, secret.slice(0, -2) + (secret.endsWith('AA') ? 'BB' : 'AA')],
};
for (const [what, [b, s]] of Object.entries(tries)) {
  try {
    stripe.webhooks.constructEvent(b, header, s);
  } catch (e) {
    if (e.type === 'StripeSignatureVerificationError') refused.push(what);
  }
}
console.log(JSON.stringify({
  id: event.id,
  type: event.type,
  object: event.data.object.object,
  object_id: event.data.object.id,
  refused,
}));
