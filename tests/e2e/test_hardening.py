"""The attack classes the filter must hold, through a real Envoy and upstream.

Every test runs twice: with Envoy's defaults and with the settings the README asks
for (`normalize_path`, `merge_slashes`, escaped slashes and underscores rejected,
`use_remote_address`). Where Envoy itself refuses a request under the README's
settings, the test accepts that refusal, as long as nothing reached the upstream.
"""
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from harness import closed_port, cluster, h2_request, start_envoy

ISS = "https://idp.hardening.test/"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK = {**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "alg": "ES256", "kid": "k1"}
FORGED = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2Vk"
DOC = {"id": 7, "name": "Ann", "ssn": "123-45-6789", "email": "ann@example.com"}
DOC_BYTES = json.dumps(DOC).encode()

SETTINGS = {
    "envoy-defaults": None,
    "readme-settings": {
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "use_remote_address": True,
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
    },
}


def token(sub="alice", **extra):
    claims = {"iss": ISS, "sub": sub, "roles": ["clerk"], "shop_id": "s1",
              "exp": int(time.time()) + 600, **extra}
    return jwt.encode(claims, KEY, algorithm="ES256", headers={"kid": "k1"})


def bearer(tok):
    return {"authorization": f"Bearer {tok}"}


def partial(handler, req):
    """A JSON document that honours `Range: bytes=a-b`, as many upstreams do."""
    rng = req["headers"].get("range", "")
    if rng.startswith("bytes="):
        a, b = (int(x) for x in rng[6:].split("-"))
        return 206, {"content-type": "application/json",
                     "content-range": f"bytes {a}-{b}/{len(DOC_BYTES)}"}, DOC_BYTES[a:b + 1]
    return 200, {"content-type": "application/json"}, DOC_BYTES


def always_partial(handler, req):
    return 206, {"content-type": "application/json",
                 "content-range": f"bytes 22-86/{len(DOC_BYTES)}"}, DOC_BYTES[22:87]


def slow(handler, req):
    time.sleep(1.5)
    return 200, {"content-type": "application/json"}, DOC_BYTES


def doc(value):
    return lambda handler, req: (200, {"content-type": "application/json"},
                                 json.dumps(value).encode())


RESPONDERS = {
    "/masked/doc": partial,
    "/masked/always206": always_partial,
    "/masked/slow": slow,
    "/detect/key-email": doc({"users": {"ann@example.com": {}}}),
    "/detect/key-aws": doc({"AKIAIOSFODNN7EXAMPLE": "x"}),
    "/detect/number-card": doc({"pan": 4111111111111111}),
    "/detect/clean": doc({"pan": "n/a", "count": 4111}),
    "/redact/number-card": doc({"pan": 4111111111111111, "qty": 3}),
    "/redact/key-email": doc({"users": {"ann@example.com": {"n": 1}}}),
}

CONFIG = {
    "unmatched": "allow",
    "providers": {"main": {
        "issuer": ISS, "jwks": {"inline": {"keys": [JWK]}},
        "from_params": ["access_token"], "forward": False,
        "claim_to_headers": [{"claim": "sub", "header": "x-user-id"},
                             {"claim": "roles", "header": "x-user-roles"}],
    }},
    "routes": [
        {"name": "admin", "match": {"path": "/admin/{rest...}"}, "auth": {"requires": "main"}},
        {"name": "public", "match": {"path": "/public/{rest...}"}},
        {"name": "orders", "match": {"path": "/shops/{shop}/orders"},
         "auth": {"requires": "main", "bind": {"shop": "shop_id"}}},
        {"name": "optional", "match": {"path": "/optional"},
         "auth": {"requires": "main", "allow_missing": True}},
        {"name": "counted", "match": {"path": "/counted"}, "auth": {"requires": "main"},
         "quota": {"limit": 2, "window_seconds": 60, "by": "header:x-user-id"}},
        {"name": "counted-underscore", "match": {"path": "/counted2"}, "auth": {"requires": "main"},
         "quota": {"limit": 2, "window_seconds": 60, "by": "header:x_user_id"}},
        {"name": "echo", "match": {"path": "/echo"}},
        {"name": "masked", "match": {"path": "/masked/{rest...}"},
         "response": {"mask": [{"path": "$.ssn", "action": "remove"},
                               {"path": "$.email", "action": "redact"}]}},
        {"name": "detect", "match": {"path": "/detect/{rest...}"},
         "response": {"detect": {"builtin": ["email", "aws_access_key", "card"], "action": "block"}}},
        {"name": "redact", "match": {"path": "/redact/{rest...}"},
         "response": {"detect": {"builtin": ["email", "card"], "action": "redact"}}},
        {"name": "body", "match": {"path": "/body"},
         "request": {"schema": {"type": "object",
                                "properties": {"qty": {"type": "integer", "maximum": 10},
                                               "id": {"type": "integer",
                                                      "maximum": 9007199254740992}}}}},
    ],
}


