"""Report-only mode and the audit log through a real Envoy.

Every route here exists twice where it matters: under `mode: report` the request
or response must reach its destination unchanged while the refusal is counted as
`report.<reason>` and recorded with `enforced: false`; under `enforce` the same
request is refused. The last test reads every audit line the run produced and
looks for anything a record must never hold.
"""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import pytest

from harness import poll, start_envoy, validate

KEY = "e2e-audit-pseudonym-key-0123"
ISS = "https://idp.audit.test/"
SECRET = os.urandom(32)
KID = "k1"
MARK = "api-guard audit: "


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub="alice", shop="s1", **extra):
    now = int(time.time())
    claims = {"iss": ISS, "sub": sub, "shop_id": shop, "iat": now, "exp": now + 600, **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": KID})


def bearer(t):
    return {"authorization": f"Bearer {t}"}


def pseudonym(value):
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


ORDER_SCHEMA = {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}},
                "additionalProperties": False}
USER = {"id": "u1", "email": "ada@example.com", "ssn": "078-05-1120"}
JSON = {"content-type": "application/json"}


def auth_route(name, path, mode=None):
    r = {"name": name, "match": {"path": path},
         "auth": {"requires": "idp", "bind": {"shop": "shop_id"}}}
    if mode:
        r["mode"] = mode
    return r


CONFIG = {
    "audit": {"records": "all", "pseudonym_key": KEY},
    "unmatched": "deny",
    "providers": {"idp": {
        "issuer": ISS,
        "jwks": {"inline": {"keys": [{"kty": "oct", "k": b64u(SECRET), "alg": "HS256", "kid": KID}]}},
        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}],
    }},
    "routes": [
        auth_route("shop-enforce", "/enforce/shops/{shop}"),
        auth_route("shop-report", "/report/shops/{shop}", mode="report"),
        {"name": "quota-report", "mode": "report", "match": {"path": "/report/quota"},
         "quota": {"limit": 2, "window_seconds": 600, "by": "route"}},
        {"name": "quota-enforce", "match": {"path": "/enforce/quota"},
         "quota": {"limit": 2, "window_seconds": 600, "by": "route"}},
        {"name": "body-report", "mode": "report", "match": {"path": "/report/orders"},
         "request": {"schema": ORDER_SCHEMA, "max_body_bytes": 256}},
        {"name": "body-enforce", "match": {"path": "/enforce/orders"},
         "request": {"schema": ORDER_SCHEMA, "max_body_bytes": 256}},
        {"name": "mask-report", "mode": "report", "match": {"path": "/report/users/{id}"},
         "response": {"mask": [{"path": "$.ssn", "action": "remove"}]}},
        {"name": "mask-enforce", "match": {"path": "/enforce/users/{id}"},
         "response": {"mask": [{"path": "$.ssn", "action": "remove"}]}},
        {"name": "block-report", "mode": "report", "match": {"path": "/report/leak"},
         "response": {"detect": {"builtin": ["email"], "action": "block"}}},
        {"name": "block-enforce", "match": {"path": "/enforce/leak"},
         "response": {"detect": {"builtin": ["email"], "action": "block"}}},
        {"name": "open", "match": {"path": "/open", "methods": ["GET"]}},
    ],
}


def responders():
    user = lambda h, r: (200, JSON, json.dumps(USER).encode())  # noqa: E731
    return {"/report/users/": user, "/enforce/users/": user,
            "/report/leak": user, "/enforce/leak": user}


