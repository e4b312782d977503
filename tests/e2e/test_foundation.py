"""Routes, rejections, security headers, metrics and config loading, through Envoy."""
import json
import os
import subprocess

import pytest

from harness import ENVOY, ROOT, start_envoy, validate

ROUTES = {
    "routes": [
        {"name": "get-order", "match": {"path": "/shops/{shop}/orders/{id}", "methods": ["GET"]}},
        {"name": "del-order", "match": {"path": "/shops/{shop}/orders/{id}", "methods": ["DELETE"]}},
        {"name": "files", "match": {"path": "/files/{rest...}"}},
        {"name": "health", "match": {"path": "/healthz"}},
    ],
    "security_headers": {"hsts_max_age_seconds": 600},
}


@pytest.fixture(scope="module")
def env():
    with start_envoy(ROUTES) as e:
        yield e


def problem(r, status):
    assert r.status == status, r
    assert r.headers["content-type"] == "application/problem+json", r
    doc = r.json()
    assert doc["status"] == status
    for k in ("type", "title", "detail"):
        assert isinstance(doc[k], str) and doc[k], doc
    return doc


def test_matched_route_reaches_upstream_with_security_headers(env):
    r = env.get("/healthz")
    assert r.status == 200, r
    assert env.upstream_requests()[-1]["path"] == "/healthz"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["strict-transport-security"] == "max-age=600"
    # The demo upstream sends X-Powered-By; Envoy's own `server` is off (PASS_THROUGH).
    assert "x-powered-by" not in r.headers
    assert "server" not in r.headers


def test_unmatched_is_404_problem_and_upstream_sees_nothing(env):
    env.recorder.clear()
    doc = problem(env.get("/admin/users"), 404)
    assert doc["type"].endswith(":not-found")
    assert env.upstream_requests() == []


def test_wrong_method_is_405_with_union_of_methods(env):
    env.recorder.clear()
    r = env.request("PUT", "/shops/s1/orders/7")
    problem(r, 405)
    assert r.headers["allow"] == "GET, DELETE"
    assert env.upstream_requests() == []
    assert env.request("DELETE", "/shops/s1/orders/7").status == 200


def test_query_string_is_ignored_for_matching(env):
    assert env.get("/shops/s1/orders/7?expand=items&x=/../../admin").status == 200
    assert env.upstream_requests()[-1]["path"] == "/shops/s1/orders/7?expand=items&x=/../../admin"


@pytest.mark.parametrize("raw", [
    "/healthz/../shops/s1/orders/7",
    "/healthz/%2e%2e/shops/s1/orders/7",
    "/healthz/%2E%2E/shops/s1/orders/7",
    "//shops//s1/./orders/7",
    "/%73hops/s1/orders/7",
])
def test_dot_segments_and_encodings_cannot_dodge_a_route(env, raw):
    # Each of these is /shops/s1/orders/7 after normalisation: the GET-only route
    # applies (405 for PUT), and the upstream receives the normalised path.
    r = env.request("PUT", raw)
    assert r.status == 405, (raw, r)
    r = env.get(raw)
    assert r.status == 200, (raw, r)
    assert env.upstream_requests()[-1]["path"] == "/shops/s1/orders/7"


@pytest.mark.parametrize("raw", ["/files/a%2f..%2f..%2fadmin", "/files/%5c..%5cadmin", "/files/%00", "/files/%zz", "/files/%ff"])
def test_smuggling_encodings_are_400(env, raw):
    env.recorder.clear()
    doc = problem(env.get(raw), 400)
    assert doc["type"].endswith(":bad-path")
    assert env.upstream_requests() == []


def test_rest_parameter_route(env):
    assert env.get("/files/a/b/c.txt").status == 200
    problem(env.get("/files"), 404)


