"""The demo configuration (envoy/envoy.yaml) itself, run end to end."""
import json
import os
import subprocess
import sys

import yaml

from harness import ROOT, WASM, poll, start_envoy


def demo_bootstrap(upstream_port):
    """envoy/envoy.yaml with kernel-chosen ports, the test upstream and the built module."""
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        doc = yaml.safe_load(f)
    doc["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in doc["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = 0
        for chain in listener["filter_chains"]:
            for nf in chain["filters"]:
                for hf in nf["typed_config"].get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.wasm":
                        hf["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = WASM
    for c in doc["static_resources"]["clusters"]:
        if c["name"] == "demo_upstream":
            ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ep["address"]["socket_address"]["port_value"] = upstream_port
    return doc


def test_demo_config_serves_and_exports_labelled_metrics():
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        r = env.get("/healthz")
        assert r.status == 200, r
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert env.request("DELETE", "/shops/s1/orders/1").status == 405
        assert env.get("/nope").status == 404
        # The demo keeps the default metrics_flush_ms (1 s): wait for the flush.
        prom = poll(lambda: env.admin_get("/stats/prometheus"),
                    lambda p: "apiguard_unmatched_not_found{} 1" in p, 5)
        assert 'apiguard_route_decision{route="health",decision="allowed"} 1' in prom, prom[-2000:]
        assert 'apiguard_route_decision{route="get-order",decision="method"} 1' in prom
        assert "apiguard_unmatched_not_found{} 1" in prom


def mint(*args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "mint_token.py"), *args],
                         capture_output=True, text=True, check=True)
    return {"authorization": "Bearer " + out.stdout.strip()}


def test_demo_protections_with_make_token():
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    admin = mint("--sub", "root", "--shop", "s1", "--roles", "admin")
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        assert env.get("/shops/s1/orders/1").status == 401
        assert env.get("/shops/s1/orders/1", headers=mint("--expires-in", "-600")).status == 401
        assert env.get("/shops/s1/orders/1", headers=mint("--aud", "billing-api")).status == 403
        assert env.get("/shops/s2/orders/1", headers=clerk).status == 403
        r = env.get("/shops/s1/orders/1", headers={**clerk, "x-user-id": "admin"})
        assert r.status == 200, r
        seen = env.upstream_requests()[-1]["headers"]
        assert seen["x-user-id"] == "alice" and "authorization" not in seen
        doc = r.json()
        assert doc["card"]["number"] == "************1111" and "ssn" not in doc["customer"]
        assert "AKIAIOSFODNN7EXAMPLE" not in doc["notes"]
        doc = env.get("/shops/s1/orders/1", headers=admin).json()
        assert doc["card"]["number"] == "4111111111111111" and doc["customer"]["ssn"] == "123-45-6789"
        assert "AKIAIOSFODNN7EXAMPLE" not in doc["notes"]
        json_body = {**clerk, "content-type": "application/json"}
        env.recorder.clear()
        r = env.request("POST", "/shops/s1/orders", headers=json_body, body=b'{"sku":7,"qty":0}')
        assert r.status == 400 and {e["keyword"] for e in r.json()["errors"]} >= {"type", "minimum"}
        assert env.upstream_requests() == []
        r = env.request("POST", "/shops/s1/orders", headers=json_body, body=b'{"sku":"b","qty":2}')
        assert r.status == 200 and env.upstream_requests()[-1]["body"] == b'{"sku":"b","qty":2}'
        statuses = [env.get("/shops/s1/orders/1", headers=clerk).status for _ in range(5)]
        assert statuses == [200, 200, 200, 200, 429], statuses


def test_demo_report_route_and_audit_lines():
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        assert env.get("/beta/shops/s1/reports").status == 200
        assert env.get("/beta/shops/s1/reports", headers=clerk).status == 200
        assert env.get("/shops/s1/orders/1").status == 401
        assert len(env.upstream_requests()) == 2

        def audit():
            return [json.loads(ln.split("api-guard audit: ", 1)[1])
                    for ln in env.log().splitlines() if "api-guard audit: " in ln]
        recs = poll(audit, lambda rs: len(rs) >= 3, 5)
        got = [(r["route"], r["decision"], r["status"], r["enforced"]) for r in recs]
        assert got == [("shop-reports", "missing", 401, False), ("shop-reports", "claims", 403, False),
                       ("get-order", "missing", 401, True)], got
        assert recs[1]["caller_kind"] == "sub" and "alice" not in json.dumps(recs)
        prom = poll(lambda: env.admin_get("/stats"),
                    lambda p: "apiguard.route.shop-reports.report.claims: 1" in p, 5)
        assert "apiguard.route.shop-reports.report.missing: 1" in prom, prom



def test_demo_blocks_a_scanner():
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        statuses = [env.get(f"/probe-{i}").status for i in range(51)]
        assert statuses == [404] * 50 + [429], statuses
        r = env.get("/healthz")
        assert r.status == 429 and r.json()["type"].endswith(":blocked"), r
        prom = poll(lambda: env.admin_get("/stats/prometheus"),
                    lambda p: 'apiguard_blocking_started{rule="scanning"} 1' in p, 5)
        assert 'apiguard_blocking_started{rule="scanning"} 1' in prom, prom[-3000:]
        assert 'apiguard_blocking_blocked{rule="scanning"} 1' in prom


def test_demo_cloaks_shop_ids():
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    admin = mint("--sub", "root", "--shop", "s1", "--roles", "admin")
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        r = env.get("/shops", headers=clerk)
        assert r.status == 200, r
        ids = [s["id"] for s in r.json()["shops"]]
        assert len(ids) == 2 and not {"s1", "s2"} & set(ids), ids
        r = env.get(f"/shops/{ids[0]}/revenue", headers=clerk)
        assert r.status == 200 and r.json()["shop"] == "s1", r
        assert env.upstream_requests()[-1]["path"] == "/shops/s1/revenue"
        assert env.get(f"/shops/{ids[1]}/revenue", headers=clerk).status == 403  # bind: s2
        undeclared = env.get("/nope")
        for headers, path in [(clerk, "/shops/s1/revenue"), (admin, f"/shops/{ids[0]}/revenue")]:
            r = env.get(path, headers=headers)
            assert (r.status, r.body) == (404, undeclared.body), r
