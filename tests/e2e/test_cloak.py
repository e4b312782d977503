"""Identifier cloaking through a real Envoy and upstream.

Tokens are opened and minted here by an independent implementation of the
construction (docs/design.md, "Identifier cloaking") over the `cryptography`
package's ChaCha20-Poly1305: what the filter issues must open with it, and what it
mints must open in the filter.
"""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from harness import poll, start_envoy

ISS = "https://idp.cloak.test/"
SECRET = os.urandom(32)
KEY, OLD_KEY = os.urandom(32), os.urandom(64)
MARK = "api-guard audit: "


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keys(key):
    expand = lambda info: hmac.new(key, info + b"\x01", hashlib.sha256).digest()  # noqa: E731
    return expand(b"api-guard cloak encryption"), expand(b"api-guard cloak nonce")


def context(kind, sub):
    out = bytes([len(kind)]) + kind.encode()
    if sub is None:
        return out + b"\x00"
    return out + b"\x01" + len(sub.encode()).to_bytes(4, "big") + sub.encode()


def mint(kind, value, sub=None, key=KEY):
    enc, mac = keys(key)
    ctx, v = context(kind, sub), str(value).encode()
    nonce = hmac.new(mac, ctx + v, hashlib.sha256).digest()[:12]
    return b64u(nonce + ChaCha20Poly1305(enc).encrypt(nonce, v, ctx))


def open_token(kind, token, sub=None, key=KEY):
    enc, mac = keys(key)
    raw, ctx = unb64u(token), context(kind, sub)
    value = ChaCha20Poly1305(enc).decrypt(raw[:12], raw[12:], ctx)
    assert hmac.new(mac, ctx + value, hashlib.sha256).digest()[:12] == raw[:12]
    return value.decode()


def bearer(sub, **claims):
    now = int(time.time())
    payload = {"iss": ISS, "sub": sub, "iat": now, "exp": now + 600, **claims}
    return {"authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256",
                                                    headers={"kid": "k1"})}


SHOPS = {"shops": [{"id": "s1", "name": "Corner"}, {"id": 1002, "name": "Harbour"},
                   {"id": None, "name": "Closed"}], "owner": "alice"}

CONFIG = {
    "cloak_key": [base64.b64encode(KEY).decode(), base64.b64encode(OLD_KEY).decode()],
    "quota_settings": {"key_salt": "e2e-cloak-salt-0123456789"},
    "audit": {"records": "rejections", "pseudonym_key": "e2e-cloak-pseudonym-key"},
    "providers": {"idp": {"issuer": ISS, "jwks": {"inline": {"keys": [
        {"kty": "oct", "k": b64u(SECRET), "alg": "HS256", "kid": "k1"}]}}}},
    "routes": [
        {"name": "list-shops", "match": {"path": "/shops", "methods": ["GET"]},
         "auth": {"requires": "idp"}, "cloak": {"per_caller": True},
         "response": {"mask": [{"path": "$.shops[*].id", "action": "cloak", "kind": "shop"}]}},
        {"name": "revenue", "match": {"path": "/shops/{shop}/revenue", "methods": ["GET"]},
         "auth": {"requires": "idp", "bind": {"shop": "shops"}},
         "cloak": {"params": {"shop": "shop"}, "per_caller": True},
         "quota": {"limit": 3, "window_seconds": 3600, "by": "claim:sub"}},
        {"name": "order", "match": {"path": "/orders/{id}/items/{item}"},
         "cloak": {"params": {"id": "order"}}},
    ],
    "blocking": {"rules": [{"name": "guessing", "count": "not_found", "by": "header:x-client",
                            "max": 3, "window_seconds": 60, "block_seconds": 60}]},
}


def responders():
    def shops(handler, req):
        if req["path"] == "/shops":
            return 200, {"content-type": "application/json"}, json.dumps(SHOPS).encode()
        return 200, {"content-type": "application/json"}, json.dumps({"path": req["path"]}).encode()
    return {"/shops": shops}


@pytest.fixture(scope="module")
def env():
    with start_envoy(CONFIG, responders=responders()) as e:
        yield e


def listed_ids(env, sub):
    r = env.get("/shops", headers=bearer(sub, shops=["s1", "1002"]))
    assert r.status == 200, r
    return [s["id"] for s in r.json()["shops"]]


