#!/usr/bin/env python3
"""Runs the api-guard demo: the demo upstream and Envoy with envoy/envoy.yaml.

`make run` calls this from the repository root. Ctrl-C stops both processes
(only the ones started here). It exits non-zero, without starting anything, when a
port it needs is taken (a demo already running, say), and non-zero when Envoy does
not come up.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(HERE, "envoy.yaml")
# What envoy/envoy.yaml and the upstream listen on.
PORTS = {10000: "Envoy listener", 10001: "Envoy OpenAPI listener", 10443: "Envoy mTLS listener",
         9901: "Envoy admin", 8081: "demo upstream"}


def port_taken(port):
    """True if something accepts connections on 127.0.0.1:`port`, or it cannot be bound."""
    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_ready(url, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def mint(*args):
    out = subprocess.run([sys.executable, os.path.join(HERE, "mint_token.py"), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def curl_examples():
    base = "http://127.0.0.1:10000"
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    admin = mint("--sub", "root", "--shop", "s1", "--roles", "admin")
    expired = mint("--expires-in", "-600")
    other_aud = mint("--aud", "billing-api")
    inv_read = mint("--scope", "inventory:read")
    inv_write = mint("--scope", "inventory:read inventory:write")
    inv = "http://127.0.0.1:10001/inventory/v1"

    bound = mint("--bind-cert", "envoy/demo-pki/web.pem")
    mtls = "https://localhost:10443"
    pki = "--cacert envoy/demo-pki/ca.pem"
    cert = lambda name: f"--cert envoy/demo-pki/{name}.pem --key envoy/demo-pki/{name}.key"
    print(f"""