def route_config():
    """All to the upstream, but `/masked/down` to a port nothing listens on and
    `/masked/slow` with a short timeout: Envoy answers those itself."""
    return {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/masked/down"}, "route": {"cluster": "down", "timeout": "5s"}},
        {"match": {"prefix": "/masked/slow"}, "route": {"cluster": "upstream", "timeout": "0.3s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}},
    ]}]}


@pytest.fixture(scope="module", params=list(SETTINGS))
def env(request):
    hcm = dict(SETTINGS[request.param] or {}, route_config=route_config())
    with start_envoy(CONFIG, hcm=hcm, responders=RESPONDERS,
                     clusters=[cluster("down", closed_port())]) as e:
        e.readme = request.param == "readme-settings"
        yield e


def upstream_saw(env, fn):
    env.recorder.clear()
    r = fn()
    return r, env.upstream_requests()


def problem(r, status, type_suffix):
    assert r.status == status, r
    assert r.headers["content-type"] == "application/problem+json", r
    body = r.json()
    assert body["type"].endswith(type_suffix) and body["status"] == status, body
    return body


# 1. Range requests never bypass masking ---------------------------------------

@pytest.mark.parametrize("extra", [{"range": "bytes=22-86"}, {"range": "bytes=0-40"},
                                   {"range": "bytes=22-86", "if-range": '"v1"'}])
def test_range_is_dropped_on_masked_routes(env, extra):
    r, seen = upstream_saw(env, lambda: env.get("/masked/doc", headers=extra))
    assert r.status == 200, r
    assert r.json() == {"id": 7, "name": "Ann", "email": "[REDACTED]"}
    assert len(seen) == 1 and "range" not in seen[0]["headers"], seen
    assert "if-range" not in seen[0]["headers"]


def test_a_206_from_the_upstream_is_withheld(env):
    r = env.get("/masked/always206")
    body = problem(r, 502, ":response-withheld")
    assert "123-45-6789" not in r.body.decode() and "206" in body["detail"]
    assert env.stat("apiguard.route.masked.response.withheld.partial") >= 1


# 2 and 6. Path aliases: `;` in segments, dot segments, case ---------------------

@pytest.mark.parametrize("path", [
    "/public/%2e%2e;/admin/keys",
    "/public/..;/admin/keys",
    "/public/..;x=1/admin/keys",
    "/public/%2E%2E;jsessionid=1/admin/keys",
    "/shops/s1/..;/s2/orders",
    "/admin;/users",
    "/admin;x=1/users",
    "/admin%3B/users",
    "/admin%3b/users",
    "/public/x/../admin%3bx/users",
])
def test_semicolon_aliases_are_refused(env, path):
    # No token: whatever reads the alias, the upstream must see nothing. The filter
    # refuses it (400); under the README's settings Envoy may resolve `..;` itself
    # first, and then the protected route it reaches refuses it (401).
    r, seen = upstream_saw(env, lambda: env.get(path))
    assert seen == [], seen
    if r.status == 401:
        assert env.readme and ".." in path.lower().replace("%2e", "."), r
        problem(r, 401, ":missing-token")
        return
    if r.status == 400 and r.headers.get("content-type") != "application/problem+json":
        assert env.readme, r  # Envoy's own normalisation refused it first
        return
    problem(r, 400, ":bad-path")


@pytest.mark.parametrize("path", ["/ADMIN/users", "/Admin/Users", "/aDmIn/keys"])
def test_case_aliases_get_the_protection_of_the_route_they_alias(env, path):
    r, seen = upstream_saw(env, lambda: env.get(path))
    problem(r, 401, ":missing-token")
    assert seen == []
    r, seen = upstream_saw(env, lambda: env.get(path, headers=bearer(token())))
    assert r.status == 200 and len(seen) == 1, r
    assert env.stat("apiguard.route.admin.decision.missing") >= 1


def test_reserved_characters_keep_their_encoding_when_the_path_is_rewritten(env):
    r, seen = upstream_saw(env, lambda: env.get("/public/x/../a%3Db/me%40x?q=1"))
    assert r.status == 200, r
    assert seen[0]["path"] == "/public/a%3Db/me%40x?q=1", seen


# 3. Quota keys are what the upstream sees ---------------------------------------

@pytest.mark.parametrize("route", ["/counted", "/counted2"])
def test_quota_by_a_filter_set_header_counts_the_verified_value(env, route):
    tok = token(sub=f"quota-{route}-{env.readme}")
    statuses = []
    for i in range(4):
        headers = {**bearer(tok), "x-user-id": f"rotated-{i}"}
        statuses.append(env.get(route, headers=headers).status)
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429], statuses


# 4. Headers the filter sets cannot be forged in any spelling ----------------------

@pytest.mark.parametrize("forged", [
    {"x-user_id": "root"}, {"x_user-roles": "admin"}, {"x_user_id": "root"},
    {"X-User-Id": "root"}, {"x-user-id": "root", "x_user_roles": "admin"},
])
def test_forged_identity_headers_never_reach_the_upstream(env, forged):
    r, seen = upstream_saw(env, lambda: env.get("/echo", headers=forged))
    if env.readme and any("_" in k for k in forged):
        assert r.status == 400 and seen == [], r  # Envoy refuses underscores itself
        return
    assert r.status == 200, r
    names = {k.replace("_", "-").lower() for k in seen[0]["headers"]}
    assert not names & {"x-user-id", "x-user-roles"}, seen[0]["headers"]


