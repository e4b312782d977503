"""Response masking and sensitive-data detection through a real Envoy."""
import gzip
import hashlib
import hmac
import json

import pytest

from harness import start_envoy

SALT = "e2e-mask-salt-0123456789"
ORDER_MASK = [
    {"path": "$.card.number", "action": "keep_last", "n": 4},
    {"path": "$.customer.ssn", "action": "remove"},
    {"path": "$.items[*].cost", "action": "redact"},
    {"path": "$.customer.email", "action": "hash"},
]


def raw_exchange(port, request, timeout=5):
    """Every byte the client receives until the connection closes."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out


def body_of(doc):
    return json.dumps(doc).encode()


def responders():
    big = {"rows": [{"id": i, "ssn": "123-45-6789", "pad": "x" * 200} for i in range(100)]}
    return {
        "/gzip": lambda h, r: (200, {"content-type": "application/json", "content-encoding": "gzip"},
                               gzip.compress(body_of({"ssn": "123-45-6789"}))),
        "/text": lambda h, r: (200, {"content-type": "text/plain"}, b"ssn 123-45-6789"),
        "/chunked": lambda h, r: (200, {"content-type": "application/json", "transfer-encoding": "chunked"},
                                  body_of({"customer": {"ssn": "123-45-6789", "name": "Ada"},
                                           "filler": ["y" * 50] * 20})),
        "/big": lambda h, r: (200, {"content-type": "application/json"}, body_of(big)),
        "/error": lambda h, r: (500, {"content-type": "application/json"},
                                body_of({"error": "boom", "customer": {"ssn": "123-45-6789"}})),
        "/leaky": lambda h, r: (200, {"content-type": "application/json"},
                                body_of({"note": "card 4111 1111 1111 1111 and mail ada@example.com",
                                         "id": "4111111111111112"})),
        "/secret": lambda h, r: (200, {"content-type": "application/json"},
                                 body_of({"debug": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"})),
    }


def masked_route(name, path, **extra):
    return {"name": name, "match": {"path": path}, "response": {"mask": extra.pop("mask", ORDER_MASK), **extra}}


@pytest.fixture(scope="module", params=[True, False], ids=["hold-headers", "stream-headers"])
def env(request):
    """Each test runs twice: with the Wasm filter's `allow_on_headers_stop_iteration`
    (requests and responses held at their headers) and without it, as istiod
    renders a WasmPlugin (headers go on, bodies are held)."""
    cfg = {
        "mask_salt": SALT,
        "routes": [
            masked_route("order", "/shops/{shop}/orders/{id}"),
            masked_route("gzip", "/gzip"),
            masked_route("text", "/text"),
            masked_route("text-open", "/text-open", failure_mode="open"),
            masked_route("chunked", "/chunked", mask=[{"path": "$.customer.ssn", "action": "redact"}]),
            masked_route("big", "/big", mask=[{"path": "$.rows[*].ssn", "action": "remove"}], max_body_bytes=4096),
            masked_route("error", "/error", mask=[{"path": "$.customer.ssn", "action": "remove"}]),
            masked_route("error-kept", "/error-kept", mask=[{"path": "$.customer.ssn", "action": "remove"}],
                         mask_errors=False),
            {"name": "leaky", "match": {"path": "/leaky"},
             "response": {"detect": {"builtin": ["card", "email"], "action": "redact"}}},
            {"name": "secret", "match": {"path": "/secret"},
             "response": {"detect": {"builtin": ["private_key"], "action": "block"}}},
            {"name": "report", "match": {"path": "/leaky-report"},
             "response": {"detect": {"builtin": ["card", "email"], "action": "report"}}},
            {"name": "plain", "match": {"path": "/users/{id}"}},
        ],
    }
    r = responders()
    r["/text-open"] = r["/text"]
    r["/error-kept"] = r["/error"]
    r["/leaky-report"] = r["/leaky"]
    with start_envoy(cfg, responders=r, hold_headers=request.param) as e:
        e.hold_headers = request.param
        yield e


def test_each_action_on_nested_paths(env):
    r = env.get("/shops/s1/orders/9")
    assert r.status == 200, r
    doc = r.json()
    assert doc["card"]["number"] == "************1111"
    assert "ssn" not in doc["customer"]
    assert [i["cost"] for i in doc["items"]] == ["[REDACTED]", "[REDACTED]"]
    want = hmac.new(SALT.encode(), b'"ada@example.com"', hashlib.sha256).hexdigest()
    assert doc["customer"]["email"] == want
    # Untouched fields are unchanged; the length header was dropped, not stale.
    assert doc["card"]["holder"] == "Ada Lovelace" and doc["items"][0]["sku"] == "book-1"
    assert r.headers.get("content-length") in (None, str(len(r.body)))
    assert env.stat("apiguard.route.order.response.masked") >= 1
    assert env.stat("apiguard.route.order.response.fields_masked") >= 5


def test_upstream_is_asked_for_identity_encoding(env):
    env.get("/shops/s1/orders/9", headers={"accept-encoding": "gzip, br"})
    assert env.upstream_requests()[-1]["headers"]["accept-encoding"] == "identity"


@pytest.mark.parametrize("path,reason", [("/gzip", "compressed"), ("/text", "not_json"), ("/big", "too_large")])
def test_unmaskable_bodies_are_withheld(env, path, reason):
    r = env.get(path)
    assert r.status == 502, r
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(":response-withheld")
    assert b"123-45-6789" not in r.body
    assert env.stat(f"apiguard.route.{path[1:]}.response.withheld.{reason}") >= 1


def test_fail_open_passes_unmaskable_body_and_counts_it(env):
    r = env.get("/text-open")
    assert r.status == 200 and r.body == b"ssn 123-45-6789"
    assert env.stat("apiguard.route.text-open.response.unmasked.not_json") == 1


def test_chunked_upstream_is_masked_after_the_last_chunk(env):
    r = env.get("/chunked")
    assert r.status == 200, r
    doc = r.json()
    assert doc["customer"] == {"ssn": "[REDACTED]", "name": "Ada"}
    assert len(doc["filler"]) == 20


def test_error_responses_are_masked_unless_configured(env):
    r = env.get("/error")
    assert r.status == 500 and "ssn" not in r.json()["customer"]
    r = env.get("/error-kept")
    assert r.status == 500 and r.json()["customer"]["ssn"] == "123-45-6789"


def test_detectors_redact_block_and_report(env):
    doc = env.get("/leaky").json()
    assert "4111 1111 1111 1111" not in doc["note"] and "ada@example.com" not in doc["note"]
    assert doc["id"] == "4111111111111112"  # fails Luhn: not a card
    assert env.stat("apiguard.route.leaky.response.detect.card") >= 1
    assert env.stat("apiguard.route.leaky.response.detect.email") >= 1

    if env.hold_headers:
        r = env.get("/secret")
        assert r.status == 502 and b"PRIVATE KEY" not in r.body
    else:
        # The upstream's headers went on before the body was judged: the withheld
        # response ends in a reset, and not one byte of the body reaches the client.
        raw = raw_exchange(env.port, b"GET /secret HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:300]
        assert b"transfer-encoding: chunked" in head.lower() and body == b"", raw[:600]
        assert b"PRIVATE KEY" not in raw
    assert env.stat("apiguard.route.secret.response.withheld.sensitive_data") == 1

    r = env.get("/leaky-report")
    assert r.status == 200 and "ada@example.com" in r.json()["note"]
    assert env.stat("apiguard.route.report.response.detect.email") == 1
    assert "ada@example.com" not in env.log() and "4111" not in env.log()


def test_routes_without_response_section_are_untouched(env):
    r = env.get("/users/7")
    assert r.status == 200 and r.json()["ssn"] == "078-05-1120"


def test_unmasked_for_admin_token_only():
    import base64
    import time

    import jwt  # PyJWT

    secret = b"mask-e2e-hmac-secret-of-32-bytes!!"
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    cfg = {
        "mask_salt": SALT,
        "providers": {"idp": {"issuer": "https://idp.test/",
                              "jwks": {"inline": {"keys": [{"kty": "oct", "alg": "HS256", "kid": "h", "k": k}]}}}},
        "routes": [{"name": "order", "match": {"path": "/shops/{shop}/orders/{id}"},
                    "auth": {"requires": "idp"},
                    "response": {"mask": ORDER_MASK, "unmasked_for": {"claim": "roles", "any_of": ["admin"]}}}],
    }

    def bearer(roles):
        now = int(time.time())
        tok = jwt.encode({"iss": "https://idp.test/", "sub": "u", "iat": now, "exp": now + 300, "roles": roles},
                         secret, algorithm="HS256", headers={"kid": "h"})
        return {"authorization": f"Bearer {tok}"}

    with start_envoy(cfg) as e:
        clerk = e.get("/shops/s/orders/1", headers=bearer(["clerk"])).json()
        admin = e.get("/shops/s/orders/1", headers=bearer(["clerk", "admin"])).json()
        assert clerk["card"]["number"] == "************1111" and "ssn" not in clerk["customer"]
        assert admin["card"]["number"] == "4111111111111111"
        assert admin["customer"]["ssn"] == "123-45-6789" and admin["items"][0]["cost"] == 42.5
        assert e.stat("apiguard.route.order.response.masked") == 1