def test_unknown_method_and_hostile_headers_do_not_break_the_vm(env):
    # Envoy's HTTP/1 codec refuses methods it does not know before any filter runs.
    assert env.request("BREW", "/healthz").status == 400
    # Known but unusual methods reach the filter: any-method routes take them.
    assert env.request("PROPFIND", "/healthz").status == 200
    problem(env.request("PROPFIND", "/shops/s1/orders/1"), 405)
    # obs-text bytes in a header value: the SDK's String helpers would panic here.
    r = env.request("GET", "/healthz", headers={"x-junk": b"\xff\xfe\x80", "content-type": b"\xc3\x28"})
    assert r.status == 200, r
    r = env.request("GET", "/healthz", headers={"x-big": "a" * 50_000})
    assert r.status == 200, r
    r = env.request("GET", "/healthz", headers={"x-huge": "a" * 200_000})
    assert r.status == 431, r  # Envoy's own header limit
    assert env.get("/healthz").status == 200
    assert env.alive()


def test_metrics_count_each_decision(env):
    before = env.stats()
    env.get("/healthz")
    env.get("/nowhere")
    env.request("PATCH", "/shops/s/orders/1")
    after = env.stats()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta("apiguard.route.health.decision.allowed") == 1
    assert delta("apiguard.unmatched.not_found") == 1
    assert delta("apiguard.route.get-order.decision.method") == 1


def test_unmatched_allow_passes_untouched_and_logs_the_pattern():
    cfg = {"routes": [{"name": "health", "match": {"path": "/healthz"}}], "unmatched": "allow"}
    with start_envoy(cfg) as e:
        r = e.get("/internal/users/12345/keys?token=secret123")
        assert r.status == 200
        assert e.upstream_requests()[-1]["path"] == "/internal/users/12345/keys?token=secret123"
        assert e.stat("apiguard.unmatched.allowed") == 1
        log = e.log()
        assert "undeclared endpoint GET /internal/users/{id}/keys" in log
        assert "12345" not in log and "secret123" not in log


def test_yaml_struct_configuration_is_accepted():
    with start_envoy(ROUTES, as_struct=True) as e:
        assert e.get("/healthz").status == 200
        assert e.request("PUT", "/shops/a/orders/1").status == 405


# -- configuration errors: Envoy refuses the plugin and the log names the field ----

BAD_CONFIGS = [
    ({"routes": [{"name": "a", "match": {"path": "/a", "methodz": ["GET"]}}]},
     "routes[0].match.methodz: unknown field `methodz`"),
    ({"routes": [{"name": "a", "match": {"path": "/a"}}, {"name": "b", "match": {"path": "b"}}]},
     "routes[1].match.path: template \"b\" must start with '/'"),
    ({"routes": [{"name": "a", "match": {"path": "/a", "methods": ["get"]}}]},
     "routes[0].match.methods[0]: \"get\" is not an upper-case HTTP method name"),
    ({"routes": [{"name": "a", "match": {"path": "/a/{id}/{id}"}}]},
     "routes[0].match.path: parameter {id} appears twice"),
    ({"routes": [], "unmatched": "sometimes"},
     "unmatched: unknown variant `sometimes`"),
    ({"routes": [], "signature_backend": "boringssl"},
     "signature_backend: unknown variant `boringssl`, expected one of `auto`, `module`, `host`"),
    ("not json at all", "invalid plugin configuration"),
]


@pytest.mark.parametrize("cfg,message", BAD_CONFIGS)
def test_validate_refuses_bad_config_naming_the_field(cfg, message):
    rc, out = validate(cfg)
    assert rc != 0, out[-2000:]
    assert message in out, out[-3000:]


def test_validate_accepts_good_config_in_both_forms():
    for as_struct in (False, True):
        rc, out = validate(ROUTES, as_struct=as_struct)
        assert rc == 0, out[-3000:]
        assert "configuration loaded" in out


def test_demo_envoy_yaml_validates():
    r = subprocess.run([ENVOY, "--mode", "validate", "-c", "envoy/envoy.yaml", "-l", "info",
                        "--component-log-level", "wasm:info"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ})
    out = r.stdout + r.stderr
    assert os.path.exists(os.path.join(ROOT, "build", "api_guard.wasm")), "run `make build`"
    assert r.returncode == 0, out[-3000:]
    assert "configuration loaded" in out
