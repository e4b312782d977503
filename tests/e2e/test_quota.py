"""Quotas through a real Envoy: exact under concurrency, recovering, per key."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import start_envoy

SALT = {"key_salt": "e2e-test-salt-0123456789"}


def route(name, path, quota):
    return {"name": name, "match": {"path": path}, "quota": quota}


@pytest.fixture(scope="module")
def env():
    cfg = {
        "routes": [
            # A long window, so nothing refills during the burst.
            route("burst", "/burst", {"limit": 10, "window_seconds": 600, "by": "route"}),
            route("recover", "/recover", {"limit": 2, "window_seconds": 2, "by": "route"}),
            route("per-key", "/per-key", {"limit": 2, "window_seconds": 600, "by": "header:x-api-key"}),
            route("quiet", "/quiet", {"limit": 5, "window_seconds": 600, "headers_on_success": False}),
        ],
        "quota_settings": SALT,
    }
    # Two workers: the count must be shared through proxy-wasm shared data.
    with start_envoy(cfg, concurrency=2) as e:
        yield e


def test_exactly_limit_admitted_under_two_workers_and_16_clients(env):
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: env.get("/burst"), range(48)))
    ok = [r for r in results if r.status == 200]
    limited = [r for r in results if r.status == 429]
    assert len(ok) == 10, [r.status for r in results]
    assert len(limited) == 38
    assert len([u for u in env.upstream_requests() if u["path"] == "/burst"]) == 10
    r = limited[0]
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == 429 and doc["type"].endswith(":quota-exceeded")
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 60, r.headers  # one request comes back every 600/10 = 60 s
    assert r.headers["ratelimit-limit"] == "10"
    assert r.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(r.headers["ratelimit-reset"]) <= 600
    # Admitted responses carry the RateLimit headers too.
    remaining = sorted(int(r.headers["ratelimit-remaining"]) for r in ok)
    assert remaining == list(range(10)), remaining
    assert all(r.headers["ratelimit-limit"] == "10" for r in ok)
    assert env.stat("apiguard.route.burst.quota.admitted") == 10
    assert env.stat("apiguard.route.burst.quota.limited") == 38
    assert env.stat("apiguard.route.burst.decision.quota") == 38


def test_waiting_brings_capacity_back(env):
    assert env.get("/recover").status == 200
    assert env.get("/recover").status == 200
    r = env.get("/recover")
    assert r.status == 429
    wait = int(r.headers["retry-after"])
    assert wait == 1, r.headers  # one request per second comes back
    time.sleep(1.1)
    assert env.get("/recover").status == 200
    assert env.get("/recover").status == 429


def test_keys_are_counted_separately(env):
    a = {"x-api-key": "key-a"}
    b = {"x-api-key": "key-b"}
    assert [env.get("/per-key", headers=a).status for _ in range(3)] == [200, 200, 429]
    assert [env.get("/per-key", headers=b).status for _ in range(3)] == [200, 200, 429]
    # No header: one shared anonymous bucket, separate from key-a and key-b.
    assert [env.get("/per-key").status for _ in range(3)] == [200, 200, 429]


def test_ratelimit_headers_on_success_can_be_turned_off(env):
    r = env.get("/quiet")
    assert r.status == 200
    assert "ratelimit-limit" not in r.headers


def _ip_config(hops):
    cfg = {"routes": [route("by-ip", "/ip", {"limit": 2, "window_seconds": 600, "by": "ip"})],
           "quota_settings": SALT}
    if hops:
        cfg["client_ip"] = {"xff_trusted_hops": hops}
    return cfg


def test_rotating_x_forwarded_for_does_not_help_when_not_trusted():
    # At the edge Envoy uses the TCP peer (use_remote_address) and the filter
    # ignores X-Forwarded-For by default: fake addresses share the peer's bucket.
    with start_envoy(_ip_config(0), hcm={"use_remote_address": True}) as e:
        statuses = [e.get("/ip", headers={"x-forwarded-for": f"10.0.0.{i}"}).status for i in range(4)]
        assert statuses == [200, 200, 429, 429]


def test_trusted_hops_use_the_address_the_trusted_proxy_saw():
    # Envoy appends the peer (127.0.0.1); with 2 trusted hops the entry to its
    # left -- what the trusted proxy in front of Envoy saw -- is the client.
    with start_envoy(_ip_config(2), hcm={"use_remote_address": True}) as e:
        one = {"x-forwarded-for": "203.0.113.1"}
        two = {"x-forwarded-for": "203.0.113.2"}
        assert [e.get("/ip", headers=one).status for _ in range(3)] == [200, 200, 429]
        assert [e.get("/ip", headers=two).status for _ in range(3)] == [200, 200, 429]
        # A client prepending fake entries does not escape: only the trusted
        # position counts.
        spoof = {"x-forwarded-for": "198.51.100.9, 203.0.113.1"}
        assert e.get("/ip", headers=spoof).status == 429


def test_claim_quota_counts_the_verified_caller_after_authentication():
    import base64

    import jwt  # PyJWT

    secret = b"quota-e2e-hmac-secret-of-32-bytes!"
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    cfg = {
        "providers": {"idp": {"issuer": "https://idp.test/",
                              "jwks": {"inline": {"keys": [{"kty": "oct", "alg": "HS256", "kid": "h", "k": k}]}}}},
        "routes": [{"name": "me", "match": {"path": "/me"}, "auth": {"requires": "idp"},
                    "quota": {"limit": 2, "window_seconds": 600, "by": "claim:sub"}}],
        "quota_settings": SALT,
    }

    def bearer(sub):
        now = int(time.time())
        tok = jwt.encode({"iss": "https://idp.test/", "sub": sub, "iat": now, "exp": now + 300},
                         secret, algorithm="HS256", headers={"kid": "h"})
        return {"authorization": f"Bearer {tok}"}

    with start_envoy(cfg) as e:
        # Rejected before the quota (no token, bad token): nothing is consumed.
        for _ in range(5):
            assert e.get("/me").status == 401
            assert e.get("/me", headers={"authorization": "Bearer x.y.z"}).status == 401
        assert e.stat("apiguard.route.me.quota.admitted") == 0
        alice, bob = bearer("alice"), bearer("bob")
        assert [e.get("/me", headers=alice).status for _ in range(3)] == [200, 200, 429]
        # A fresh token for the same subject shares the count; another subject does not.
        assert e.get("/me", headers=bearer("alice")).status == 429
        assert [e.get("/me", headers=bob).status for _ in range(3)] == [200, 200, 429]