def test_a_list_gives_tokens_that_lead_to_the_real_ids(env):
    ids = listed_ids(env, "alice")
    assert ids[2] is None and all(isinstance(t, str) and len(t) > 30 for t in ids[:2]), ids
    # Deterministic, per caller, under the first key of the list; the integer comes
    # back as its digits.
    assert listed_ids(env, "alice") == ids
    assert [open_token("shop", t, "alice") for t in ids[:2]] == ["s1", "1002"]
    assert ids[:2] == [mint("shop", "s1", "alice"), mint("shop", 1002, "alice")]
    assert listed_ids(env, "bob")[:2] != ids[:2]
    for token, real in zip(ids[:2], ["s1", "1002"]):
        env.recorder.clear()
        r = env.get(f"/shops/{token}/revenue", headers=bearer("alice", shops=["s1", "1002"]))
        assert r.status == 200, r
        assert [q["path"] for q in env.upstream_requests()] == [f"/shops/{real}/revenue"]


def test_reserved_characters_stay_encoded_and_previous_keys_still_open(env):
    env.recorder.clear()
    # Minted under the previous key of the list; the query and the other segment
    # are kept as sent.
    token = mint("order", "a/b c;d?e", key=OLD_KEY)
    r = env.get(f"/orders/{token}/items/x%3Dy?q=1")
    assert r.status == 200, r
    assert env.upstream_requests()[-1]["path"] == "/orders/a%2Fb%20c%3Bd%3Fe/items/x%3Dy?q=1"


def test_anything_but_a_valid_token_is_the_404_of_an_undeclared_path(env):
    alice = bearer("alice", shops=["s1", "1002"])
    token = mint("shop", "s1", "alice")
    altered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    undeclared = env.get("/no/such/path", headers=alice)
    assert undeclared.status == 404
    env.recorder.clear()
    for path, headers in [
        ("/shops/s1/revenue", alice),                                   # the raw id
        (f"/shops/{altered}/revenue", alice),                           # one character changed
        (f"/shops/{token}/revenue", bearer("bob", shops=["s1"])),       # another caller's token
        (f"/shops/{mint('shop', 's1')}/revenue", alice),                # a token bound to nobody
        (f"/shops/{mint('order', 's1', 'alice')}/revenue", alice),      # another kind
        (f"/shops/{mint('shop', 's1', 'alice', key=os.urandom(32))}/revenue", alice),  # another key
        (f"/orders/{mint('shop', '1')}/items/1", {}),
        ("/orders/" + "A" * 4000 + "/items/1", {}),
    ]:
        r = env.get(path, headers=headers)
        assert (r.status, r.body) == (undeclared.status, undeclared.body), path
        same = {k: v for k, v in r.headers.items() if k != "date"}
        assert same == {k: v for k, v in undeclared.headers.items() if k != "date"}, path
    assert env.upstream_requests() == []
    stats = env.stats()
    assert stats.get("apiguard.route.revenue.decision.cloak") == 6, stats
    assert stats.get("apiguard.route.order.decision.cloak") == 2
    assert stats.get("apiguard.route.list-shops.cloak.issued", 0) >= 4


def test_bind_and_quota_see_the_real_value(env):
    carol = bearer("carol", shops=["s1"])
    ids = [s["id"] for s in env.get("/shops", headers=carol).json()["shops"]]
    # Her own token for 1002, a shop she does not own: `bind` refuses the real id.
    assert env.get(f"/shops/{ids[1]}/revenue", headers=carol).status == 403
    # Refused tokens consume no quota (3 an hour for carol); the third valid call
    # uses the last of it.
    for _ in range(3):
        assert env.get("/shops/s1/revenue", headers=carol).status == 404
    statuses = [env.get(f"/shops/{ids[0]}/revenue", headers=carol).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses


def test_guessing_tokens_counts_as_scanning_and_is_audited_without_the_token(env):
    guess = {"x-client": "mallory"}
    tokens = [mint("order", str(i), key=os.urandom(32)) for i in range(4)]
    statuses = [env.get(f"/orders/{t}/items/1", headers=guess).status for t in tokens]
    assert statuses == [404, 404, 404, 429], statuses

    def records():
        return [json.loads(line.split(MARK, 1)[1]) for line in env.log().splitlines()
                if MARK in line]
    recs = poll(records, lambda rs: any(r["decision"] == "cloak" for r in rs), 5)
    cloaked = [r for r in recs if r["decision"] == "cloak"]
    assert cloaked and all(r["status"] == 404 and r["path"] in
                           ("/shops/{shop}/revenue", "/orders/{id}/items/{item}") for r in cloaked)
    text = env.log()
    for t in tokens:
        assert t not in text
