"""Path, query and header parameters through a real Envoy: checked at request
headers, before any body is held; nothing refused reaches the upstream."""
import json

import pytest

from harness import start_envoy

UUID = "0b7e4a5c-1f2d-4c3b-9a8e-7d6c5b4a3f21"
SECRET = "s3cr3t-Value-42"


@pytest.fixture(scope="module")
def env():
    cfg = {
        "routes": [
            {"name": "list-items", "match": {"path": "/shops/{shop}/items", "methods": ["GET"]},
             "request": {
                 "additional_query": "deny",
                 "parameters": [
                     {"in": "path", "name": "shop", "schema": {"type": "integer", "minimum": 1}},
                     {"in": "query", "name": "limit", "schema": {"type": "integer", "maximum": 100}},
                     {"in": "query", "name": "tag",
                      "schema": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]},
                                 "maxItems": 2}},
                     {"in": "query", "name": "active", "schema": {"type": "boolean"}},
                     {"in": "header", "name": "x-correlation-id", "required": True,
                      "schema": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}},
                 ]}},
            # Only parameters: bodies pass without being held or parsed.
            {"name": "upload", "match": {"path": "/files/{name}.json", "methods": ["PUT"]},
             "request": {"parameters": [
                 {"in": "path", "name": "name", "schema": {"type": "string", "pattern": "^[a-z]+$"}}]}},
            {"name": "cancel", "match": {"path": "/v1/jobs/{id}:cancel", "methods": ["POST"]},
             "request": {"parameters": [{"in": "path", "name": "id", "schema": {"type": "integer"}}]}},
            {"name": "range", "match": {"path": "/range/{from}-{to}", "methods": ["GET"]},
             "request": {"parameters": [
                 {"in": "path", "name": "from", "schema": {"type": "integer"}},
                 {"in": "path", "name": "to", "schema": {"type": "integer"}}]}},
            # Parameters and a body schema: parameters are judged before the body is held.
            {"name": "orders", "match": {"path": "/orders", "methods": ["POST"]},
             "request": {
                 "parameters": [{"in": "query", "name": "dry_run", "schema": {"type": "boolean"}}],
                 "schema": {"type": "object", "required": ["sku"]}}},
            {"name": "reported", "match": {"path": "/report"}, "mode": "report",
             "request": {"parameters": [{"in": "query", "name": "n", "required": True,
                                         "schema": {"type": "integer"}}]}},
        ],
        "audit": {"records": "rejections", "pseudonym_key": "e2e-audit-key-0123456789"},
    }
    with start_envoy(cfg) as e:
        yield e


def problem(r):
    assert r.status == 400, r
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["type"] == "urn:api-guard:problem:invalid-parameter", doc
    return {(e["in"], e["name"], e["keyword"]) for e in doc["errors"]}


def test_valid_parameters_pass(env):
    env.recorder.clear()
    r = env.get("/shops/7/items?limit=10&tag=a,b&active=true", headers={"x-correlation-id": UUID})
    assert r.status == 200, r
    assert env.upstream_requests()[-1]["path"] == "/shops/7/items?limit=10&tag=a,b&active=true"
    r = env.get("/shops/7/items?tag=a&tag=c", headers={"x-correlation-id": UUID})
    assert r.status == 200, r


@pytest.mark.parametrize("path,headers,errors", [
    ("/shops/7/items", {}, {("header", "x-correlation-id", "required")}),
    ("/shops/0/items?limit=101", {"x-correlation-id": UUID},
     {("path", "shop", "minimum"), ("query", "limit", "maximum")}),
    ("/shops/x/items?limit=ten", {"x-correlation-id": UUID},
     {("path", "shop", "type"), ("query", "limit", "type")}),
    ("/shops/7/items?tag=a,b,c", {"x-correlation-id": UUID}, {("query", "tag", "maxItems")}),
    ("/shops/7/items?tag=z", {"x-correlation-id": UUID}, {("query", "tag", "enum")}),
    ("/shops/7/items?limit=1&limit=2", {"x-correlation-id": UUID}, {("query", "limit", "repeated")}),
    ("/shops/7/items?active=yes", {"x-correlation-id": "nope"},
     {("query", "active", "type"), ("header", "x-correlation-id", "pattern")}),
    ("/shops/7/items?debug=1", {"x-correlation-id": UUID}, {("query", "debug", "additional_query")}),
])
def test_bad_parameters_are_400_and_never_forwarded(env, path, headers, errors):
    env.recorder.clear()
    assert problem(env.get(path, headers=headers)) == errors
    assert env.upstream_requests() == []


def test_values_are_never_echoed(env):
    r = env.get(f"/shops/7/items?limit={SECRET}&{SECRET}=1", headers={"x-correlation-id": SECRET})
    assert problem(r) == {("query", "limit", "type"), ("header", "x-correlation-id", "pattern"),
                          ("query", SECRET, "additional_query")}
    # The undeclared name is named; no value appears anywhere else.
    body = r.body.decode()
    assert body.count(SECRET) == 1, body
    assert f"limit={SECRET}" not in env.log() and f"x-correlation-id: {SECRET}" not in env.log()


def test_mixed_segments_route_and_check(env):
    env.recorder.clear()
    r = env.request("PUT", "/files/report.json", headers={"content-type": "text/plain"}, body=b"not json")
    assert r.status == 200, r
    assert env.upstream_requests()[-1]["body"] == b"not json"
    assert problem(env.request("PUT", "/files/Report.json", body=b"x")) == {("path", "name", "pattern")}
    assert env.request("PUT", "/files/report.txt", body=b"x").status == 404
    assert env.request("POST", "/v1/jobs/12:cancel").status == 200
    assert problem(env.request("POST", "/v1/jobs/x:cancel")) == {("path", "id", "type")}
    assert env.get("/range/1-20").status == 200
    assert problem(env.get("/range/a-20")) == {("path", "from", "type")}


def test_parameters_are_judged_before_the_body_is_held(env):
    env.recorder.clear()
    headers = {"content-type": "application/json"}
    # A bad parameter is answered at request headers: the body is not read.
    r = env.request("POST", "/orders?dry_run=maybe", headers=headers, body=b"not even json")
    assert problem(r) == {("query", "dry_run", "type")}
    r = env.request("POST", "/orders?dry_run=true", headers=headers, body=b"not even json")
    assert r.status == 400 and r.json()["type"].endswith(":invalid-body"), r
    r = env.request("POST", "/orders?dry_run=false", headers=headers, body=b'{"sku":"a"}')
    assert r.status == 200, r
    assert [u["body"] for u in env.upstream_requests()] == [b'{"sku":"a"}']


def test_metrics_report_mode_and_audit(env):
    r = env.get("/report?n=x")
    assert r.status == 200, r
    stats = env.stats()
    assert stats.get("apiguard.route.list-items.decision.invalid_parameter", 0) >= 8
    assert stats.get("apiguard.route.list-items.request.invalid_parameter", 0) >= 8
    assert stats.get("apiguard.route.reported.report.invalid_parameter") == 1
    records = [json.loads(line.split("api-guard audit: ", 1)[1])
               for line in env.log().splitlines() if "api-guard audit: " in line]
    decisions = {(rec["route"], rec["decision"], rec["enforced"]) for rec in records}
    assert ("reported", "invalid_parameter", False) in decisions
    assert ("list-items", "invalid_parameter", True) in decisions
    assert not any(SECRET in json.dumps(rec) for rec in records)