def test_verified_identity_headers_arrive_once_in_one_spelling(env):
    headers = {**bearer(token()), "x-user-id": "root"}
    r, seen = upstream_saw(env, lambda: env.get("/admin/me", headers=headers))
    assert r.status == 200, r
    assert seen[0]["headers"]["x-user-id"] == "alice"
    assert seen[0]["headers"]["x-user-roles"] == "clerk"


# 5. Detectors see member names and numbers ----------------------------------------

@pytest.mark.parametrize("path,kind", [
    ("/detect/key-email", "email"), ("/detect/key-aws", "aws_access_key"),
    ("/detect/number-card", "card"),
])
def test_block_detectors_scan_keys_and_numbers(env, path, kind):
    r = env.get(path)
    body = problem(r, 502, ":response-withheld")
    assert kind in body["detail"], body
    assert "ann@example.com" not in r.body.decode() and "4111111111111111" not in r.body.decode()


def test_clean_documents_pass_block_detectors(env):
    r = env.get("/detect/clean")
    assert r.status == 200 and r.json() == {"pan": "n/a", "count": 4111}, r


def test_redact_detectors_rewrite_keys_and_numbers(env):
    r = env.get("/redact/number-card")
    assert r.status == 200 and r.json() == {"pan": "[REDACTED:card]", "qty": 3}, r
    r = env.get("/redact/key-email")
    assert r.status == 200, r
    assert r.json() == {"users": {"[REDACTED:email]": {"n": 1}}}


# 7. Credentials the filter cannot read are refused or removed ---------------------

@pytest.mark.parametrize("headers,query", [
    ({"authorization": f"Bearer\t{FORGED}"}, ""),
    ({"authorization": f"bearer \t {FORGED}"}, ""),
    ({"authorization": "Bearer"}, ""),
    ({}, f"?a=1;access_token={FORGED}"),
    ({}, f"?ACCESS_TOKEN={FORGED}"),
    ({}, f"?a=1&b=2;access_token={FORGED}"),
])
def test_unreadable_tokens_of_the_providers_scheme_are_refused(env, headers, query):
    r, seen = upstream_saw(env, lambda: env.get("/optional" + query, headers=headers))
    problem(r, 401, ":invalid-token")
    assert seen == []


@pytest.mark.parametrize("value", ["Basic YTpi", f"Bearer{FORGED}", FORGED])
def test_other_credentials_are_removed_where_the_provider_does_not_forward(env, value):
    r, seen = upstream_saw(env, lambda: env.get("/optional", headers={"authorization": value}))
    assert r.status == 200, r
    assert "authorization" not in seen[0]["headers"], seen[0]["headers"]


# 8. Envoy's own gateway errors keep their status on masked routes -----------------

def test_upstream_down_reads_503(env):
    r, seen = upstream_saw(env, lambda: env.get("/masked/down/x"))
    body = problem(r, 503, ":response-withheld")
    assert "upstream" in body["detail"]


def test_upstream_timeout_reads_504(env):
    r = env.get("/masked/slow")
    problem(r, 504, ":response-withheld")


# 9. An empty HTTP/2 body is no body ------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD", "OPTIONS"])
def test_http2_bodyless_request_with_an_empty_data_frame_passes(env, method):
    env.recorder.clear()
    status, _ = h2_request(env.port, method, "/body")
    assert status == 200, status
    assert len(env.upstream_requests()) == 1


def test_http2_post_with_an_empty_data_frame_is_an_empty_body(env):
    status, data = h2_request(env.port, "POST", "/body")
    assert status == 400 and b"invalid-body" in data, (status, data)


def test_http2_body_of_unknown_length_is_still_checked(env):
    status, data = h2_request(env.port, "POST", "/body", [("content-type", "text/plain")],
                              [b'{"qty":', b" 3}"])
    assert status == 415, (status, data)
    status, _ = h2_request(env.port, "POST", "/body", [("content-type", "application/json")],
                           [b'{"qty":', b" 3}"])
    assert status == 200


# 10. Numbers the validator cannot hold exactly are refused -------------------------

@pytest.mark.parametrize("body,status", [
    (b'{"qty": 10.000000000000000001}', 400),
    (b'{"qty": 1e1}', 200),
    (b'{"qty": 10}', 200),
    (b'{"qty": 10.0}', 200),
    (b'{"id": 9007199254740993}', 400),
    (b'{"id": 9007199254740992}', 200),
    (b'{"qty": 0.30000000000000001}', 400),
])
def test_over_precise_numbers_are_refused(env, body, status):
    r, seen = upstream_saw(env, lambda: env.request(
        "POST", "/body", headers={"content-type": "application/json"}, body=body))
    assert r.status == status, (body, r)
    if status == 400:
        problem(r, 400, ":invalid-body")
        assert seen == []
    else:
        assert seen[0]["body"] == body
