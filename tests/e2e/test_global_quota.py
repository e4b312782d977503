"""Global quotas through real components: Redis (Debian's redis-server), the test
rate-limit service (tests/rls/server.py, Envoy's RLS v3 over gRPC, counting in that
Redis), and two Envoys with two workers each sharing one limit."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import cluster, start_envoy, start_redis, start_rls, validate

SALT = {"key_salt": "e2e-global-salt-0123456789"}
GOLD_KEY = "gold-key-0123456789abcdef"
FREE_KEY = "free-key-0123456789abcdef"
SECRET_CALLER = "caller-secret-value-42"


def limit(route, max_value, variables=("caller",), seconds=600, **entries):
    conds = [f"descriptors[0].route == '{route}'"] + [
        f"descriptors[0].{k} == '{v}'" for k, v in entries.items()]
    return {"namespace": "apiguard", "max_value": max_value, "seconds": seconds,
            "conditions": conds, "variables": [f"descriptors[0].{v}" for v in variables]}


LIMITS = [
    limit("orders", 5),
    limit("shared", 3, variables=()),
    limit("tiered", 4, tier="gold"),
    limit("tiered", 2, tier="default"),
    limit("array", 5),
    limit("array2", 1),
    limit("report", 1),
    limit("fail-closed", 1),
    limit("fail-open", 1),
    limit("fail-local", 1),
]


def rls_service(timeout_ms=50):
    return {"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": timeout_ms}


def route(name, quota, **extra):
    return {"name": name, "match": {"path": f"/{name}"}, "quota": quota, **extra}


def gq(limit_, by="header:x-caller", **extra):
    return {"limit": limit_, "window_seconds": 600, "by": by, "scope": "global", **extra}


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


PROVIDERS = {"keys": {"api_key": {
    "from_headers": [{"name": "x-api-key"}],
    "keys": [{"id": "g", "sha256": sha256_hex(GOLD_KEY), "claims": {"sub": "g", "plan": "gold"}},
             {"id": "f", "sha256": sha256_hex(FREE_KEY), "claims": {"sub": "f", "plan": "free"}}]}}}
TIERS = {"claim": "plan", "limits": {"gold": 4}}

CONFIG = {
    "rate_limit_service": rls_service(timeout_ms=1000),
    "providers": PROVIDERS,
    "routes": [
        route("orders", gq(5)),
        route("shared", gq(3, by="route")),
        route("tiered", gq(2, by="claim:sub", tiers=TIERS), auth={"requires": "keys"}),
        route("tiered-local", {"limit": 2, "window_seconds": 600, "by": "claim:sub", "tiers": TIERS},
              auth={"requires": "keys"}),
        # A local limit refuses first: the service never hears of the request.
        route("array", [{"limit": 2, "window_seconds": 600, "by": "header:x-caller"}, gq(5)]),
        # The service refuses: the local count is given back.
        route("array2", [{"limit": 3, "window_seconds": 600, "by": "header:x-caller"},
                         gq(1, by="header:x-team")]),
        route("report", gq(1), mode="report"),
    ],
    "quota_settings": SALT,
}


@pytest.fixture(scope="module")
def redis():
    with start_redis() as r:
        yield r


@pytest.fixture(scope="module")
def rls(redis):
    with start_rls(redis.port, LIMITS) as s:
        yield s


def rls_cluster(port):
    return [cluster("ratelimit", port, http2=True)]


@pytest.fixture(scope="module")
def mesh(rls):
    with start_envoy(CONFIG, concurrency=2, clusters=rls_cluster(rls.port)) as a, \
         start_envoy(CONFIG, concurrency=2, clusters=rls_cluster(rls.port)) as b:
        yield a, b


def caller(name):
    return {"x-caller": name}


def test_two_envoys_admit_exactly_the_limit_between_them(mesh):
    a, b = mesh
    envs = [a, b] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda e: e.get("/orders", headers=caller("alice")), envs))
    statuses = [r.status for r in results]
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 11, statuses
    upstream = [u for e in (a, b) for u in e.upstream_requests() if u["path"] == "/orders"]
    assert len(upstream) == 5
    r = next(r for r in results if r.status == 429)
    assert r.json()["type"].endswith(":quota-exceeded")
    assert r.headers["content-type"] == "application/problem+json"
    # From the service's duration_until_reset (a 600 s fixed window).
    assert 1 <= int(r.headers["retry-after"]) <= 600
    assert r.headers["ratelimit-limit"] == "5"
    ok = [r for r in results if r.status == 200]
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in ok) == [0, 1, 2, 3, 4]
    stat = lambda name: a.stat(name) + b.stat(name)  # noqa: E731
    assert stat("apiguard.route.orders.quota.global_admitted") == 5
    assert stat("apiguard.route.orders.quota.global_limited") == 11
    assert stat("apiguard.route.orders.decision.quota") == 11
    assert stat("apiguard.route.orders.decision.allowed") == 5
    # Other callers are unaffected.
    assert b.get("/orders", headers=caller("bob")).status == 200
    assert a.get("/orders", headers=caller("bob")).status == 200


def test_round_trip_latency_is_a_histogram(mesh):
    a, _ = mesh
    a.get("/orders", headers=caller("histogram"))
    text = a.admin_get("/stats?filter=global_latency_ms")
    assert "apiguard.route.orders.quota.global_latency_ms" in text, text
    prom = a.admin_get("/stats/prometheus")
    assert "apiguard_route_orders_quota_global_latency_ms_bucket" in prom or \
        "global_latency_ms_bucket" in prom


def test_the_caller_leaves_only_as_a_pseudonym(mesh, rls):
    a, _ = mesh
    assert a.get("/orders", headers=caller(SECRET_CALLER)).status == 200
    assert a.get("/shared").status == 200
    log = open(rls.log_path).read()
    assert SECRET_CALLER not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    orders = [d for d in lines if d["entries"].get("route") == "orders"]
    assert orders and all(re.fullmatch(r"[0-9a-f]{16}", d["entries"]["caller"]) for d in orders)
    assert all(set(d["entries"]) == {"route", "caller"} for d in orders)
    assert all(d["domain"] == "apiguard" and d["hits_addend"] == 1 for d in lines)
    shared = [d for d in lines if d["entries"].get("route") == "shared"]
    # `by: route`: no caller entry at all.
    assert shared and all(d["entries"] == {"route": "shared"} for d in shared)


def test_by_route_is_one_count_for_everyone(mesh):
    a, b = mesh
    got = [e.get("/shared", headers=caller(f"c{i}")).status for i, e in enumerate([a, b, a, b])]
    # One admitted by the previous test.
    assert got == [200, 200, 429, 429], got


def test_global_tiers_pick_the_limit_by_a_verified_claim(mesh, rls):
    a, b = mesh
    gold = {"x-api-key": GOLD_KEY}
    free = {"x-api-key": FREE_KEY}
    assert [e.get("/tiered", headers=gold).status for e in [a, b] * 3] == [200] * 4 + [429] * 2
    assert [e.get("/tiered", headers=free).status for e in [a, b] * 2] == [200] * 2 + [429] * 2
    lines = [json.loads(x) for x in open(rls.log_path).read().splitlines() if x.startswith("{")]
    tiers = {d["entries"].get("tier") for d in lines if d["entries"].get("route") == "tiered"}
    # Only listed values leave the proxy; others are `default`.
    assert tiers == {"gold", "default"}


def test_local_tiers_pick_the_limit_by_a_verified_claim(mesh):
    a, _ = mesh
    gold = {"x-api-key": GOLD_KEY}
    free = {"x-api-key": FREE_KEY}
    assert [a.get("/tiered-local", headers=gold).status for _ in range(5)] == [200] * 4 + [429]
    assert [a.get("/tiered-local", headers=free).status for _ in range(3)] == [200] * 2 + [429]


def test_array_local_refusal_never_reaches_the_service(mesh):
    a, _ = mesh
    got = [a.get("/array", headers=caller("carol")).status for _ in range(4)]
    assert got == [200, 200, 429, 429], got
    assert a.stat("apiguard.route.array.quota.global_admitted") == 2
    assert a.stat("apiguard.route.array.quota.limited") == 2


def test_array_global_refusal_consumes_nothing_locally(mesh):
    a, _ = mesh
    h = lambda team: {"x-caller": "dave", "x-team": team}  # noqa: E731
    first = a.get("/array2", headers=h("t1"))
    assert first.status == 200
    # The limit closest to exhaustion: the global one (1 per team, now 0 left).
    assert first.headers["ratelimit-limit"] == "1"
    assert first.headers["ratelimit-remaining"] == "0"
    refused = [a.get("/array2", headers=h("t1")).status for _ in range(3)]
    assert refused == [429] * 3
    # Had the three refusals been counted locally (limit 3), dave would be out.
    assert a.get("/array2", headers=h("t2")).status == 200
    assert a.get("/array2", headers=h("t3")).status == 200
    assert a.get("/array2", headers=h("t4")).status == 429
    assert a.stat("apiguard.route.array2.quota.limited") == 1


def test_report_mode_counts_and_lets_through(mesh):
    a, _ = mesh
    got = [a.get("/report", headers=caller("erin")).status for _ in range(3)]
    assert got == [200, 200, 200]
    assert a.stat("apiguard.route.report.report.quota") == 2
    assert a.stat("apiguard.route.report.quota.global_limited") == 2
    assert len([u for u in a.upstream_requests() if u["path"] == "/report"]) == 3


# -- failure modes ------------------------------------------------------------

FAILURE_CONFIG = {
    "rate_limit_service": rls_service(timeout_ms=50),
    "routes": [
        route("fail-closed", gq(1, failure_mode="closed")),
        route("fail-open", gq(1, failure_mode="open")),
        route("fail-local", gq(2, failure_mode="local")),
    ],
    "quota_settings": SALT,
}


@pytest.fixture()
def lone(redis):
    """A service of its own, to kill or hang, and one Envoy asking it."""
    with start_rls(redis.port, LIMITS) as s, \
         start_envoy(FAILURE_CONFIG, concurrency=2, clusters=rls_cluster(s.port)) as e:
        yield s, e


def check_failure_modes(env, kind, who):
    h = caller(who)
    open_before = env.stat("apiguard.route.fail-open.decision.allowed")
    closed_before = env.stat("apiguard.route.fail-closed.decision.quota_store")
    started = time.monotonic()
    r = env.get("/fail-closed", headers=h)
    elapsed = time.monotonic() - started
    assert r.status == 503, r
    assert r.json()["type"].endswith(":quota-unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert env.get("/fail-open", headers=h).status == 200
    # `local`: this Envoy's shared-data count of the same limit (2).
    got = [env.get("/fail-local", headers=h).status for _ in range(3)]
    assert got == [200, 200, 429], got
    assert env.stat("apiguard.route.fail-local.quota.global_fallback") == 3
    assert env.stat("apiguard.route.fail-closed.decision.quota_store") == closed_before + 1
    assert env.stat("apiguard.route.fail-open.decision.allowed") == open_before + 1
    for r_ in ("fail-closed", "fail-open", "fail-local"):
        assert env.stat(f"apiguard.route.{r_}.quota.global_errors.{kind}") >= 1, env.stats()
    return elapsed


def test_failure_modes_with_the_service_killed(lone):
    service, env = lone
    assert env.get("/fail-open", headers=caller(f"warmup-{time.monotonic()}")).status == 200
    service.kill()
    check_failure_modes(env, "unavailable", "frank")


def test_a_hung_service_costs_at_most_timeout_ms(lone):
    service, env = lone
    assert env.get("/fail-open", headers=caller(f"warmup-{time.monotonic()}")).status == 200
    service.pause()
    try:
        elapsed = check_failure_modes(env, "timeout", "grace")
        # timeout_ms is 50: the request is answered shortly after.
        assert elapsed < 0.5, elapsed
        started = time.monotonic()
        for _ in range(5):
            assert env.get("/fail-closed", headers=caller("heidi")).status == 503
        assert (time.monotonic() - started) / 5 < 0.5
    finally:
        service.resume()


def test_redis_stopped_follows_the_failure_mode():
    with start_redis() as redis, start_rls(redis.port, LIMITS) as s, \
         start_envoy(FAILURE_CONFIG, concurrency=2, clusters=rls_cluster(s.port)) as env:
        # The first calls open connections (Envoy to the service, the service to
        # Redis) and may take longer than timeout_ms on a busy machine.
        warm = [env.get("/fail-closed", headers=caller(f"ivan{i}")).status for i in range(20)]
        assert 200 in warm, warm
        redis.kill()
        check_failure_modes(env, "unavailable", "judy")


# -- configuration ------------------------------------------------------------

@pytest.mark.parametrize("cfg, message", [
    ({"routes": [route("g", gq(5))]},
     "routes[0].quota.scope: `global` needs the top-level `rate_limit_service`"),
    ({"rate_limit_service": {"cluster": "ratelimit"}, "routes": []},
     "rate_limit_service: missing field `domain`"),
    ({"rate_limit_service": {**rls_service(), "timeout_ms": 0}, "routes": []},
     "rate_limit_service.timeout_ms: must be > 0"),
    ({"routes": [route("l", {"limit": 1, "window_seconds": 1, "failure_mode": "local"})]},
     "routes[0].quota.failure_mode: `local` is the fallback of `scope: global`"),
    ({"routes": [route("a", [{"limit": 1, "window_seconds": 1}, {"limit": 0, "window_seconds": 1}])]},
     "routes[0].quota[1].limit: must be > 0"),
    ({"routes": [route("t", {"limit": 1, "window_seconds": 1,
                             "tiers": {"claim": "plan", "limits": {"gold": "x"}}})]},
     "routes[0].quota.tiers.limits.gold: expected a whole number"),
])
def test_bad_configuration_is_refused_naming_the_field(cfg, message):
    code, out = validate(cfg)
    assert code != 0
    assert message in out, out


# -- the example files --------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_global_quota_example_validates():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "validate.py"),
                        "--envoy", os.environ.get("ENVOY", os.path.join(ROOT, ".venv", "bin", "envoy")),
                        "--wasm", os.environ.get("WASM", os.path.join(ROOT, "build", "api_guard.wasm")),
                        os.path.join(ROOT, "envoy", "global-quota.yaml")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_limitador_limits_file_is_read_by_the_test_service():
    sys.path.insert(0, os.path.join(ROOT, "tests", "rls"))
    import limits_file  # noqa: E402
    (lim,) = limits_file.load_limits(os.path.join(ROOT, "envoy", "limitador-limits.yaml"))
    assert (lim["namespace"], lim["max_value"], lim["seconds"]) == ("apiguard", 5, 60)
    assert lim["conditions"] == [("route", "==", "get-order")]
    assert lim["variables"] == ["caller"]


def test_a_cluster_envoy_does_not_know_follows_the_failure_mode():
    cfg = dict(FAILURE_CONFIG, rate_limit_service={"cluster": "no-such-cluster", "domain": "apiguard"})
    with start_envoy(cfg, concurrency=1) as env:
        for _ in range(2):  # the VM survives the first
            assert env.get("/fail-closed", headers=caller("kim")).status == 503
            assert env.get("/fail-open", headers=caller("kim")).status == 200
        assert [env.get("/fail-local", headers=caller("kim")).status for _ in range(3)] == [200, 200, 429]
        stats = env.stats()
        errors = {k: v for k, v in stats.items() if ".quota.global_errors." in k}
        assert errors and all(k.startswith("apiguard.route.fail-") for k in errors), errors


# -- bodies while the request waits for the service ---------------------------

BODY_LIMITS = [limit("body-checked", 2), limit("body-passed", 2)]
SCHEMA = {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}


@pytest.mark.parametrize("hold_headers", [True, False])
def test_bodies_wait_for_the_answer_then_are_checked_or_passed(redis, hold_headers):
    cfg = {
        "rate_limit_service": rls_service(timeout_ms=1000),
        "routes": [
            route("body-checked", gq(2), request={"schema": SCHEMA}),
            route("body-passed", gq(2)),
        ],
        "quota_settings": SALT,
    }
    who = f"body-{hold_headers}"
    with start_rls(redis.port, BODY_LIMITS) as s, \
         start_envoy(cfg, concurrency=2, clusters=rls_cluster(s.port), hold_headers=hold_headers) as env:
        h = dict(caller(who), **{"content-type": "application/json"})
        good, bad = b'{"sku": "a-1"}', b'{"qty": 1}'
        assert env.request("POST", "/body-checked", headers=h, body=bad).status == 400
        assert env.request("POST", "/body-checked", headers=h, body=good).status == 200
        # The two above were counted by the service: the limit is reached.
        assert env.request("POST", "/body-checked", headers=h, body=good).status == 429
        big = b'{"data": "' + b"x" * 200_000 + b'"}'
        assert env.request("POST", "/body-passed", headers=h, body=big).status == 200
        seen = [u for u in env.upstream_requests(incomplete=True) if u["path"].startswith("/body-")]
        assert [u["body"] for u in seen] == [good, big], [len(u["body"]) for u in seen]