def access_log_hcm(path):
    # The record is in the stream's filter state as `wasm.api_guard_audit`.
    fmt = "access %RESPONSE_CODE% %FILTER_STATE(wasm.api_guard_audit:PLAIN)%\n"
    return {"access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path, "log_format": {"text_format_source": {"inline_string": fmt}}}}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    access = str(tmp_path_factory.mktemp("audit") / "access.log")
    with start_envoy(CONFIG, responders=responders(), hcm=access_log_hcm(access),
                     envoy_args=("--file-flush-interval-msec", "100")) as e:
        e.access_log = access
        yield e


def records(env):
    out = []
    for line in env.log().splitlines():
        if MARK in line:
            out.append(json.loads(line.split(MARK, 1)[1]))
    return out


def record_for(env, request_id):
    """The one record of the request sent with `x-request-id: request_id`."""
    found = poll(lambda: [r for r in records(env) if r.get("request_id") == request_id],
                 lambda rs: len(rs) >= 1, timeout=5)
    assert len(found) == 1, found
    return found[0]


def rid():
    return "t-" + b64u(os.urandom(9)).replace("_", "-")


def sent(env, path):
    return [u for u in env.upstream_requests() if u["path"] == path]


# -- report mode, one protection at a time ----------------------------------------

def test_authentication_failures_pass_under_report_and_are_refused_under_enforce(env):
    for headers, reason, status in [({}, "missing", 401),
                                    (bearer("not.a.token"), "malformed", 401),
                                    (bearer(token(shop="s2")), "bind", 403)]:
        i = rid()
        r = env.get("/report/shops/s1", headers={**headers, "x-request-id": i})
        assert r.status == 200, r
        assert sent(env, "/report/shops/s1"), "the upstream never saw the request"
        rec = record_for(env, i)
        assert (rec["decision"], rec["status"], rec["enforced"]) == (reason, status, False), rec
        assert (rec["route"], rec["path"], rec["method"]) == ("shop-report", "/report/shops/{shop}", "GET")
        i = rid()
        r = env.get("/enforce/shops/s1", headers={**headers, "x-request-id": i})
        assert r.status == status, r
        assert r.headers["content-type"] == "application/problem+json"
        rec = record_for(env, i)
        assert (rec["decision"], rec["status"], rec["enforced"]) == (reason, status, True), rec
    stats = env.stats()
    for reason in ("missing", "malformed", "bind"):
        assert stats.get(f"apiguard.route.shop-report.report.{reason}") == 1, reason
        assert stats.get(f"apiguard.route.shop-enforce.decision.{reason}") == 1, reason
        assert f"apiguard.route.shop-enforce.report.{reason}" not in stats
    # Reported requests went through: the route's decision counter says so.
    assert stats.get("apiguard.route.shop-report.decision.allowed") == 3
    assert not [u for u in env.upstream_requests() if u["path"] == "/enforce/shops/s1"]


def test_filter_set_headers_are_stripped_under_report_too(env):
    before = len(sent(env, "/report/shops/s1"))
    # No token: the refusal is only reported, yet a forged identity never passes.
    r = env.get("/report/shops/s1", headers={"x-user-id": "admin", "X_User-Id": "admin"})
    assert r.status == 200
    up = sent(env, "/report/shops/s1")[before:]
    assert len(up) == 1
    assert not any(h.replace("_", "-").lower() == "x-user-id" for h in up[0]["headers"]), up[0]
    # A valid token: the upstream gets the verified value, as under enforce.
    r = env.get("/report/shops/s1", headers=bearer(token(sub="carol")))
    assert r.status == 200
    assert sent(env, "/report/shops/s1")[-1]["headers"]["x-user-id"] == "carol"


def test_a_reported_quota_refusal_consumes_nothing_and_sends_no_quota_headers(env):
    statuses = [env.get("/report/quota").status for _ in range(5)]
    assert statuses == [200] * 5
    assert len(sent(env, "/report/quota")) == 5
    stats = env.stats()
    assert stats.get("apiguard.route.quota-report.quota.admitted") == 2
    assert stats.get("apiguard.route.quota-report.quota.limited") == 3
    assert stats.get("apiguard.route.quota-report.report.quota") == 3
    # Under report the client sees the upstream's answer only.
    assert "ratelimit-limit" not in env.get("/report/quota").headers
    # The same quota under enforce refuses.
    assert [env.get("/enforce/quota").status for _ in range(3)] == [200, 200, 429]
    assert env.get("/enforce/quota").headers["retry-after"]


@pytest.mark.parametrize("body, headers, reason, status", [
    (b'{"sku": 1}', JSON, "schema", 400),
    (b'{"sku": "a", "extra": true}', JSON, "schema", 400),
    (b"not json", JSON, "not_json", 400),
    (b'{"sku": "a"}', {"content-type": "text/plain"}, "content_type", 415),
    (b'{"sku": "' + b"x" * 400 + b'"}', JSON, "too_large", 413),
])
def test_invalid_bodies_reach_the_upstream_unchanged_under_report(env, body, headers, reason, status):
    i = rid()
    r = env.request("POST", "/report/orders", headers={**headers, "x-request-id": i}, body=body)
    assert r.status == 200, r
    assert sent(env, "/report/orders")[-1]["body"] == body
    rec = record_for(env, i)
    assert (rec["decision"], rec["status"], rec["enforced"]) == (reason, status, False), rec
    r = env.request("POST", "/enforce/orders", headers=headers, body=body)
    assert r.status == status, r


def test_valid_body_under_report_is_allowed(env):
    i = rid()
    r = env.request("POST", "/report/orders", headers={**JSON, "x-request-id": i}, body=b'{"sku": "a"}')
    assert r.status == 200
    rec = record_for(env, i)
    assert (rec["decision"], rec["status"], rec["enforced"]) == ("allowed", 200, True), rec


def test_responses_pass_unmasked_under_report(env):
    i = rid()
    r = env.get("/report/users/u1", headers={"x-request-id": i})
    assert r.status == 200
    assert r.json() == USER, "report mode changed the response"
    assert r.headers.get("content-length") == str(len(json.dumps(USER)))
    rec = record_for(env, i)
    assert (rec["decision"], rec["status"], rec["enforced"]) == ("allowed", 200, True), rec
    assert env.get("/enforce/users/u1").json() == {k: v for k, v in USER.items() if k != "ssn"}
    stats = env.stats()
    assert stats.get("apiguard.route.mask-report.report.masked") >= 1
    assert "apiguard.route.mask-report.response.masked" not in stats
    assert stats.get("apiguard.route.mask-enforce.response.masked") >= 1


def test_withheld_responses_pass_under_report_with_a_record(env):
    i = rid()
    r = env.get("/report/leak", headers={"x-request-id": i})
    assert r.status == 200 and r.json() == USER
    rec = record_for(env, i)
    assert (rec["decision"], rec["status"], rec["enforced"]) == ("sensitive_data", 502, False), rec
    i = rid()
    r = env.get("/enforce/leak", headers={"x-request-id": i})
    assert r.status == 502 and r.headers["content-type"] == "application/problem+json"
    assert "ada@example.com" not in r.body.decode()
    rec = record_for(env, i)
    assert (rec["decision"], rec["status"], rec["enforced"]) == ("sensitive_data", 502, True), rec
    assert env.stat("apiguard.route.block-report.report.sensitive_data") >= 1


# -- records ----------------------------------------------------------------------

def test_callers_are_pseudonyms_of_sub_or_of_the_address(env):
    i = rid()
    assert env.get("/report/shops/s1", headers={**bearer(token(sub="alice")), "x-request-id": i}).status == 200
    rec = record_for(env, i)
    assert rec["caller"] == pseudonym("alice") and rec["caller_kind"] == "sub", rec
    assert rec["provider"] == "idp"
    assert (rec["decision"], rec["enforced"]) == ("allowed", True)
    i = rid()
    assert env.get("/open", headers={"x-request-id": i}).status == 200
    rec = record_for(env, i)
    assert rec["caller"] == pseudonym("127.0.0.1") and rec["caller_kind"] == "address", rec
    assert "provider" not in rec
    # Stable: the same caller, the same pseudonym.
    i2 = rid()
    env.get("/open", headers={"x-request-id": i2})
    assert record_for(env, i2)["caller"] == rec["caller"]


def test_unmatched_and_method_refusals_are_recorded(env):
    i = rid()
    assert env.get("/nowhere/at/all", headers={"x-request-id": i}).status == 404
    rec = record_for(env, i)
    assert (rec["route"], rec["path"], rec["decision"], rec["status"]) == (None, None, "not_found", 404)
    i = rid()
    assert env.request("DELETE", "/open", headers={"x-request-id": i}).status == 405
    rec = record_for(env, i)
    assert (rec["route"], rec["decision"], rec["status"], rec["method"]) == ("open", "method", 405, "DELETE")


def test_the_record_is_in_the_access_log(env):
    i = rid()
    env.get("/open", headers={"x-request-id": i})
    rec = record_for(env, i)

    def lines():
        try:
            with open(env.access_log) as f:
                return [ln for ln in f if i in ln]
        except FileNotFoundError:
            return []
    found = poll(lines, lambda ls: len(ls) == 1, timeout=10)
    assert len(found) == 1, found
    code, doc = found[0].rstrip("\n").split(" ", 2)[1:]
    assert code == "200"
    assert json.loads(doc) == rec


def test_no_record_holds_a_secret(env):
    """Runs last in this module: every audit line of the run, read for what a
    record must never contain."""
    t = token(sub="mallory-the-raw-sub", shop="s1")
    i = rid()
    env.get("/report/shops/s1", headers={**bearer(t), "x-request-id": i})
    env.get("/enforce/shops/s2", headers=bearer(t))
    env.get("/report/users/u1")
    env.get("/report/leak")
    # A token sent as a request id is not copied.
    env.get("/open", headers={"x-request-id": t})
    record_for(env, i)
    lines = [ln for ln in env.log().splitlines() if MARK in ln]
    assert len(lines) >= 30, len(lines)
    forbidden = [t, *t.split("."), "mallory-the-raw-sub", "127.0.0.1", KEY, b64u(SECRET),
                 USER["ssn"], USER["email"], "/report/shops/s1", "/enforce/users/u1"]
    for line in lines:
        for f in forbidden:
            assert f not in line, (f, line)
        rec = json.loads(line.split(MARK, 1)[1])
        assert set(rec) <= {"route", "method", "path", "status", "decision", "enforced",
                            "caller", "caller_kind", "provider", "detectors", "request_id"}, rec


# -- configuration and modes at the top level ---------------------------------------

def test_top_level_report_with_a_route_that_enforces():
    cfg = {"mode": "report", "unmatched": "deny",
           "audit": {"records": "rejections", "pseudonym_key": KEY},
           "routes": [{"name": "strict", "mode": "enforce", "match": {"path": "/strict"},
                       "request": {"schema": ORDER_SCHEMA}},
                      {"name": "loose", "match": {"path": "/loose"}, "request": {"schema": ORDER_SCHEMA}},
                      {"name": "fine", "match": {"path": "/fine"}}]}
    with start_envoy(cfg) as env:
        bad = b'{"sku": 1}'
        assert env.request("POST", "/strict", headers=JSON, body=bad).status == 400
        assert env.request("POST", "/loose", headers=JSON, body=bad).status == 200
        # Unmatched and bad paths follow the top-level mode.
        assert env.get("/undeclared").status == 200
        assert env.get("/fine/%2e%2e;/x").status == 200
        assert env.get("/fine").status == 200
        stats = env.stats()
        assert stats.get("apiguard.route.strict.decision.schema") == 1
        assert stats.get("apiguard.route.loose.report.schema") == 1
        assert stats.get("apiguard.unmatched.report.not_found") == 1
        assert stats.get("apiguard.unmatched.report.bad_path") == 1
        recs = poll(lambda: records(env), lambda rs: len(rs) >= 4, timeout=5)
        # `rejections`: allowed requests leave no record.
        assert sorted((r["route"] or "-", r["decision"], r["enforced"]) for r in recs) == [
            ("-", "bad_path", False), ("-", "not_found", False),
            ("loose", "schema", False), ("strict", "schema", True)], recs


@pytest.mark.parametrize("audit, field, words", [
    ({"records": "all"}, "audit.pseudonym_key", "required"),
    ({"records": "rejections", "pseudonym_key": "too-short"}, "audit.pseudonym_key", "at least 16 bytes"),
    ({"records": "some"}, "audit.records", "unknown variant"),
    ({"records": "all", "pseudonym_key": KEY, "extra": "x"}, "audit.extra", "unknown field"),
    ({"records": 1}, "audit.records", "invalid type"),
])
def test_audit_configuration_errors_name_the_field(audit, field, words):
    code, out = validate({"audit": audit, "routes": [{"name": "a", "match": {"path": "/a"}}]})
    assert code != 0
    assert f"{field}: " in out and words in out, out
    assert "too-short" not in out


@pytest.mark.parametrize("cfg, field", [
    ({"mode": "shadow", "routes": []}, "mode"),
    ({"routes": [{"name": "a", "match": {"path": "/a"}, "mode": "dry-run"}]}, "routes[0].mode"),
])
def test_mode_errors_name_the_field(cfg, field):
    code, out = validate(cfg)
    assert code != 0
    assert f"{field}: unknown variant" in out, out
