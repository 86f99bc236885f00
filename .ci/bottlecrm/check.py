#!/usr/bin/env python3
"""Smoke test (and API probe) for the local BottleCRM test server.

Standard library only; runs under the BottleCRM venv or any python3 >= 3.8.

    BOTTLECRM_URL=http://127.0.0.1:8800 BOTTLECRM_TOKEN_FILE=DIR/pat.txt python3 check.py
    python3 check.py --url http://127.0.0.1:8800 --token-file DIR/pat.txt [--probe]

Default: the calls an Engati -> BottleCRM sink makes, in order:
  create contact, duplicates lookup by phone and by email, PATCH contact,
  GET contact, POST interaction (whatsapp, inbound), list interactions of the
  contact, PATCH interaction (body), list again.
Each call prints `METHOD path -> status  <compact JSON, trimmed>`; a failed
expectation prints `FAIL` and the exit code is 1.

--probe adds the measurements the README's contract is based on: phone/email
matching variants, validation limits and error bodies, auth failures,
pagination. --probe-throttle also fires 125 duplicate lookups to observe the
120/minute throttle (it leaves that endpoint throttled for a minute).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

FAILURES = []


class Api:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, token="default", show=True, width=700):
        url = self.base + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        tok = self.token if token == "default" else token
        if tok is not None:
            req.add_header("Authorization", "Bearer " + tok)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw, headers = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, headers = e.code, e.read(), e.headers
        ms = (time.monotonic() - t0) * 1000
        try:
            payload = json.loads(raw) if raw else None
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            payload = None
            text = "<non-JSON %s, %d bytes> %r" % (
                headers.get("Content-Type"),
                len(raw),
                raw[:120],
            )
        if show:
            shown = text if len(text) <= width else text[:width] + "...(%d chars)" % len(text)
            print("%-6s %s -> %d (%.0f ms)  %s" % (method, path, status, ms, shown))
        return status, payload, headers


def expect(cond, what):
    if not cond:
        FAILURES.append(what)
        print("  FAIL: " + what)


def section(title):
    print("\n## " + title)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def smoke(api, tag):
    now = datetime.now(timezone.utc)
    email = "ann.%s@example.com" % tag
    phone = "+919565428256"

    section("create contact")
    st, js, _ = api.call(
        "POST",
        "/api/contacts/",
        {"first_name": "Ann", "last_name": "Lee " + tag, "phone": phone, "email": email},
    )
    expect(st == 200 and js and js.get("error") is False and js.get("id"), "contact create")
    cid = (js or {}).get("id")

    section("duplicates lookup (the first half of an upsert)")
    st, js, _ = api.call("POST", "/api/contacts/duplicates/", {"phone": phone})
    ids = [d["id"] for d in (js or {}).get("duplicates", [])]
    expect(st == 200 and cid in ids, "duplicates by phone finds the contact")
    st, js, _ = api.call("POST", "/api/contacts/duplicates/", {"email": email.upper()})
    ids = [d["id"] for d in (js or {}).get("duplicates", [])]
    expect(st == 200 and ids == [cid], "duplicates by email (upper case) finds exactly the contact")

    section("PATCH contact (the second half of an upsert)")
    st, js, _ = api.call(
        "PATCH",
        "/api/contacts/%s/" % cid,
        {"first_name": "Annie", "description": "Engati user %s" % tag},
    )
    expect(st == 200 and js and js.get("error") is False, "contact patch")
    st, js, _ = api.call("GET", "/api/contacts/%s/" % cid, width=400)
    obj = (js or {}).get("contact_obj") or {}
    expect(st == 200 and obj.get("first_name") == "Annie", "contact detail shows the patch")

    section("POST interaction (one transcript)")
    body = {
        "kind": "whatsapp",
        "direction": "inbound",
        "contact": cid,
        "subject": "Engati conversation conv-%s" % tag,
        "body": "user: Hi, I need help with my order\nbot: Sure, what is the order number?",
        "occurred_at": iso(now - timedelta(hours=1)),
    }
    st, js, _ = api.call("POST", "/api/interactions/", body)
    expect(st == 201 and js and js.get("id"), "interaction create")
    iid = (js or {}).get("id")

    section("list interactions of the contact")
    st, js, _ = api.call("GET", "/api/interactions/?contact=%s" % cid)
    got = [i["id"] for i in (js or {}).get("interactions", [])]
    expect(st == 200 and got == [iid] and js.get("count") == 1, "interaction list by contact")

    section("PATCH interaction (transcript grew)")
    st, js, _ = api.call(
        "PATCH",
        "/api/interactions/%s/" % iid,
        {"body": body["body"] + "\nuser: 12345"},
    )
    expect(st == 200 and js and js.get("body", "").endswith("12345"), "interaction patch body")
    st, js, _ = api.call("GET", "/api/interactions/?contact=%s" % cid, width=300)
    got = (js or {}).get("interactions", [{}])
    expect(st == 200 and got and got[0].get("body", "").endswith("12345"), "list shows patched body")
    return cid, iid, email, phone


def probe(api, tag, cid, iid, email, phone):
    now = datetime.now(timezone.utc)
    dup = "/api/contacts/duplicates/"

    section("PROBE duplicates: phone variants (stored %s)" % phone)
    for p in [
        "+91 95654 28256",
        "+91-956-542-8256",
        "919565428256",
        "09565428256",
        "9565428256",
        "(956) 542-8256",
        "+449565428256",
        "+91956542825",
        "+919565428257",
    ]:
        st, js, _ = api.call("POST", dup, {"phone": p}, show=False)
        hits = [(d["id"] == cid, d["matched_on"]) for d in (js or {}).get("duplicates", [])]
        mine = [m for is_me, m in hits if is_me]
        print("  phone %-20r -> %d  hits=%d  this contact matched_on=%s" % (p, st, len(hits), mine))

    section("PROBE duplicates: email variants (stored %s)" % email)
    for e in [email, email.upper(), "  %s  " % email, email.replace("@", "+x@"), "ann.%s@EXAMPLE.com" % tag]:
        st, js, _ = api.call("POST", dup, {"email": e}, show=False)
        hits = [d["matched_on"] for d in (js or {}).get("duplicates", []) if d["id"] == cid]
        print("  email %-40r -> %d  this contact matched_on=%s" % (e, st, hits))

    section("PROBE duplicates: name match, empty body, both fields")
    api.call("POST", dup, {"first_name": "annie", "last_name": "LEE " + tag})
    api.call("POST", dup, {})
    api.call("POST", dup, {"phone": "123"})
    api.call("POST", dup, {"email": email, "phone": phone})
    api.call("POST", dup, {"phone": "+1" + "5" * 30})

    section("PROBE contacts: create errors")
    api.call("POST", "/api/contacts/", {"first_name": "X", "phone": "+15550001111"})
    api.call("POST", "/api/contacts/", {"last_name": "OnlyLast"})
    api.call("POST", "/api/contacts/", {"first_name": "Dup", "last_name": "Mail", "email": email.upper()})
    api.call("POST", "/api/contacts/", {"first_name": "Bad", "last_name": "Phone", "phone": "not-a-phone"})
    api.call("POST", "/api/contacts/", {"first_name": "Bad", "last_name": "Mail", "email": "nope"})
    api.call("POST", "/api/contacts/", {"first_name": "Long", "last_name": "Phone", "phone": "+1" + "2" * 30})
    st, js, _ = api.call(
        "POST", "/api/contacts/", {"first_name": "Same", "last_name": "Phone", "phone": phone}
    )
    second = (js or {}).get("id")
    api.call("POST", dup, {"phone": phone}, width=1200)
    api.call(
        "POST",
        "/api/contacts/",
        {"first_name": "Unknown", "last_name": "Field", "bogus_field": 1, "phone": "+919000000001"},
    )

    section("PROBE contacts: PATCH errors / semantics")
    api.call("PATCH", "/api/contacts/%s/" % cid, {"email": "nope"})
    api.call("PATCH", "/api/contacts/%s/" % cid, {"last_name": ""})
    if second:
        api.call("PATCH", "/api/contacts/%s/" % second, {"email": email})
    api.call("PATCH", "/api/contacts/00000000-0000-0000-0000-000000000000/", {"first_name": "x"})
    api.call("PATCH", "/api/contacts/not-a-uuid/", {"first_name": "x"})
    api.call("PATCH", "/api/contacts/%s/" % cid, {"nickname": "ignored?", "title": "Customer"})
    api.call("PATCH", "/api/contacts/%s/" % cid, {"first_name": "N" * 256})
    api.call("PATCH", "/api/contacts/%s/" % cid, {"email": email.upper()})
    api.call("PATCH", "/api/contacts/%s/" % cid, {"phone": "+91 95654 28256"})
    st, js, _ = api.call("GET", "/api/contacts/%s/" % cid, show=False)
    c = (js or {}).get("contact_obj") or {}
    print("  after PATCH phone: phone=%r" % c.get("phone"))
    print("  GET contact detail top-level keys: %s" % sorted((js or {}).keys()))
    print("  contact_obj keys: %s" % sorted(c.keys()))

    section("PROBE contacts list filters")
    st, js, _ = api.call("GET", "/api/contacts/?phone=9565428256", show=False)
    print("  ?phone=9565428256 -> %d count=%s keys=%s" % (st, (js or {}).get("count"), sorted((js or {}).keys())))
    st, js, _ = api.call("GET", "/api/contacts/?email=%s" % email.split("@")[0][:6], show=False)
    print("  ?email=<prefix> -> %d count=%s" % (st, (js or {}).get("count")))

    section("PROBE interactions: validation")
    base = {
        "kind": "whatsapp",
        "direction": "inbound",
        "contact": cid,
        "subject": "probe %s" % tag,
        "body": "x",
        "occurred_at": iso(now - timedelta(minutes=30)),
    }

    def post(**over):
        b = dict(base)
        for k, v in over.items():
            if v is None:
                b.pop(k, None)
            else:
                b[k] = v
        return api.call("POST", "/api/interactions/", b, width=500)

    post(direction="outbound")
    post(direction="sideways")
    post(direction=None)
    post(kind="chat")
    post(kind="sms")
    post(kind="enquiry")
    post(kind=None)
    post(contact=None)
    post(contact="00000000-0000-0000-0000-000000000000")
    post(contact="not-a-uuid")
    post(occurred_at=iso(now + timedelta(minutes=4)))
    post(occurred_at=iso(now + timedelta(minutes=6)))
    post(occurred_at=None)
    post(occurred_at="2026-11-20 10:00:00")
    post(occurred_at="2026-11-20T15:30:00+05:30")
    post(occurred_at="1700000000000")
    post(body="b" * 10000)
    post(body="b" * 10001)
    post(subject="s" * 200)
    post(subject="s" * 201)
    post(subject=None, body=None)
    post(body="नमस्ते 你好 مرحبا 👋 \u0000nul")
    post(body="नमस्ते 你好 مرحبا 👋")
    st, js, _ = post(body="  \n padded body \n\n ", subject="  padded subject  ")
    print("  stored body=%r subject=%r" % ((js or {}).get("body"), (js or {}).get("subject")))
    st, js, _ = post(body="a\r\nb\tc")
    print("  stored body=%r" % (js or {}).get("body"))
    st, js, _ = api.call("POST", "/api/interactions/", dict(base, body="\U0001F44B" * 10000), show=False)
    print("  body = 10000 x U+1F44B (40000 UTF-8 bytes, 20000 UTF-16 units) -> %d" % st)
    st, js, _ = api.call("POST", "/api/interactions/", dict(base, body="\U0001F44B" * 10001), show=False)
    print("  body = 10001 x U+1F44B -> %d %s" % (st, json.dumps(js)))
    st, js, _ = api.call("POST", "/api/interactions/", dict(base, body="x" * 10000 + "   "), show=False)
    print("  body = 10000 x 'x' + 3 trailing spaces -> %d" % st)
    post(origin="engati")
    post(external_id="conv-1")
    post(participants=["x"])
    st, js, _ = post(lead="00000000-0000-0000-0000-000000000000")
    post(duration_seconds=30)
    post(outcome="connected")

    section("PROBE interactions: list / pagination")
    api.call("GET", "/api/interactions/", width=300)
    api.call("GET", "/api/interactions/?contact=not-a-uuid", width=300)
    api.call("GET", "/api/interactions/?contact=00000000-0000-0000-0000-000000000000", width=300)
    st, js, _ = api.call("GET", "/api/interactions/?contact=%s&limit=2&offset=1" % cid, show=False)
    print(
        "  limit=2&offset=1 -> %d keys=%s count=%s returned=%d"
        % (st, sorted((js or {}).keys()), (js or {}).get("count"), len((js or {}).get("interactions", [])))
    )
    st, js, _ = api.call("GET", "/api/interactions/?contact=%s&limit=1000" % cid, show=False)
    print("  limit=1000 -> %d count=%s returned=%d" % (st, (js or {}).get("count"), len((js or {}).get("interactions", []))))
    st, js, _ = api.call("GET", "/api/interactions/?contact=%s&subject=nomatch" % cid, show=False)
    print("  &subject=nomatch (unknown filter) -> %d count=%s" % (st, (js or {}).get("count")))
    if js and js.get("interactions"):
        print("  order of occurred_at: %s" % [i["occurred_at"] for i in js["interactions"][:6]])

    section("PROBE interactions: PATCH / PUT / GET one / DELETE")
    p = "/api/interactions/%s/" % iid
    api.call("GET", p, width=300)
    api.call("PUT", p, {"body": "put"}, width=300)
    api.call("PATCH", p, {"subject": "s" * 201}, width=300)
    api.call("PATCH", p, {"body": "b" * 10001}, width=300)
    api.call("PATCH", p, {"kind": "sms"}, width=300)
    api.call("PATCH", p, {"kind": "whatsapp", "body": "same kind resent"}, width=300)
    if second:
        api.call("PATCH", p, {"contact": second}, width=300)
    api.call("PATCH", p, {"occurred_at": iso(now + timedelta(hours=1))}, width=300)
    api.call("PATCH", p, {"direction": "outbound"}, width=300)
    api.call("PATCH", p, {}, width=300)
    api.call("PATCH", "/api/interactions/00000000-0000-0000-0000-000000000000/", {"body": "x"}, width=300)
    st, js, _ = post(subject="to delete %s" % tag)
    if js and js.get("id"):
        api.call("DELETE", "/api/interactions/%s/" % js["id"])
        api.call("DELETE", "/api/interactions/%s/" % js["id"])

    section("PROBE notes (comments) on a contact")
    api.call("POST", "/api/contacts/%s/" % cid, {"comment": "Engati conversation conv-%s exported" % tag}, width=400)

    section("PROBE auth failures")
    api.call("GET", "/api/interactions/?contact=%s" % cid, token=None)
    api.call("POST", "/api/contacts/", {"first_name": "a", "last_name": "b"}, token=None)
    api.call("GET", "/api/interactions/?contact=%s" % cid, token="bcrm_pat_wrongwrongwrong")
    api.call("POST", dup, {"phone": phone}, token="bcrm_pat_wrongwrongwrong")
    api.call("GET", "/api/interactions/?contact=%s" % cid, token="not-a-pat")
    api.call("GET", "/api/nope/")
    api.call("GET", "/healthz/")


def probe_throttle(api, phone):
    section("PROBE duplicates throttle (120/minute per user)")
    t0 = time.monotonic()
    first429 = None
    for n in range(1, 126):
        st, js, h = api.call("POST", "/api/contacts/duplicates/", {"phone": phone}, show=False)
        if st == 429 and first429 is None:
            first429 = n
            print("  call #%d -> 429 Retry-After=%s body=%s" % (n, h.get("Retry-After"), json.dumps(js)))
    print("  125 calls in %.1f s; first 429 at call %s" % (time.monotonic() - t0, first429))
    st, js, h = api.call("GET", "/api/contacts/?phone=1", show=False)
    print("  contacts list meanwhile -> %d (throttle is per endpoint scope)" % st)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("BOTTLECRM_URL"))
    ap.add_argument("--token-file", default=os.environ.get("BOTTLECRM_TOKEN_FILE"))
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--probe-throttle", action="store_true")
    a = ap.parse_args()
    if not a.url or not a.token_file:
        ap.error("need BOTTLECRM_URL and BOTTLECRM_TOKEN_FILE (or --url/--token-file)")
    with open(a.token_file) as f:
        token = f.read().strip()
    api = Api(a.url, token)
    tag = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S%f")
    t0 = time.monotonic()
    cid, iid, email, phone = smoke(api, tag)
    if a.probe:
        probe(api, tag, cid, iid, email, phone)
    if a.probe_throttle:
        probe_throttle(api, phone)
    print()
    if FAILURES:
        print("check.py: %d FAILED: %s (%.1f s)" % (len(FAILURES), "; ".join(FAILURES), time.monotonic() - t0))
        return 1
    print("check.py: OK (%.1f s)" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
