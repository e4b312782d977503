"""Automated blocking through a real Envoy with two workers.

Every request of the suite comes from 127.0.0.1, so most rules here count by a
header (`x-client`) to keep the callers of different tests apart; one Envoy of its
own checks `by: ip`. Blocks are short (a few seconds) so expiry is tested too.
"""
import base64
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from harness import poll, start_envoy, validate

ISS = "https://idp.block.test/"
SECRET = os.urandom(32)
SALT = {"key_salt": "e2e-blocking-salt-0123456789"}
AUDIT = {"records": "rejections", "pseudonym_key": "e2e-blocking-pseudonym-key"}
MARK = "api-guard audit: "


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub):
    now = int(time.time())
    return jwt.encode({"iss": ISS, "sub": sub, "iat": now, "exp": now + 600}, SECRET,
                      algorithm="HS256", headers={"kid": "k1"})


def bearer(sub):
    return {"authorization": f"Bearer {token(sub)}"}


def client(name):
    return {"x-client": name}


def rule(name, count, **kw):
    return {"name": name, "count": count, "by": "header:x-client", "max": 3,
            "window_seconds": 60, "block_seconds": 3, **kw}


CONFIG = {
    "quota_settings": SALT,
    "audit": AUDIT,
    "providers": {"idp": {"issuer": ISS, "jwks": {"inline": {"keys": [
        {"kty": "oct", "k": b64u(SECRET), "alg": "HS256", "kid": "k1"}]}}}},
    "routes": [
        {"name": "private", "match": {"path": "/private"}, "auth": {"requires": "idp"}},
        {"name": "orders", "match": {"path": "/orders/{id}", "methods": ["GET"]},
         "auth": {"requires": "idp"}},
        {"name": "login", "match": {"path": "/login", "methods": ["POST"]}},
        {"name": "public", "match": {"path": "/public"}},
    ],
    "blocking": {"rules": [
        rule("guessing", "auth_failures"),
        rule("scanning", "not_found"),
        rule("walking", "distinct_param", param="id", routes=["orders"], by="claim:sub"),
        rule("stuffing", "status", statuses=[401], routes=["login"]),
        rule("watching", "not_found", by="header:x-watched", mode="report"),
    ]},
}


def login(handler, req):
    ok = req["body"] == b"right"
    return (200 if ok else 401), {"content-type": "application/json"}, b"{}"


@pytest.fixture(scope="module")
def env():
    with start_envoy(CONFIG, concurrency=2, responders={"/login": login}) as e:
        yield e


def blocked(r):
    assert r.status == 429, r
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(":blocked"), r.json()
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 3, r.headers
    return retry


def records(env, rule_name):
    return [json.loads(ln.split(MARK, 1)[1]) for ln in env.log().splitlines()
            if MARK in ln and f'"rule":"{rule_name}"' in ln]


def test_auth_failures_block_on_every_route_then_expire(env):
    me = client("guesser")
    for _ in range(3):
        assert env.get("/private", headers={**me, "authorization": "Bearer nope"}).status == 401
    # The fourth failure passes `max`: refused as blocked at once.
    blocked(env.get("/private", headers={**me, "authorization": "Bearer nope"}))
    # A valid token and a public route do not help.
    blocked(env.get("/private", headers={**me, **bearer("alice")}))
    blocked(env.get("/public", headers=me))
    blocked(env.get("/nowhere", headers=me))
    # Another caller is untouched.
    assert env.get("/public", headers=client("bystander")).status == 200
    assert env.get("/private", headers={**client("bystander"), **bearer("bob")}).status == 200
    stats = env.stats()
    assert stats.get("apiguard.blocking.guessing.events") == 4
    assert stats.get("apiguard.blocking.guessing.started") == 1
    assert stats.get("apiguard.blocking.guessing.blocked") == 3
    assert stats.get("apiguard.route.public.decision.blocked") == 1
    # One record for the block, however many requests it refused.
    recs = poll(lambda: records(env, "guessing"), lambda rs: len(rs) >= 1, 5)
    assert len(recs) == 1, recs
    assert (recs[0]["decision"], recs[0]["status"], recs[0]["enforced"]) == ("blocked", 429, True)
    assert recs[0]["route"] == "private"
    # The block ends by itself.
    time.sleep(3.2)
    assert env.get("/private", headers={**me, **bearer("alice")}).status == 200


def test_scanning_undeclared_paths(env):
    me = client("scanner")
    for i in range(3):
        assert env.get(f"/admin{i}", headers=me).status == 404
    blocked(env.get("/admin-again", headers=me))
    blocked(env.get("/public", headers=me))
    assert env.get("/nope", headers=client("lost-user")).status == 404
    assert env.stat("apiguard.blocking.scanning.started") == 1


