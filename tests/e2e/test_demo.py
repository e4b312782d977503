"""The demo configuration (envoy/envoy.yaml) itself, run end to end."""
import http.client
import json
import os
import ssl
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
            tls = chain.get("transport_socket", {}).get("typed_config", {}).get("common_tls_context")
            if tls:
                # Certificate files relative to the repository, wherever Envoy runs.
                for ref in (tls["tls_certificates"][0]["certificate_chain"],
                            tls["tls_certificates"][0]["private_key"],
                            tls["validation_context"]["trusted_ca"]):
                    ref["filename"] = os.path.join(ROOT, ref["filename"])
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


def listener_port(env, name):
    doc = json.loads(env.admin_get("/listeners?format=json"))
    for status in doc["listener_statuses"]:
        if status["name"] == name:
            return status["local_address"]["socket_address"]["port_value"]
    raise AssertionError(f"no listener {name}: {doc}")


def test_demo_openapi_listener_enforces_the_generated_routes():
    """The demo's second listener: the routes `make openapi-demo` generated from
    envoy/openapi-demo.yaml (tests/e2e/test_openapi.py checks they are current)."""
    from harness import http_request
    read = mint("--scope", "inventory:read")
    write = mint("--scope", "inventory:read inventory:write")
    item = json.dumps({"sku": "ABC-0001", "name": "bolt", "qty": 3}).encode()
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        port = listener_port(env, "openapi-demo")

        def status(method, path, headers=None, body=None):
            return http_request(port, method, path, headers, body).status
        assert status("GET", "/inventory/v1/status") == 200
        assert status("GET", "/inventory/v1/items?limit=5&tag=red,blue", read) == 200
        assert status("GET", "/inventory/v1/items") == 401
        assert status("GET", "/inventory/v1/items?limit=500", read) == 400
        assert status("GET", "/inventory/v1/items?debug=1", read) == 400
        assert status("GET", "/inventory/v1/items/ABC-0001.json", read) == 200
        assert status("GET", "/inventory/v1/items/abc", read) == 400
        assert status("POST", "/inventory/v1/items", {**read, "content-type": "application/json"}, item) == 403
        assert status("POST", "/inventory/v1/items", {**write, "content-type": "application/json"}, item) == 200
        bad = json.dumps({"sku": "ABC-0001", "name": "bolt", "qty": -1, "parts": [{"sku": "x"}]}).encode()
        assert status("POST", "/inventory/v1/items", {**write, "content-type": "application/json"}, bad) == 400
        assert status("PATCH", "/inventory/v1/items", read) == 405
        assert status("GET", "/inventory/v2/items", read) == 404


def test_demo_mtls_listener_peers_api_keys_and_bound_tokens():
    pki = os.path.join(ROOT, "envoy", "demo-pki")
    bound = mint("--bind-cert", os.path.join(pki, "web.pem"))
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        statuses = json.loads(env.admin_get("/listeners?format=json"))["listener_statuses"]
        port = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}

        def mtls(path, client, headers=None):
            ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
            ctx.load_cert_chain(os.path.join(pki, f"{client}.pem"), os.path.join(pki, f"{client}.key"))
            conn = http.client.HTTPSConnection("localhost", port["ingress-mtls"], context=ctx, timeout=10)
            try:
                conn.request("GET", path, headers=headers or {})
                return conn.getresponse().status
            finally:
                conn.close()

        assert mtls("/internal/inventory", "web") == 200
        assert env.upstream_requests()[-1]["headers"]["x-peer-id"] == "spiffe://demo.local/ns/shop/sa/web"
        assert mtls("/internal/inventory", "cron") == 200
        assert mtls("/internal/inventory", "intruder") == 403
        assert env.get("/internal/inventory").status == 401
        assert mtls("/internal/payments", "web", bound) == 200
        assert mtls("/internal/payments", "cron", bound) == 401
        assert mtls("/internal/payments", "web", clerk) == 401
        assert env.get("/partner/catalog", headers={"x-api-key": "demo-key-acme"}).status == 200
        seen = env.upstream_requests()[-1]["headers"]
        assert seen["x-api-key-id"] == "acme" and "x-api-key" not in seen
        assert env.get("/partner/catalog", headers={"x-api-key": "wrong"}).status == 401


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
