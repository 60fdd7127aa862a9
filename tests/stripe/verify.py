"""Verifies one callback as a Stripe receiver would, with the Python library's own
stripe.Webhook.construct_event. Usage: verify.py BODY_FILE SIGNATURE_HEADER SECRET; prints what
it parsed as JSON. A tampered body and a wrong secret must be refused."""

import json
import sys

import stripe

body = open(sys.argv[1], "rb").read().decode("utf-8")
header, secret = sys.argv[2], sys.argv[3]

event = stripe.Webhook.construct_event(body, header, secret)
refused = []
for what, (b, s) in {
    "tampered body": (body.replace('"livemode":false', '"livemode":true', 1) + " ", secret),
    "wrong secret": (body, secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")),
}.items():
    try:
        stripe.Webhook.construct_event(b, header, s)
    except stripe.SignatureVerificationError:
        refused.append(what)
print(json.dumps({
    "id": event.id,
    "type": event.type,
    "object": event.data.object.object,
    "object_id": event.data.object.id,
    "class": type(event).__name__,
    "refused": refused,
}))