def test_walking_object_ids_counts_distinct_ids_only(env):
    alice = bearer("walker-alice")
    for i in (1, 2, 3):
        assert env.get(f"/orders/{i}", headers=alice).status == 200
    # Repeating ids is not walking.
    for _ in range(5):
        for i in (1, 2, 3):
            assert env.get(f"/orders/{i}", headers=alice).status == 200
    before = len(env.upstream_requests())
    blocked(env.get("/orders/4", headers=alice))
    assert len(env.upstream_requests()) == before, "the id that passed max reached the upstream"
    blocked(env.get("/orders/1", headers=alice))
    blocked(env.get("/private", headers=alice))
    # Keyed by the token's subject: another subject, same address, is fine.
    assert env.get("/orders/4", headers=bearer("walker-bob")).status == 200
    stats = env.stats()
    assert stats.get("apiguard.blocking.walking.events") == 5  # alice 4, bob 1
    assert stats.get("apiguard.blocking.walking.started") == 1
    rec = poll(lambda: records(env, "walking"), lambda rs: len(rs) >= 1, 5)[0]
    assert rec["caller_kind"] == "sub" and "walker-alice" not in json.dumps(rec)


def test_under_concurrency_exactly_max_events_pass(env):
    """16 parallel requests of one caller on two workers: exactly `max` events get
    through, every other request is refused as blocked."""
    carol = bearer("walker-carol")
    with ThreadPoolExecutor(max_workers=16) as pool:
        walks = list(pool.map(lambda i: env.get(f"/orders/{100 + i}", headers=carol), range(16)))
    assert sorted(r.status for r in walks) == [200] * 3 + [429] * 13, [r.status for r in walks]
    me = {**client("racer"), "authorization": "Bearer nope"}
    with ThreadPoolExecutor(max_workers=16) as pool:
        guesses = list(pool.map(lambda _: env.get("/private", headers=me), range(16)))
    assert sorted(r.status for r in guesses) == [401] * 3 + [429] * 13, [r.status for r in guesses]


def test_credential_stuffing_counts_upstream_statuses(env):
    me = client("stuffer")
    for _ in range(4):
        # The upstream's own 401s pass; the fourth starts the block.
        r = env.request("POST", "/login", headers=me, body=b"wrong")
        assert r.status == 401 and r.headers.get("content-type") == "application/json"
    blocked(env.request("POST", "/login", headers=me, body=b"right"))
    assert env.request("POST", "/login", headers=client("honest"), body=b"right").status == 200
    assert env.request("POST", "/login", headers=client("honest"), body=b"wrong").status == 401
    assert env.stat("apiguard.blocking.stuffing.started") == 1


def test_report_rules_only_count_and_log(env):
    me = {"x-watched": "someone"}
    for i in range(6):
        assert env.get(f"/probe{i}", headers=me).status == 404
    assert env.get("/public", headers=me).status == 200
    stats = env.stats()
    assert stats.get("apiguard.blocking.watching.report.started") == 1
    assert stats.get("apiguard.blocking.watching.report.blocked", 0) >= 1
    assert "apiguard.blocking.watching.started" not in stats
    recs = poll(lambda: records(env, "watching"), lambda rs: len(rs) >= 1, 5)
    assert len(recs) == 1 and recs[0]["enforced"] is False, recs


def test_by_ip_blocks_the_address():
    cfg = {"quota_settings": SALT,
           "routes": [{"name": "public", "match": {"path": "/public"}}],
           "blocking": {"rules": [{"name": "scan", "count": "not_found", "max": 2,
                                   "window_seconds": 60, "block_seconds": 2}]}}
    with start_envoy(cfg, concurrency=2) as env:
        assert env.get("/public").status == 200
        assert [env.get(f"/x{i}").status for i in range(2)] == [404, 404]
        blocked(env.get("/x3"))
        blocked(env.get("/public"))
        # Without an audit log the block is still logged once, without the caller.
        line = poll(env.log, lambda t: "blocking rule scan blocks a caller for 2 s" in t, 5)
        assert line.count("blocking rule scan blocks") == 1
        assert "127.0.0.1" not in "".join(ln for ln in line.splitlines() if "blocking rule" in ln)
        time.sleep(2.2)
        assert env.get("/public").status == 200


@pytest.mark.parametrize("rules, field, words", [
    ([{"name": "a", "count": "not_found", "max": 0, "window_seconds": 1, "block_seconds": 1}],
     "blocking.rules[0].max", "must be > 0"),
    ([{"name": "a", "count": "status", "statuses": [401], "routes": ["nope"], "max": 1,
       "window_seconds": 1, "block_seconds": 1}],
     "blocking.rules[0].routes[0]", "no route is named"),
    ([{"name": "a", "count": "distinct_param", "param": "sku", "routes": ["orders"], "max": 1,
       "window_seconds": 1, "block_seconds": 1}],
     "blocking.rules[0].param", "is not a parameter of route"),
])
def test_configuration_errors_name_the_field(rules, field, words):
    cfg = {"quota_settings": SALT,
           "routes": [{"name": "orders", "match": {"path": "/orders/{id}"}}],
           "blocking": {"rules": rules}}
    code, out = validate(cfg)
    assert code != 0
    assert f"{field}: " in out and words in out, out
