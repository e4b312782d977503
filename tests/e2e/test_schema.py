"""Request validation through a real Envoy: nothing unvalidated reaches the upstream."""
import json
import socket
import time

import pytest

from harness import h2_request, start_envoy

ORDER_SCHEMA = {
    "type": "object", "required": ["sku", "qty"],
    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1},
                   "items": {"type": "array", "items": {"type": "object",
                             "properties": {"n": {"type": "integer"}}}}},
    "additionalProperties": False,
}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module", params=[True, False], ids=["hold-headers", "stream-headers"])
def env(request):
    """Each test runs twice: with the Wasm filter's `allow_on_headers_stop_iteration`
    (requests and responses held at their headers) and without it, as istiod
    renders a WasmPlugin (headers go on, bodies are held)."""
    cfg = {
        "schemas": [{"$id": "https://schemas.example.com/money",
                     "type": "object", "required": ["amount"],
                     "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}}],
        "routes": [
            {"name": "orders", "match": {"path": "/orders", "methods": ["POST", "GET"]},
             "request": {"schema": ORDER_SCHEMA, "max_body_bytes": 4096}},
            {"name": "pay", "match": {"path": "/pay"},
             "request": {"schema": {"$ref": "https://schemas.example.com/money"}}},
            {"name": "draft7", "match": {"path": "/legacy"},
             "request": {"schema": {"$schema": "http://json-schema.org/draft-07/schema#",
                                    "type": "object", "properties": {"a": {"type": "integer"}},
                                    "additionalProperties": False}}},
            {"name": "big", "match": {"path": "/big"}, "request": {"max_body_bytes": 1_000_000}},
        ],
    }
    # Trailers on HTTP/1.1 chunked requests reach filters only when enabled.
    hcm = {"http_protocol_options": {"enable_trailers": True}}
    with start_envoy(cfg, hcm=hcm, hold_headers=request.param) as e:
        e.hold_headers = request.param
        yield e


def sent(env, path):
    return [u for u in env.upstream_requests() if u["path"] == path]


def problem(r, status, type_suffix):
    assert r.status == status, r
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["type"].endswith(type_suffix), doc
    return doc


def test_valid_body_reaches_upstream_intact(env):
    body = b'{"sku": "book-1", "qty": 2}'
    r = env.request("POST", "/orders", headers=JSON, body=body)
    assert r.status == 200, r
    assert sent(env, "/orders")[-1]["body"] == body
    assert env.stat("apiguard.route.orders.request.validated") >= 1


def test_invalid_body_never_reaches_upstream(env):
    env.recorder.clear()
    r = env.request("POST", "/orders", headers=JSON,
                    body=b'{"sku": 5, "qty": 0, "items": [{"n": "x"}], "extra": true}')
    doc = problem(r, 400, ":schema-violation")
    found = {(e["instancePath"], e["keyword"]) for e in doc["errors"]}
    assert ("/sku", "type") in found and ("/qty", "minimum") in found
    assert ("/items/0/n", "type") in found
    assert any(k == "additionalProperties" for _, k in found), found
    assert env.upstream_requests() == []
    assert env.stat("apiguard.route.orders.request.schema") >= 1


@pytest.mark.parametrize("headers,body,status,suffix", [
    ({"content-type": "text/plain"}, b'{"sku":"a","qty":1}', 415, ":unsupported-media-type"),
    ({}, b'{"sku":"a","qty":1}', 415, ":unsupported-media-type"),
    (JSON, b'{"sku": "a", "qty": 1', 400, ":invalid-body"),
    (JSON, b'{"sku": "\xff\xfe", "qty": 1}', 400, ":invalid-body"),
    (JSON, b'{"sku": "a", "sku": "b", "qty": 1}', 400, ":invalid-body"),
    (JSON, b"", 400, ":invalid-body"),
    (JSON, b'{"sku": "' + b"a" * 5000 + b'", "qty": 1}', 413, ":payload-too-large"),
])
def test_rejections_and_nothing_forwarded(env, headers, body, status, suffix):
    env.recorder.clear()
    r = env.request("POST", "/orders", headers=headers, body=body)
    problem(r, status, suffix)
    assert env.upstream_requests() == []


def test_media_type_parameters_and_case_are_accepted(env):
    r = env.request("POST", "/orders", headers={"content-type": "Application/JSON; charset=utf-8"},
                    body=b'{"sku":"a","qty":1}')
    assert r.status == 200, r
    accepted = problem(env.request("POST", "/orders", headers={"content-type": "text/plain"}, body=b"{}"),
                       415, ":unsupported-media-type")
    assert "application/json" in accepted["detail"]


def test_get_without_body_is_not_held(env):
    assert env.get("/orders").status == 200


def chunked_request(env, path, chunks, trailers=None, headers=JSON):
    """HTTP/1.1 chunked upload, optionally with trailers; returns (status, raw response)."""
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s.sendall(head.encode())
    try:
        for c in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(c), c))
        tail = "".join(f"{k}: {v}\r\n" for k, v in (trailers or {}).items())
        s.sendall(b"0\r\n" + tail.encode() + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the filter may answer (413) before the upload ends
    data = b""
    while True:
        try:
            part = s.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    s.close()
    return int(data.split(b" ", 2)[1]), data


def test_chunked_body_is_validated_after_the_last_chunk(env):
    env.recorder.clear()
    doc = json.dumps({"sku": "chunked", "qty": 3}).encode()
    status, _ = chunked_request(env, "/orders", [doc[i:i + 5] for i in range(0, len(doc), 5)])
    assert status == 200
    assert sent(env, "/orders")[-1]["body"] == doc
    status, raw = chunked_request(env, "/orders", [b'{"sku": "x",', b' "qty": -1}'])
    assert status == 400 and b"minimum" in raw
    assert len(sent(env, "/orders")) == 1


def test_chunked_body_with_trailers(env):
    env.recorder.clear()
    status, _ = chunked_request(env, "/orders", [b'{"sku": "t", ', b'"qty": 1}'], trailers={"x-checksum": "abc"})
    assert status == 200
    status, _ = chunked_request(env, "/orders", [b'{"sku": "t", ', b'"qty": 0}'], trailers={"x-checksum": "abc"})
    assert status == 400
    assert len(sent(env, "/orders")) == 1


def test_chunked_size_is_capped_cumulatively(env):
    env.recorder.clear()
    status, raw = chunked_request(env, "/orders", [b'{"sku": "' + b"a" * 1000] * 8 + [b'", "qty": 1}'])
    assert status == 413, raw[:300]
    assert env.upstream_requests() == []


def h2_post(env, path, body, trailers=None, headers=JSON):
    """HTTP/2 (prior knowledge) POST with optional trailers; returns (status, body)."""
    return h2_request(env.port, "POST", path, list(headers.items()), [body], trailers)


def test_http2_with_and_without_trailers(env):
    env.recorder.clear()
    assert h2_post(env, "/orders", b'{"sku": "h2", "qty": 1}')[0] == 200
    assert h2_post(env, "/orders", b'{"sku": "h2", "qty": 2}', trailers={"x-sig": "1"})[0] == 200
    status, body = h2_post(env, "/orders", b'{"sku": "h2", "qty": 0}', trailers={"x-sig": "1"})
    assert status == 400 and b"minimum" in body
    assert [u["body"] for u in sent(env, "/orders")] == [b'{"sku": "h2", "qty": 1}', b'{"sku": "h2", "qty": 2}']


def test_registry_ref_and_draft7(env):
    assert env.request("POST", "/pay", headers=JSON, body=b'{"amount": 5}').status == 200
    problem(env.request("POST", "/pay", headers=JSON, body=b'{"amount": 0}'), 400, ":schema-violation")
    assert env.request("POST", "/legacy", headers=JSON, body=b'{"a": 1}').status == 200
    problem(env.request("POST", "/legacy", headers=JSON, body=b'{"a": 1, "b": 2}'), 400, ":schema-violation")


def test_threat_limits_cost_bounded_work_and_envoy_keeps_serving(env):
    deep = b"[" * 100_000 + b"]" * 100_000
    problem(env.request("POST", "/big", headers=JSON, body=deep), 400, ":invalid-body")
    long_string = b'{"s": "' + b"x" * 900_000 + b'"}'
    doc = problem(env.request("POST", "/big", headers=JSON, body=long_string), 400, ":invalid-body")
    assert "x" * 100 not in doc["detail"]
    many = b"[" + b",".join([b"1"] * 20_000) + b"]"
    problem(env.request("POST", "/big", headers=JSON, body=many), 400, ":invalid-body")
    assert env.stat("apiguard.route.big.request.limits") == 3
    assert env.request("POST", "/big", headers=JSON, body=b'{"ok": true}').status == 200
    assert env.alive()


def test_what_the_upstream_sees_of_a_refused_body(env):
    """Held at its headers, a refused request never reaches the upstream. With the
    headers let through, the upstream may see the headers (here they are sent a
    while before the body), then a reset: never a byte of the body."""
    before = len(env.upstream_requests(incomplete=True))
    body = b'{"sku": 7, "qty": 0}'
    head = (b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.5)
        sock.sendall(body)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    seen = [u for u in env.upstream_requests(incomplete=True)[before:] if u["path"] == "/orders"]
    if env.hold_headers:
        assert seen == []
    else:
        assert len(seen) == 1 and not seen[0]["complete"] and seen[0]["body"] == b"", seen
        assert seen[0]["headers"]["content-type"] == "application/json"


def test_a_mismatched_hold_setting_is_answered_not_hung():
    """The plugin told the Wasm filter holds at headers, Envoy's filter does not:
    the request would hang until the route timeout. The watchdog answers it with
    503 and a log line that names the setting."""
    from concurrent.futures import ThreadPoolExecutor
    cfg = {"allow_on_headers_stop_iteration": True,
           "routes": [{"name": "orders", "match": {"path": "/orders"}, "request": {"schema": ORDER_SCHEMA}},
                      {"name": "masked", "match": {"path": "/masked"},
                       "response": {"mask": [{"path": "$.x", "action": "remove"}]}}]}
    with start_envoy(cfg, hold_headers=False) as env:
        t0 = time.time()
        with ThreadPoolExecutor(2) as pool:
            req = pool.submit(env.request, "POST", "/orders", headers=JSON,
                              body=b'{"sku": "a", "qty": 1}', timeout=30)
            resp = pool.submit(env.get, "/masked", timeout=30)
            rs = [req.result(), resp.result()]
        assert time.time() - t0 < 15
        for r in rs:
            problem(r, 503, ":hold-timeout")
        assert env.upstream_requests() == [] or all(u["path"] == "/masked" for u in env.upstream_requests())
        assert "allow_on_headers_stop_iteration" in env.log()
        assert env.stat("apiguard.unmatched.hold_timeout") == 2