api-guard demo is up: Envoy {base} and 127.0.0.1:10001 (admin http://127.0.0.1:9901), upstream 127.0.0.1:8081
Tokens below were minted just now with envoy/demo-keys (make token ARGS="--help").

  CLERK={clerk}
  ADMIN={admin}
  EXPIRED={expired}
  OTHER_AUD={other_aud}
  INV_READ={inv_read}
  INV_WRITE={inv_write}

  BOUND={bound}
        (bound to envoy/demo-pki/web.pem: make token ARGS="--bind-cert envoy/demo-pki/web.pem")

Routes and rejections
  curl -i {base}/healthz                                   # 200, security headers added
  curl -i {base}/nope                                      # 404 problem+json (unmatched: deny)
  curl -i -X DELETE {base}/shops/s1/orders/1               # 405 with Allow: GET

Authentication and authorization
  curl -i {base}/shops/s1/orders/1                         # 401: no token
  curl -i -H "Authorization: Bearer $EXPIRED" {base}/shops/s1/orders/1    # 401 invalid_token (expired)
  curl -i -H "Authorization: Bearer $OTHER_AUD" {base}/shops/s1/orders/1  # 403: wrong audience
  curl -i -H "Authorization: Bearer $CLERK" {base}/shops/s2/orders/1      # 403: another shop (bind)
  curl -i -H "Authorization: Bearer $CLERK" -H "x-user-id: admin" {base}/shops/s1/orders/1
        # 200: the upstream sees x-user-id: alice (forged copy removed), no Authorization

mTLS peers (listener {mtls}, certificates in envoy/demo-pki; python3 envoy/demo_pki.py rewrites them)
  curl -i {pki} {cert("web")} {mtls}/internal/inventory        # 200: upstream sees x-peer-id: spiffe://demo.local/ns/shop/sa/web
  curl -i {pki} {cert("cron")} {mtls}/internal/inventory       # 200: matches spiffe://demo.local/ns/ops/*
  curl -i {pki} {cert("intruder")} {mtls}/internal/inventory   # 403: a valid certificate, identity not listed
  curl -i {base}/internal/inventory                        # 401: no client certificate on the plain listener
  curl -i -H "x-forwarded-client-cert: URI=spiffe://demo.local/ns/shop/sa/web" {base}/internal/inventory  # 401: headers never count

API keys (only the SHA-256 is configured; make api-key makes new ones)
  curl -i -H "x-api-key: demo-key-acme" {base}/partner/catalog    # 200: upstream sees x-api-key-id: acme, not the key
  curl -i -H "x-api-key: wrong" {base}/partner/catalog            # 401 invalid-token
  curl -i {base}/partner/catalog                                  # 401 missing-token

Certificate-bound token (route payments requires all: [mesh, bound])
  curl -i {pki} {cert("web")} -H "Authorization: Bearer $BOUND" {mtls}/internal/payments    # 200
  curl -i {pki} {cert("cron")} -H "Authorization: Bearer $BOUND" {mtls}/internal/payments   # 401: certificate binding failed
  curl -i {pki} {cert("web")} -H "Authorization: Bearer $CLERK" {mtls}/internal/payments    # 401: token has no cnf

Request validation (JSON Schema)
  curl -i -H "Authorization: Bearer $CLERK" -H 'content-type: application/json' -d '{{"sku":"book-1","qty":2}}' {base}/shops/s1/orders
        # 200: the upstream echoes the body it received
  curl -i -H "Authorization: Bearer $CLERK" -H 'content-type: application/json' -d '{{"sku":7,"qty":0,"x":1}}' {base}/shops/s1/orders
        # 400 with errors[]: instancePath + keyword; the upstream saw nothing
  curl -i -H "Authorization: Bearer $CLERK" -H 'content-type: text/plain' -d 'hi' {base}/shops/s1/orders   # 415

Response masking
  curl -s -H "Authorization: Bearer $CLERK" {base}/shops/s1/orders/1   # card ************1111, no ssn, hashed e-mail
  curl -s -H "Authorization: Bearer $ADMIN" {base}/shops/s1/orders/1   # admin: unmasked (AWS key still redacted)

Identifier cloaking (shop ids are tokens bound to the caller; the upstream sees real ids)
  curl -s -H "Authorization: Bearer $CLERK" {base}/shops             # ids are tokens, not s1 and s2
  SHOP=$(curl -s -H "Authorization: Bearer $CLERK" {base}/shops | python3 -c 'import json,sys; print(json.load(sys.stdin)["shops"][0]["id"])')
  curl -s -H "Authorization: Bearer $CLERK" {base}/shops/$SHOP/revenue   # 200: the upstream was asked for shop s1
  curl -i -H "Authorization: Bearer $CLERK" {base}/shops/s1/revenue      # 404: a raw id is not a token
  curl -i -H "Authorization: Bearer $ADMIN" {base}/shops/$SHOP/revenue   # 404: the token is the clerk's

Quota (5 per minute per caller)
  for i in $(seq 7); do curl -s -o /dev/null -w "%{{http_code}} " -H "Authorization: Bearer $CLERK" {base}/shops/s1/orders/1; done; echo
  curl -i -H "Authorization: Bearer $CLERK" {base}/shops/s1/orders/1   # 429 with Retry-After, RateLimit-*

Path normalisation
  curl -i --path-as-is '{base}/healthz/../shops/s1/orders/1'            # matched as /shops/s1/orders/1: 401

Report mode and the audit log (route shop-reports is in mode: report)
  curl -i {base}/beta/shops/s1/reports                                   # 200: would be 401, reported
  curl -i -H "Authorization: Bearer $CLERK" {base}/beta/shops/s1/reports # 200: would be 403 (not admin)
  # Each refusal, enforced or reported, prints a line like this in Envoy's log above:
  #   ... wasm log api-guard: api-guard audit: {{"route":"shop-reports","method":"GET",
  #   "path":"/beta/shops/{{shop}}/reports","status":403,"decision":"claims","enforced":false,...}}
  curl -s http://127.0.0.1:9901/stats | grep report                      # apiguard.route.shop-reports.report.*

Automated blocking (rule scanning: 50 undeclared paths a minute, then 429 everywhere for 10 min)
  for i in $(seq 51); do curl -s -o /dev/null {base}/probe-$i; done; curl -i {base}/healthz   # 429 blocked
  # (the block is on 127.0.0.1: Ctrl-C and `make run` again to lift it)

An API configured from its OpenAPI description (envoy/openapi-demo.yaml, on port 10001)
  curl -i {inv}/status                                                  # 200: public (security: [])
  curl -i -H "Authorization: Bearer $INV_READ" '{inv}/items?limit=5&tag=red,blue'   # 200
  curl -i -H "Authorization: Bearer $INV_READ" '{inv}/items?limit=500'  # 400 invalid-parameter (maximum)
  curl -i -H "Authorization: Bearer $INV_READ" '{inv}/items?debug=1'    # 400: undeclared query parameter
  curl -i -H "Authorization: Bearer $INV_READ" {inv}/items/ABC-0001.json  # 200: the {{sku}}.json route
  curl -i -H "Authorization: Bearer $INV_READ" {inv}/items/abc          # 400: sku fails its pattern
  curl -i -H "Authorization: Bearer $INV_READ" -H 'content-type: application/json' -d '{{"sku":"ABC-0001","name":"bolt","qty":3}}' {inv}/items
        # 403: creating needs the inventory:write scope
  curl -i -H "Authorization: Bearer $INV_WRITE" -H 'content-type: application/json' -d '{{"sku":"ABC-0001","name":"bolt","qty":-1}}' {inv}/items
        # 400 schema-violation: /qty minimum
  curl -i {inv}/admin                                                   # 404: not in the document
  # Regenerate after editing the document: make openapi-demo; the import itself:
  #   make -s openapi SPEC=envoy/openapi-demo.yaml

Metrics
  curl -s http://127.0.0.1:9901/stats/prometheus | grep apiguard

Ctrl-C stops Envoy and the upstream.
""", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    args = ap.parse_args()
    os.chdir(ROOT)
    if not os.path.exists(args.wasm):
        sys.exit(f"{args.wasm} is missing: run `make build`")
    taken = [f"127.0.0.1:{port} ({what})" for port, what in PORTS.items() if port_taken(port)]
    if taken:
        sys.exit("error: the demo cannot start, in use: " + ", ".join(taken) +
                 ". Is a `make run` still running? Stop it (Ctrl-C) or free the ports.")
    procs = []

    def stop(_signum=None, _frame=None, code=0):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        sys.exit(code)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "demo_upstream.py"), "--port", "8081"]))
    procs.append(subprocess.Popen([args.envoy, "-c", CONFIG, "--disable-hot-restart",
                                   "--concurrency", "2", "-l", "warning",
                                   "--component-log-level", "wasm:info"]))
    if not wait_ready("http://127.0.0.1:9901/ready", procs[1]):
        print("error: Envoy did not become ready (see its log above)", file=sys.stderr)
        stop(code=1)
    curl_examples()
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    print("error: a process exited; stopping", file=sys.stderr)
    stop(code=1)


if __name__ == "__main__":
    main()
