"""Stripe's official Python library (PyPI `stripe`) as a paywatch client, run by
tests/stripe_libraries.rs against the real binary. Every step asserts; the last line of stdout is
a JSON summary the Rust test reads. Usage: flow.py (flow|ratelimit) with PAYWATCH_BASE,
PAYWATCH_KEY and RECEIVER_URL in the environment."""

import json
import os
import sys
import time
import urllib.request

import stripe

BASE = os.environ["PAYWATCH_BASE"]
KEY = os.environ["PAYWATCH_KEY"]

stripe.api_key = KEY
stripe.api_base = BASE
# Retries would hide a 429 and resend POSTs; paywatch's answers are what is tested.
stripe.max_network_retries = 0


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def simulate(session_id):
    """Pays a test session as the checkout page's "Simulate payment" button does."""
    req = urllib.request.Request(
        f"{BASE}/c/{session_id}/simulate",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        check(r.status == 200, f"simulate answered {r.status}")


def flow():
    out = {"library": "python", "version": stripe.VERSION}

    # A webhook endpoint at the test's receiver, as a merchant moving from Stripe creates it.
    ep = stripe.WebhookEndpoint.create(
        url=os.environ["RECEIVER_URL"],
        enabled_events=["checkout.session.completed", "refund.created"],
        description="python library",
    )
    check(ep.id.startswith("we_"), f"endpoint id {ep.id}")
    check(ep.secret.startswith("whsec_"), "the secret is returned on create")
    check(ep.enabled_events == ["checkout.session.completed", "refund.created"], f"enabled_events {ep.enabled_events}")
    check(isinstance(ep.created, int), f"endpoint created {ep.created!r}")
    out["endpoint_secret"] = ep.secret

    # A session, the way the merchant wrote it.
    s = stripe.checkout.Session.create(
        mode="payment",
        amount=14999,
        currency="inr",
        payment_method_types=["upi"],
        metadata={"order_id": "ORD-1", "shipped_at": "2026-01-01T00:00:00Z"},
        success_url="https://shop.example/ok?session={CHECKOUT_SESSION_ID}",
        client_reference_id="cust-42",
        expand=["payment_intent"],
    )
    check(isinstance(s, stripe.checkout.Session), f"typed object {type(s)}")
    check(s.id.startswith("cs_test_") or s.id.startswith("cs_"), f"session id {s.id}")
    check(s.amount == 14999 and s.amount_total == 14999, "amount")
    check(s.url == s.checkout_url and s.url.endswith("/c/" + s.id), f"url {s.url}")
    check(isinstance(s.created, int) and isinstance(s.expires_at, int), "unix timestamps")
    check(1800 - 5 <= s.expires_at - s.created <= 1800 + 5, f"expires_at {s.expires_at} created {s.created}")
    check(abs(s.created - time.time()) < 120, "created is now")
    check(s.payment_method_types == ["upi"], f"payment_method_types {s.payment_method_types}")
    check(s.metadata["order_id"] == "ORD-1", "metadata")
    check(s.metadata["shipped_at"] == "2026-01-01T00:00:00Z", "metadata is the merchant's, untouched")
    check(s.success_url == f"https://shop.example/ok?session={s.id}", f"success_url {s.success_url}")
    out["session"] = s.id

    got = stripe.checkout.Session.retrieve(s.id, expand=["line_items"])
    check(got.id == s.id and got.status == "open" and got.expires_at == s.expires_at, "retrieve")

    # More sessions, then auto-pagination two at a time: has_more and data[-1].id drive it.
    made = [s.id]
    for i in range(4):
        made.append(stripe.checkout.Session.create(amount=100 + i, currency="inr").id)
    first = stripe.checkout.Session.list(limit=2)
    check(first.has_more is True and len(first.data) == 2, "first page")
    check(first.url == "/v1/checkout/sessions", f"list url {first.url}")
    seen = [x.id for x in stripe.checkout.Session.list(limit=2).auto_paging_iter()]
    check(len(seen) == len(set(seen)), f"auto-pagination repeated an id: {seen}")
    check(set(made) <= set(seen), f"auto-pagination missed sessions: {set(made) - set(seen)}")
    out["paged"] = len(seen)

    # Expire one through the library's own call.
    expired = stripe.checkout.Session.expire(made[1])
    check(expired.status == "expired", f"expire gave {expired.status}")

    # A simulated payment, then the session as the library reads it.
    simulate(s.id)
    for _ in range(100):
        got = stripe.checkout.Session.retrieve(s.id)
        if got.status == "complete":
            break
        time.sleep(0.1)
    check(got.status == "complete" and got.payment_status == "paid", f"after payment: {got.status}")
    check(isinstance(got.completed_at, int), "completed_at in unix seconds")

    # A partial refund, retrieved and listed.
    r = stripe.Refund.create(session=s.id, amount=5000, reason="requested_by_customer")
    check(r.id.startswith("re_") and r.status == "pending", f"refund {r.id} {r.status}")
    check(r.amount == 5000 and r.amount_decimal == "50.00", f"refund amount {r.amount} {r.amount_decimal}")
    check(isinstance(r.created, int), "refund created")
    check(stripe.Refund.retrieve(r.id).id == r.id, "refund retrieve")
    listed = [x.id for x in stripe.Refund.list(session=s.id).auto_paging_iter()]
    check(listed == [r.id], f"refund list {listed}")
    out["refund"] = r.id

    # Events, paged one at a time, and one retrieved.
    events = list(stripe.Event.list(limit=1).auto_paging_iter())
    types = {e.type for e in events}
    check("checkout.session.completed" in types and "refund.created" in types, f"event types {types}")
    check(len({e.id for e in events}) == len(events), "event pages repeat")
    one = stripe.Event.retrieve(events[0].id)
    check(one.id == events[0].id and isinstance(one.created, int), "event retrieve")
    check(one.data.object.object in ("checkout.session", "refund"), "event data")

    # Endpoints: listed, and a second one deleted.
    ep2 = stripe.WebhookEndpoint.create(url="https://shop.example/hooks", enabled_events=["*"])
    ids = [e.id for e in stripe.WebhookEndpoint.list().auto_paging_iter()]
    check(ep.id in ids and ep2.id in ids, f"endpoint list {ids}")
    gone = stripe.WebhookEndpoint.delete(ep2.id)
    check(gone.deleted is True, "endpoint deleted")
    check(ep2.id not in [e.id for e in stripe.WebhookEndpoint.list().data], "deleted endpoint listed")

    # Errors as the library's typed errors.
    try:
        stripe.checkout.Session.create(amount=-5, currency="inr")
        raise AssertionError("a negative amount was accepted")
    except stripe.InvalidRequestError as e:
        check(e.param == "amount" and e.code == "parameter_invalid" and e.http_status == 400, f"{e.param} {e.code}")
    try:
        stripe.checkout.Session.create(amount=100, currency="inr", payment_method_types=["card"])
        raise AssertionError("an unknown method was accepted")
    except stripe.InvalidRequestError as e:
        check(e.param == "payment_method_types" and e.code == "payment_method_unavailable", f"{e.param} {e.code}")
    try:
        stripe.checkout.Session.create(amount=100, currency="inr", mode="subscription")
        raise AssertionError("mode=subscription was accepted")
    except stripe.InvalidRequestError as e:
        check(e.param == "mode", f"{e.param}")
    try:
        stripe.checkout.Session.retrieve("cs_test_nope")
        raise AssertionError("a missing session was found")
    except stripe.InvalidRequestError as e:
        check(e.http_status == 404 and e.code == "resource_missing", f"{e.http_status} {e.code}")
    try:
        stripe.checkout.Session.list(api_key="pw_test_not_a_real_key")
        raise AssertionError("a wrong key was accepted")
    except stripe.AuthenticationError as e:
        check(e.http_status == 401, f"{e.http_status}")
    return out


def ratelimit():
    for i in range(20):
        try:
            stripe.checkout.Session.list(limit=1)
        except stripe.RateLimitError as e:
            check(e.http_status == 429, f"{e.http_status}")
            return {"rate_limited_after": i}
    raise AssertionError("20 requests in a row were never rate limited")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "flow"
    print(json.dumps(flow() if mode == "flow" else ratelimit()))
