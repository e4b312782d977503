#!/usr/bin/env python3
"""api-guard benchmark: `make bench` (or `make bench ARGS=--quick`).

For every scenario, four front Envoys run side by side, each `--concurrency 1` and
pinned to CPU 0: no filter; a no-op proxy-wasm filter (bench/noop, built here: the
floor any Wasm filter pays in V8); Envoy's native filters doing the same job
(jwt_authn with its JWT cache, local_ratelimit, buffer); api-guard. The upstream is a
second Envoy (direct_response routes behind a buffer filter, so body scenarios reach
a real upstream), pinned with wrk to CPU 1. Loopback only.

Per scenario and configuration: a functional probe (the request measured succeeds;
the protection really runs), a warm-up, max throughput (wrk, 32 connections; the
best of interleaved rounds), Envoy CPU time per request (/proc/<pid>/stat), latency
at a fixed rate below saturation (wrk with paced connections, same rate for the four
configurations), VmRSS. Results: bench/results/latest.{md,svg,json}.

Every wait has a deadline; the whole run stops starting scenarios after --budget
seconds and reports what it measured.
"""
import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)
import count  # noqa: E402
import fixtures  # noqa: E402
import harness  # noqa: E402  (bootstrap(), wasm_filter(), http_request(), wait_ready())
import report  # noqa: E402

WORK = os.path.join(HERE, "work")
RESULTS = os.path.join(HERE, "results")
CONFIGS = ("none", "noop", "native", "ours")
HOSTCALL_PROBE_CALLS = 50  # calls per request in a --hostcalls probe
# The floor: the probe module (bench/hostcalls) reading `:path` once per request and
# nothing else, the least any filter that routes on the path does.
FLOOR_PROBE = "get_header 1"
ENVOY_CPU, LOAD_CPU = 0, 1
THROUGHPUT_CONNECTIONS = 32
PACE_PERIOD_MS = 20  # mean pause per paced connection (uniform 10..30 ms)
DEFAULT_WASM_OPT_FLAGS = ("-Oz -ocimfs 1000 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals "
                          "--enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_JSON_PREFIXES = ("/api/export", "/api/shops/")
UPSTREAM = None  # the upstream EnvoyProc, set by main()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if PINNING else []


PINNING = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


# -- building the no-op module ------------------------------------------------------

def build_module(name):
    """bench/<name> -> bench/work/<name>.wasm, built and shrunk like the filter: `noop`
    (the floor) and `hostcalls` (host-call probe and signature check alone)."""
    manifest = os.path.join(HERE, name, "Cargo.toml")
    target_dir = os.path.join(WORK, f"{name}-target")
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1",
                    "--manifest-path", manifest, "--target-dir", target_dir],
                   check=True, timeout=900, cwd=ROOT)
    raw = os.path.join(target_dir, "wasm32-wasip1", "release", f"{name}.wasm")
    out = os.path.join(WORK, f"{name}.wasm")
    if shutil.which("wasm-opt"):
        flags = os.environ.get("WASM_OPT_FLAGS", DEFAULT_WASM_OPT_FLAGS).split()
        subprocess.run(["wasm-opt", *flags, raw, "-o", out], check=True, timeout=300)
    else:
        shutil.copy(raw, out)
    return out


# -- Envoy processes ----------------------------------------------------------------

class EnvoyProc:
    """One Envoy (`--concurrency 1`, pinned), its admin address and listener port."""

    def __init__(self, envoy, name, doc, cpu, rundir, wrap=()):
        self.name = name
        cfg = os.path.join(rundir, f"{name}.json")
        with open(cfg, "w") as f:
            json.dump(doc, f)
        self.admin_path = os.path.join(rundir, f"{name}.admin")
        # An earlier Envoy of the same name left its address: never wait on that one.
        if os.path.exists(self.admin_path):
            os.remove(self.admin_path)
        self.log_path = os.path.join(rundir, f"{name}.log")
        with open(self.log_path, "w") as logf:
            self.proc = subprocess.Popen(
                pin(cpu) + list(wrap) + [envoy, "-c", cfg, "--disable-hot-restart", "--concurrency", "1",
                            "--admin-address-path", self.admin_path, "-l", "warning",
                            # Wasm at info, as deployed: audit records are written.
                            "--component-log-level", "wasm:info"],
                stdout=logf, stderr=subprocess.STDOUT)
        self.admin = None
        self.port = None

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, deadline):
        try:
            self.admin, self.port = harness.wait_ready(self.proc, self.admin_path, deadline, self.tail)
        except RuntimeError as e:
            raise RuntimeError(f"{self.name}: {e}") from None

    def admin_get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.read().decode()

    def stats(self, regex):
        doc = json.loads(self.admin_get(f"/stats?format=json&filter={urllib.parse.quote(regex)}"))
        return {s["name"]: s["value"] for s in doc.get("stats", []) if "value" in s}

    def cpu_seconds(self):
        """CPU time of all the process's threads: schedstat (ns) where the kernel has
        it, else utime + stime from /proc/<pid>/stat (clock ticks)."""
        try:
            total = 0
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            return total / 1e9
        except (OSError, ValueError, IndexError):
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def tail(self, n=40):
        return harness.tail_file(self.log_path, n)

    def stop(self):
        harness.stop_process(self.proc)


def upstream_bootstrap(big_json_path):
    """The upstream: direct_response routes (10 KB JSON for the masking paths, a small
    JSON otherwise), behind a buffer filter so a POST is answered after its body."""
    json_header = [{"header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    routes = [{"match": {"prefix": p},
               "direct_response": {"status": 200, "body": {"filename": big_json_path}},
               "response_headers_to_add": json_header} for p in BIG_JSON_PREFIXES]
    routes.append({"match": {"prefix": "/"},
                   "direct_response": {"status": 200, "body": {"inline_string": '{"ok":true}'}},
                   "response_headers_to_add": json_header})
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"max_direct_response_body_size_bytes": 1 << 20,
                         "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {"name": "envoy.filters.http.buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 1 << 20}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": manager}]}]}]},
    }


# -- native filters -----------------------------------------------------------------

def native_jwt(jwk):
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": {
            "issuer": fixtures.ISSUER, "audiences": [fixtures.AUDIENCE],
            "local_jwks": {"inline_string": json.dumps({"keys": [jwk]})},
            "forward": True,
            "jwt_cache_config": {"jwt_cache_size": 1024}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]}}


def native_ratelimit():
    pct = {"numerator": 100, "denominator": "HUNDRED"}
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "quota",
        "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "quota_enabled", "default_value": pct},
        "filter_enforced": {"runtime_key": "quota_enforced", "default_value": pct},
        # api-guard sends RateLimit-* on admitted responses by default: same work here.
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03"}}


def native_global_ratelimit():
    """Envoy's own rate-limit filter asking the same rate-limit service."""
    return {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "apiguard", "failure_mode_deny": True, "timeout": "1s",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                               "transport_api_version": "V3"},
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03"}}


def native_global_route():
    """The route of the native configuration, with its descriptor: route=items."""
    return {"route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"},
        "route": {"cluster": "upstream", "timeout": "10s", "rate_limits": [{"actions": [
            {"generic_key": {"descriptor_key": "route", "descriptor_value": "items"}}]}]}}]}]}}


# The rate-limit service's limits for the global scenario: never reached.
RLS_LIMITS = [{"namespace": "apiguard", "max_value": 1000000000, "seconds": 60,
               "conditions": ["descriptors[0].route == 'items'"], "variables": []}]


HEADERS_BY_ENVOY = report.HEADERS_BY_ENVOY


def envoy_security_headers():
    """HTTP connection manager overrides that set api-guard's default security headers
    natively, as docs/configuration.md shows (local replies aside: the bench's are
    all 200)."""
    add = [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
           for k, v in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                        ("referrer-policy", "no-referrer"))]
    return {"route_config": {"virtual_hosts": [{
        "name": "all", "domains": ["*"], "response_headers_to_add": add,
        "response_headers_to_remove": ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]}]}}


def native_buffer():
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 65536}}


# -- scenarios ----------------------------------------------------------------------

class Scenario:
    def __init__(self, name, title, method, path, ours, native, native_note="", headers=None,
                 body=None, token=None, tokens_file=None, checks=(), target=None, configs=CONFIGS,
                 wasm=None, calls=None, sigonly=None, floor=None, extra=None, native_hcm=None,
                 extra_hcm=None, needs_rls=False):
        self.name, self.title = name, title
        self.method, self.path = method, path
        self.headers = dict(headers or {})
        self.body = body
        self.token, self.tokens_file = token, tokens_file
        self.ours, self.native, self.native_note = ours, native, native_note
        # (configs, what is checked, request overrides, expected status, check fn, soft)
        self.checks = list(checks)
        self.target = target
        self.configs = configs
        self.wasm = wasm  # a module measured in place of api-guard (--hostcalls)
        self.calls = calls  # host calls per request made by that module
        # Plugin configuration of the probe that checks this scenario's signature alone.
        self.sigonly = sigonly
        # Plugin configuration of the probe that does the least a routing filter must
        # (read `:path`): the floor any such filter pays, next to the no-op filter.
        self.floor = floor
        # More api-guard configurations measured beside `ours`: {config name: plugin config}.
        self.extra = dict(extra or {})
        self.configs = tuple(configs) + tuple(self.extra)
        # The native configuration's HTTP connection manager overrides (route actions).
        self.native_hcm = native_hcm
        # The same for configurations of `extra`: {config name: overrides}.
        self.extra_hcm = dict(extra_hcm or {})
        # Needs the rate-limit service (and Redis) on the load CPU; main() starts them
        # and fills `clusters`.
        self.needs_rls = needs_rls
        self.clusters = []

    def add_extra(self, name, ours, hcm=None):
        """One more api-guard configuration measured beside `ours`."""
        self.extra[name] = ours
        if hcm is not None:
            self.extra_hcm[name] = hcm
        self.configs += (name,)

    def hcm(self, cfg):
        """The HTTP connection manager overrides of configuration `cfg`, if any."""
        return self.native_hcm if cfg == "native" else self.extra_hcm.get(cfg)

    def request_headers(self):
        h = dict(self.headers)
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        if self.body is not None:
            h.setdefault("content-type", "application/json")
        return h


def provider(jwk):
    return {"issuer": fixtures.ISSUER, "audiences": [fixtures.AUDIENCE],
            "jwks": {"inline": {"keys": [jwk]}}}


def masked(resp):
    doc = json.loads(resp.body)
    first = doc["orders"][0]
    if first["card"]["number"] != "************0000" or "ssn" in first["customer"]:
        return f"response not masked: {json.dumps(first)[:200]}"
    return None


def not_masked(resp):
    doc = json.loads(resp.body)
    return None if "ssn" in doc["orders"][0]["customer"] else "upstream body unexpected"


def cloaked(resp):
    doc = json.loads(resp.body)
    first = doc["orders"][0]
    if first["id"] != fixtures.cloak_token("order", "o-0000"):
        return f"order ids not cloaked: {json.dumps(first)[:200]}"
    return masked(resp)


def has_header(name):
    def check(resp):
        return None if name in resp.headers else f"no {name} header: {resp.headers}"
    return check


def diagnostic_scenarios(keys, token_files):
    """`--diagnose`: api-guard variants next to the no-op filter, to attribute cost
    (an ablation profile: V8 JIT frames are not visible to perf in Envoy builds)."""
    jwk = fixtures.public_jwk(keys, "ES256")
    off = {"enabled": False}
    items = {"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}}
    two = ("noop", "floor", "ours")
    limit = {"limit": 1000000000, "window_seconds": 1}
    scenarios = [
        Scenario("diag-open", "unprotected route, default configuration (as `open`)", "GET", "/api/items/42",
                 ours={"routes": [items]}, native=None, configs=two),
        Scenario("diag-open-nosec", "unprotected route, security headers off", "GET", "/api/items/42",
                 ours={"routes": [items], "security_headers": off}, native=None, configs=two),
        Scenario("diag-open-unmatched-allow", "no route matches, unmatched: allow (path normalisation only)",
                 "GET", "/api/items/42", ours={"routes": [dict(items, match={"path": "/other"})],
                                               "unmatched": "allow", "security_headers": off},
                 native=None, configs=two),
        Scenario("diag-jwt-es256-repeat-nosec", "JWT ES256 repeated token, security headers off", "GET",
                 "/api/orders/7", token=fixtures.first_token(token_files["ES256"]), native=None, configs=two,
                 ours={"providers": {"idp": provider(jwk)}, "security_headers": off,
                       "routes": [{"name": "orders", "match": {"path": "/api/orders/{id}", "methods": ["GET"]},
                                   "auth": {"requires": "idp"}}]}),
        Scenario("diag-quota-nosec", "quota, security headers off", "GET", "/api/items/42", native=None,
                 configs=two, ours={"routes": [dict(items, quota=dict(limit))], "security_headers": off}),
        Scenario("diag-quota-nosec-nohdr", "quota, security headers and RateLimit headers off", "GET",
                 "/api/items/42", native=None, configs=two,
                 ours={"routes": [dict(items, quota=dict(limit, headers_on_success=False))],
                       "security_headers": off}),
        Scenario("diag-mask-10kb-nomatch", "10 KB response held and parsed, no rule matches", "GET",
                 "/api/export/orders", native=None, configs=two,
                 ours={"routes": [{"name": "export", "match": {"path": "/api/export/orders", "methods": ["GET"]},
                                   "response": {"mask": [{"path": "$.nothing", "action": "remove"}]}}],
                       "security_headers": off}),
    ]
    for sc in scenarios:
        sc.floor = FLOOR_PROBE
    return scenarios


def hostcall_scenarios(probe_wasm):
    """`--hostcalls`: the price of one host call of each kind in V8 (the probe makes
    HOSTCALL_PROBE_CALLS of them per request; the difference to the no-op filter, divided)."""
    kinds = {
        "get_header": "read one request header (proxy_get_header_map_value)",
        "get_headers": "read the request header map (proxy_get_header_map_pairs)",
        "set_header": "replace one response header (proxy_replace_header_map_value)",
        "add_headers": "set distinct new response headers, 8 names (proxy_replace_header_map_value)",
        "remove_absent": "remove response headers that are absent, 8 names (proxy_remove_header_map_value)",
        "set_pairs": "read the response header map and write it back (get + set_header_map_pairs)",
        "metric": "increment a counter (proxy_increment_metric)",
        "time": "read the clock (proxy_get_current_time_nanoseconds)",
        "shared_get": "read a shared-data key (proxy_get_shared_data)",
    }
    n = HOSTCALL_PROBE_CALLS
    return [Scenario(f"hostcall-{k}", f"{n} calls per request: {title}", "GET", "/api/items/42",
                     ours=f"{k} {n}", native=None, configs=("noop", "ours"), wasm=probe_wasm, calls=n)
            for k, title in kinds.items()]


def signature_only(keys, alg, token):
    """Probe configuration that checks `token`'s signature alone (bench/hostcalls)."""
    jwk = fixtures.public_jwk(keys, alg)
    header, payload, sig = token.split(".")
    if alg == "ES256":
        key = fixtures.b64u(b"\x04" + base64.urlsafe_b64decode(jwk["x"] + "==")
                            + base64.urlsafe_b64decode(jwk["y"] + "=="))
    elif alg == "RS256":
        key = f"{jwk['n']}:{jwk['e']}"
    else:
        key = jwk["x"] if alg == "EdDSA" else jwk["k"]
    return f"verify {alg} {key} {header}.{payload} {sig}"


def build_scenarios(keys, token_files):
    small, large = fixtures.order_body(615), fixtures.order_body(10240)
    bad = fixtures.invalid_order_body()
    jwk = {alg: fixtures.public_jwk(keys, alg) for alg in fixtures.ALGS}
    limit = {"limit": 1000000000, "window_seconds": 1}
    out = []

    # Beside the default configuration, the one docs/configuration.md gives for leaving
    # the security headers to Envoy ("Leaving them to Envoy"): the same headers on
    # every response, written natively instead of by seven host calls.
    open_routes = [{"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}}]
    out.append(Scenario(
        "open", "route without protections", "GET", "/api/items/42",
        ours={"routes": open_routes},
        native=None, native_note="nothing to do natively",
        checks=[({"ours"}, "an undeclared path is refused", {"path": "/api/nothing-here"}, 404, None, False),
                ({"ours", HEADERS_BY_ENVOY}, "the security headers are set", {}, 200,
                 has_header("x-frame-options"), False)],
        target=("ratio_noop", 0.95), configs=CONFIGS + ("floor",), floor=FLOOR_PROBE,
        extra={HEADERS_BY_ENVOY: {"routes": open_routes, "security_headers": {"enabled": False}}},
        extra_hcm={HEADERS_BY_ENVOY: envoy_security_headers()}))

    # The audit log's cost: the open route again with a record per request
    # (`records: all`), read over the open route (`records: off`).
    out.append(Scenario(
        "audit-all", "route without protections, audit records: all", "GET", "/api/items/42",
        ours={"routes": [{"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}}],
              "audit": {"records": "all", "pseudonym_key": "bench-pseudonym-key-0123456789"}},
        native=None, native_note="nothing to do natively",
        checks=[({"ours"}, "an undeclared path is refused", {"path": "/api/nothing-here"}, 404, None, False)]))

    # Automated blocking: four rules on the open route (each reads its block slot
    # per request; events are rare), then a blocked caller (every request 429).
    items = {"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}}
    four = [{"name": "guessing", "count": "auth_failures", "max": 20, "window_seconds": 60, "block_seconds": 300},
            {"name": "scanning", "count": "not_found", "max": 50, "window_seconds": 60, "block_seconds": 600},
            {"name": "walking", "count": "distinct_param", "param": "id", "routes": ["items"],
             "max": 1000, "window_seconds": 60, "block_seconds": 900},
            {"name": "stuffing", "count": "status", "statuses": [401], "routes": ["items"],
             "max": 10, "window_seconds": 300, "block_seconds": 900}]
    salt = {"key_salt": "bench-blocking-salt-0123456789"}
    out.append(Scenario(
        "blocking-4-rules", "route without protections, four blocking rules (by ip)", "GET", "/api/items/42",
        ours={"routes": [items], "quota_settings": salt, "blocking": {"rules": four}},
        native=None, native_note="nothing to do natively",
        checks=[({"ours"}, "an undeclared path is refused", {"path": "/api/nothing-here"}, 404, None, False)]))
    caught = [{"name": "caught", "count": "not_found", "by": "header:x-bench-caller", "max": 1,
               "window_seconds": 3600, "block_seconds": 86400}]
    out.append(Scenario(
        "blocking-blocked", "a blocked caller: every request refused with 429 (wrk counts them as non-2xx)",
        "GET", "/api/items/42", headers={"x-bench-caller": "mallory"},
        ours={"routes": [items], "quota_settings": salt, "blocking": {"rules": four + caught}},
        native=None, native_note="nothing to do natively",
        checks=[({"ours"}, "an undeclared path is counted", {"path": "/api/nothing-here"}, 404, None, False),
                ({"ours"}, "the next one starts the block", {"path": "/api/nothing-here"}, 429, None, False),
                ({"ours"}, "the caller is blocked", {}, 429, None, False)]))

    for alg in fixtures.ALGS:
        for fresh in (False, True):
            ours = {"providers": {"idp": provider(jwk[alg])},
                    "routes": [{"name": "orders", "match": {"path": "/api/orders/{id}", "methods": ["GET"]},
                                "auth": {"requires": "idp"}}]}
            token = fixtures.first_token(token_files[alg])
            out.append(Scenario(
                f"jwt-{alg.lower()}-{'fresh' if fresh else 'repeat'}",
                f"JWT {alg}, {'fresh token per request' if fresh else 'repeated token'}",
                "GET", "/api/orders/7", ours=ours, native=[native_jwt(jwk[alg])],
                token=token, tokens_file=token_files[alg] if fresh else None,
                checks=[({"ours", "native"}, "a request without token is refused", {"headers": {}}, 401, None, False)],
                target=(("ratio_native", 0.80) if fresh and alg in ("ES256", "RS256") else
                        ("ratio_native", 0.85) if alg == "ES256" else None),
                configs=(CONFIGS + ("sigonly",) if fresh else
                         CONFIGS + ("floor",) if alg == "ES256" else CONFIGS),
                sigonly=signature_only(keys, alg, token) if fresh else None,
                # The repeated token's target next to the least any Wasm filter that
                # routes on the path pays (it does not even read the token).
                floor=FLOOR_PROBE if alg == "ES256" and not fresh else None))

    out.append(Scenario(
        "quota", "quota (limit never reached)", "GET", "/api/items/42",
        ours={"routes": [{"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]},
                          "quota": dict(limit)}]},
        native=[native_ratelimit()],
        checks=[({"ours"}, "the quota counts", {}, 200, has_header("ratelimit-limit"), False),
                ({"native"}, "the rate limiter counts", {}, 200, has_header("x-ratelimit-limit"), False)],
        target=("added_us", 3)))

    # A global quota: the same limit counted by the rate-limit service (tests/rls,
    # Redis) on the load CPU, one gRPC round trip per request; beside it api-guard
    # with the same quota local (`local`), and Envoy's own rate-limit filter asking
    # the same service (`native`).
    items = {"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]}}
    out.append(Scenario(
        "quota-global", "global quota (rate-limit service over Redis, limit never reached)",
        "GET", "/api/items/42",
        ours={"rate_limit_service": {"cluster": "ratelimit", "domain": "apiguard", "timeout_ms": 1000},
              "routes": [dict(items, quota=dict(limit, scope="global", window_seconds=60))]},
        extra={"local": {"routes": [dict(items, quota=dict(limit, window_seconds=60))]}},
        native=[native_global_ratelimit()], native_hcm=native_global_route(),
        native_note="Envoy's ratelimit filter asking the same service",
        checks=[({"ours"}, "the service answers", {}, 200, has_header("ratelimit-limit"), False)],
        needs_rls=True))

    # Parameter checks: a path, two query and a header parameter, typed and
    # validated at request headers, undeclared query parameters refused.
    out.append(Scenario(
        "params", "parameter checks (path, 3 query incl. an array, 1 header; additional_query: deny)",
        "GET", "/api/items/42?limit=10&tag=a,b&active=true",
        headers={"x-correlation-id": "0b7e4a5c-1f2d-4c3b-9a8e-7d6c5b4a3f21"},
        ours={"routes": [{"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]},
                          "request": {"additional_query": "deny", "parameters": [
                              {"in": "path", "name": "id", "schema": {"type": "integer", "minimum": 1}},
                              {"in": "query", "name": "limit", "schema": {"type": "integer", "maximum": 100}},
                              {"in": "query", "name": "tag", "schema": {
                                  "type": "array", "maxItems": 5,
                                  "items": {"type": "string", "pattern": "^[a-z]{1,16}$"}}},
                              {"in": "query", "name": "active", "schema": {"type": "boolean"}},
                              {"in": "header", "name": "x-correlation-id", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}}]}}]},
        native=None, native_note="Envoy has no native parameter validation",
        checks=[({"ours"}, "a parameter over its maximum is refused",
                 {"path": "/api/items/42?limit=1000"}, 400, None, False),
                ({"ours"}, "an undeclared query parameter is refused",
                 {"path": "/api/items/42?debug=1"}, 400, None, False)]))

    for name, body, target in (("schema-615b", small, 10), ("schema-10kb", large, 130)):
        out.append(Scenario(
            name, f"schema validation, {len(body)} B body", "POST", "/api/orders", body=body,
            ours={"routes": [{"name": "create", "match": {"path": "/api/orders", "methods": ["POST"]},
                              "request": {"content_types": ["application/json"], "max_body_bytes": 65536,
                                          "schema": fixtures.ORDER_SCHEMA}}]},
            native=[native_buffer()], native_note="buffer only: Envoy has no JSON Schema filter",
            checks=[({"ours"}, "an invalid body is refused (this build does not validate request bodies)",
                     {"body": bad}, 400, None, False)],
            target=("added_us", target)))

    out.append(Scenario(
        "mask-10kb", "masking a 10 KB JSON response", "GET", "/api/export/orders",
        ours={"routes": [{"name": "export", "match": {"path": "/api/export/orders", "methods": ["GET"]},
                          "response": {"mask": fixtures.MASK_RULES}}]},
        native=None, native_note="Envoy has no native masking filter",
        checks=[({"ours"}, "the response is masked", {}, 200, masked, False),
                ({"none"}, "the upstream sends unmasked data", {}, 200, not_masked, False)],
        target=("added_us", 130)))

    # Identifier cloaking: the masking scenario plus a token for each order id (how
    # much one cloaked field costs), and one path parameter decloaked per request.
    cloak_key = base64.b64encode(fixtures.CLOAK_KEY).decode()
    orders = len(json.loads(fixtures.orders_response())["orders"])
    out.append(Scenario(
        "cloak-10kb", f"masking a 10 KB JSON response and cloaking its {orders} order ids",
        "GET", "/api/export/orders",
        ours={"cloak_key": cloak_key,
              "routes": [{"name": "export", "match": {"path": "/api/export/orders", "methods": ["GET"]},
                          "response": {"mask": fixtures.CLOAK_RULES}}]},
        native=None, native_note="Envoy has no native masking filter",
        checks=[({"ours"}, "the response is masked and its ids are tokens", {}, 200, cloaked, False)]))
    out.append(Scenario(
        "cloak-param", "route with one cloaked path parameter (decrypted, checked, path rewritten)",
        "GET", f"/api/items/{fixtures.cloak_token('item', 42)}",
        ours={"cloak_key": cloak_key,
              "routes": [{"name": "items", "match": {"path": "/api/items/{id}", "methods": ["GET"]},
                          "cloak": {"params": {"id": "item"}}}]},
        native=None, native_note="nothing to do natively",
        checks=[({"ours"}, "a raw id is refused", {"path": "/api/items/42"}, 404, None, False)]))

    out.append(Scenario(
        "all", "everything on one route (ES256 repeated token, claims, bind, quota, 615 B schema, 10 KB masking)",
        "POST", "/api/shops/s1/orders", body=small, token=fixtures.first_token(token_files["ES256"]),
        ours={"providers": {"idp": provider(jwk["ES256"])},
              "routes": [{"name": "all", "match": {"path": "/api/shops/{shop}/orders", "methods": ["POST"]},
                          "auth": {"requires": "idp", "claims": {"roles": {"any_of": ["clerk", "admin"]}},
                                   "bind": {"shop": "shop_id"}},
                          "quota": dict(limit, by="claim:sub"),
                          "request": {"content_types": ["application/json"], "max_body_bytes": 65536,
                                      "schema": fixtures.ORDER_SCHEMA},
                          "response": {"mask": fixtures.MASK_RULES}}]},
        native=[native_jwt(jwk["ES256"]), native_ratelimit(), native_buffer()],
        native_note="jwt_authn + local_ratelimit + buffer: no claims/bind, schema or masking natively",
        checks=[({"ours"}, "the response is masked", {}, 200, masked, False),
                ({"ours", "native"}, "a request without token is refused", {"headers": {}}, 401, None, False),
                ({"ours"}, "another shop's path is refused (bind)", {"path": "/api/shops/s2/orders"}, 403,
                 None, False),
                ({"ours"}, "an invalid body is refused (this build does not validate request bodies: "
                 "measured without schema validation)", {"body": bad}, 400, None, True)]))
    return out


# -- load generation ----------------------------------------------------------------

def lua_string(s):
    return json.dumps(s)  # ASCII-only JSON string literals are valid Lua literals


def write_script(sc, out_json, path, pace_ms=None):
    """A wrk Lua script: the scenario's request (rotating tokens if fresh), optional
    pacing, and a done() that writes the summary as JSON."""
    lines = [f"math.randomseed({random.randrange(1 << 30)})",
             f"wrk.method = {lua_string(sc.method)}", f"wrk.path = {lua_string(sc.path)}",
             "local headers = {}"]
    for k, v in sc.request_headers().items():
        lines.append(f"headers[{lua_string(k)}] = {lua_string(v)}")
    if sc.body is not None:
        body_path = os.path.join(WORK, f"body-{sc.name}.json")
        with open(body_path, "wb") as f:
            f.write(sc.body)
        lines += [f"local bf = io.open({lua_string(body_path)}, 'rb')",
                  "wrk.body = bf:read('*a')", "bf:close()"]
    lines.append("for k, v in pairs(headers) do wrk.headers[k] = v end")
    if sc.tokens_file:
        lines += ["local tokens = {}",
                  f"for line in io.lines({lua_string(sc.tokens_file)}) do tokens[#tokens + 1] = line end",
                  "local i = math.random(#tokens)",
                  "request = function()",
                  "  i = i % #tokens + 1",
                  "  headers['authorization'] = 'Bearer ' .. tokens[i]",
                  "  return wrk.format(nil, nil, headers, wrk.body)",
                  "end"]
    if pace_ms:
        lines.append(f"delay = function() return math.random({pace_ms // 2}, {pace_ms * 3 // 2}) end")
    lines += [
        "done = function(summary, latency, requests)",
        f"  local f = io.open({lua_string(out_json)}, 'w')",
        "  local e = summary.errors",
        "  f:write(string.format('{\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,"
        "\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50\":%d,\"p99\":%d,\"mean\":%.1f}',",
        "    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,",
        "    latency:percentile(50), latency:percentile(99), latency.mean))",
        "  f:close()",
        "end"]
    path_lua = os.path.join(WORK, f"{path}.lua")
    with open(path_lua, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path_lua


def cpu_times():
    """/proc/stat busy and total jiffies per CPU."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                vals = [int(v) for v in vals]
                out[int(name[3:])] = (sum(vals) - vals[3] - vals[4], sum(vals))
    return out


def run_wrk(sc, envoy, seconds, connections, tag, pace_ms=None):
    out_json = os.path.join(WORK, f"wrk-{tag}.json")
    if os.path.exists(out_json):
        os.remove(out_json)
    script = write_script(sc, out_json, f"wrk-{tag}", pace_ms)
    cmd = pin(LOAD_CPU) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s",
                           "-s", script, f"http://127.0.0.1:{envoy.port}{sc.path}"]
    up0, ch0 = UPSTREAM.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, sys0, t0 = envoy.cpu_seconds(), cpu_times(), time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    cpu1, sys1, t1 = envoy.cpu_seconds(), cpu_times(), time.time()
    up1, ch1 = UPSTREAM.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0 or not os.path.exists(out_json):
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    with open(out_json) as f:
        res = json.load(f)
    n = max(res["requests"], 1)
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["cpu_us"] = (cpu1 - cpu0) * 1e6 / n
    res["envoy_util"] = (cpu1 - cpu0) / (t1 - t0)
    # The load side (CPU 1): upstream Envoy and wrk per request, to show it has headroom.
    res["upstream_cpu_us"] = (up1 - up0) * 1e6 / n
    res["wrk_cpu_us"] = (ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime) * 1e6 / n
    res["cpu_busy"] = {c: (sys1[c][0] - sys0[c][0]) / max(sys1[c][1] - sys0[c][1], 1) for c in sys1}
    res["errors"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"]
    return res


# -- one scenario -------------------------------------------------------------------

def probe(sc, cfg, envoy, timeout=10):
    """Returns (error or None, notes). The measured request must succeed, and the
    protection must really act (a request without token is refused, ...)."""
    notes = []
    r = harness.http_request(envoy.port, sc.method, sc.path, sc.request_headers(), sc.body, timeout=timeout)
    if r.status != 200:
        return f"measured request got {r.status}: {r.body[:300]!r}", notes
    for configs, what, over, status, fn, soft in sc.checks:
        if cfg not in configs:
            continue
        headers = over.get("headers", sc.request_headers())
        if sc.body is not None:
            headers = dict(headers, **{"content-type": "application/json"})
        r = harness.http_request(envoy.port, sc.method, over.get("path", sc.path), headers, over.get("body", sc.body),
                                 timeout=timeout)
        err = None
        if r.status != status:
            err = f"check failed: {what}: expected {status}, got {r.status}"
        elif fn:
            err = fn(r)
            err = err and f"check failed: {what}: {err}"
        if err and soft:
            notes.append(err)
        elif err:
            return err, notes
    return None, notes


def filters_for(sc, cfg, modules, wasm):
    if cfg == "none":
        return []
    if cfg == "noop":
        return [harness.wasm_filter({}, wasm=modules["noop"])]
    if cfg == "native":
        return sc.native
    if cfg == "sigonly":
        return [harness.wasm_filter(sc.sigonly, wasm=modules["hostcalls"])] if sc.sigonly else None
    if cfg == "floor":
        return [harness.wasm_filter(sc.floor, wasm=modules["hostcalls"])] if sc.floor else None
    if cfg in sc.extra:
        return [harness.wasm_filter(sc.extra[cfg], wasm=wasm)]
    return [harness.wasm_filter(sc.ours, wasm=sc.wasm or wasm)]


def bootstraps(sc, modules, wasm, upstream_port):
    """(configuration, Envoy bootstrap) for each configuration scenario `sc` has."""
    for cfg in sc.configs:
        filters = filters_for(sc, cfg, modules, wasm)
        if filters is not None:
            yield cfg, harness.bootstrap(None, upstream_port, clusters=sc.clusters, http_filters=filters,
                                         hcm=sc.hcm(cfg))


def perf_round(sc, envoy, seconds, tag):
    """One more max-throughput round with `perf record` sampling the Envoy under test
    (timer samples of that process only, so other load on the machine is not
    counted), split by where the sample fell: the code V8 compiled from Wasm
    (anonymous executable memory: the module's own work, with V8's per-function
    checks), Envoy's binary (host calls, V8's runtime and builtins, HTTP and network
    work), the C library and the kernel. Each share times the round's Envoy CPU per
    request gives µs per request. None when perf cannot sample here."""
    if not shutil.which("perf"):
        return None
    data = os.path.join(WORK, f"perf-{tag}.data")
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-p", str(envoy.pid),
                            "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if rec.poll() is not None:
        log(f"  perf record did not start: {rec.stderr.read().decode(errors='replace')[:200]}")
        return None
    try:
        r = run_wrk(sc, envoy, seconds, THROUGHPUT_CONNECTIONS, tag)
    finally:
        rec.send_signal(2)
        rec.wait(timeout=60)
    rep = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio", "-q", "--percent-limit", "0"],
                         capture_output=True, text=True, timeout=120)
    shares = {"wasm": 0.0, "envoy": 0.0, "libc": 0.0, "kernel": 0.0, "other": 0.0}
    for line in rep.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith("%"):
            continue
        pct, dso = float(parts[0][:-1]) / 100, " ".join(parts[1:])
        if dso in ("[unknown]", "//anon", "[anon]") or dso.startswith(("[JIT]", "perf-", "memfd:")):
            shares["wasm"] += pct
        elif dso == "envoy":
            shares["envoy"] += pct
        elif dso.startswith(("libc", "libm", "ld-linux", "libpthread")):
            shares["libc"] += pct
        elif dso.startswith("[kernel"):
            shares["kernel"] += pct
        else:
            shares["other"] += pct
    os.remove(data)
    return {"cpu_us": r["cpu_us"], "rps": r["rps"], "shares": shares,
            "us": {k: v * r["cpu_us"] for k, v in shares.items()}}


def run_scenario(sc, args, upstream_port, modules, rundir):
    res = {"name": sc.name, "title": sc.title, "native_note": sc.native_note, "configs": {},
           "notes": [], "target": sc.target, "calls": sc.calls}
    fronts = {}
    try:
        for cfg, doc in bootstraps(sc, modules, args.wasm, upstream_port):
            fronts[cfg] = EnvoyProc(args.envoy, f"{sc.name}-{cfg}", doc, ENVOY_CPU, rundir)
        deadline = time.time() + 90
        for cfg, e in list(fronts.items()):
            try:
                e.wait_ready(deadline)
            except RuntimeError as err:
                res["notes"].append(f"{cfg}: did not start: {str(err).splitlines()[0]}")
                log(f"  {cfg}: {err}")
                e.stop()
                del fronts[cfg]
        for cfg, e in list(fronts.items()):
            err, notes = probe(sc, cfg, e)
            res["notes"] += [f"{cfg}: {n}" for n in notes]
            if err:
                res["notes"].append(f"{cfg}: not measured: {err}")
                log(f"  {cfg}: probe failed: {err}")
                e.stop()
                del fronts[cfg]
        if not fronts:
            return res
        for cfg, e in fronts.items():  # warm-up: V8 tier-up, connection pools
            run_wrk(sc, e, args.warmup, THROUGHPUT_CONNECTIONS, f"{sc.name}-{cfg}-warm")
        rounds = {cfg: [] for cfg in fronts}
        for i in range(args.rounds):
            order = list(fronts) if i % 2 == 0 else list(reversed(fronts))
            for cfg in order:
                rounds[cfg].append(run_wrk(sc, fronts[cfg], args.seconds, THROUGHPUT_CONNECTIONS,
                                           f"{sc.name}-{cfg}-max{i}"))
        for cfg, rs in rounds.items():
            best = max(rs, key=lambda r: r["rps"])
            res["configs"][cfg] = {
                "rps": best["rps"], "rps_rounds": [round(r["rps"]) for r in rs],
                "cpu_us": min(r["cpu_us"] for r in rs), "envoy_util": best["envoy_util"],
                "cpu_busy": best["cpu_busy"], "errors": sum(r["errors"] for r in rs),
                "upstream_cpu_us": best["upstream_cpu_us"], "wrk_cpu_us": best["wrk_cpu_us"],
                "requests": sum(r["requests"] for r in rs)}
        if args.profile:
            for cfg, e in fronts.items():
                prof = perf_round(sc, e, args.seconds, f"{sc.name}-{cfg}-perf")
                if prof:
                    res["configs"][cfg]["profile"] = prof
        rate = args.rate_fraction * min(c["rps"] for c in res["configs"].values())
        conns = max(1, round(rate * PACE_PERIOD_MS / 1000))
        res["latency_rate_target"] = rate
        for cfg, e in fronts.items():
            lat = run_wrk(sc, e, args.latency_seconds, conns, f"{sc.name}-{cfg}-lat", pace_ms=PACE_PERIOD_MS)
            c = res["configs"][cfg]
            c.update(p50_us=lat["p50"], p99_us=lat["p99"], latency_rps=lat["rps"],
                     latency_cpu_us=lat["cpu_us"], errors=c["errors"] + lat["errors"],
                     rss_mb=e.rss_mb())
        for cfg, e in fronts.items():
            if cfg in ("ours", "native"):
                st = e.stats("jwt_cache_|apiguard\\.provider\\.")
                hits = sum(v for k, v in st.items() if k.endswith(("verified_cached", "jwt_cache_hit")))
                verified = sum(v for k, v in st.items()
                               if k.endswith((".verified", "jwt_cache_miss")))
                if hits or verified:
                    res["configs"][cfg]["jwt_cache"] = {"hits": hits, "misses": verified}
            upstream_cx = e.stats("cluster.upstream.upstream_cx_total").get("cluster.upstream.upstream_cx_total")
            res["configs"][cfg]["upstream_cx"] = upstream_cx
    finally:
        for e in fronts.values():
            e.stop()
    return res


# -- memory -------------------------------------------------------------------------

def memory_breakdown(e):
    """Where one Envoy's RSS is: VmRSS; JIT code (anonymous executable mappings: V8's
    Wasm code space); Envoy's allocator (tcmalloc, admin `/memory`): bytes in use,
    pages held free and thread caches; the number of Wasm VMs."""
    code_kb, cur_exec = 0, False
    with open(f"/proc/{e.pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                cur_exec = "x" in parts[1] and len(parts) == 5  # anonymous, executable
            elif parts and parts[0] == "Rss:" and cur_exec:
                code_kb += int(parts[1])
    mem = json.loads(e.admin_get("/memory"))
    vms = e.stats("wasm.envoy.wasm.runtime.v8.active").get("wasm.envoy.wasm.runtime.v8.active", 0)
    mb = 1 / (1 << 20)
    return {"rss_mb": e.rss_mb(), "code_mb": code_kb / 1024, "vms": vms,
            "allocated_mb": int(mem["allocated"]) * mb,
            "free_mb": int(mem["pageheap_free"]) * mb,
            "thread_cache_mb": int(mem["total_thread_cache"]) * mb}


# Envoy's background release of free allocator pages (bootstrap
# `memory_allocator_manager`), as docs/performance.md recommends it: measured after
# MEMORY_RELEASE_WAIT seconds, long enough for every free page to go at this rate.
MEMORY_RELEASE = {"bytes_to_release": 16 << 20, "memory_release_interval": "1s"}
MEMORY_RELEASE_WAIT = 4


def memory_run(args, scenarios, modules, upstream_port, rundir):
    """`--memory`: each configuration of the open and the everything route, started
    alone, given 1 s of load, then its RSS taken apart (`memory_breakdown`); each
    once with Envoy's allocator as it comes and once releasing free pages."""
    rows = []
    for release in (False, True):
        rows += memory_configs(args, scenarios, modules, upstream_port, rundir, release)
    return rows


def memory_configs(args, scenarios, modules, upstream_port, rundir, release):
    rows = []
    for sc in scenarios:
        for cfg, doc in bootstraps(sc, modules, args.wasm, upstream_port):
            if cfg in ("none", "noop", "floor") and sc.name != "open":
                continue
            if release:
                doc["memory_allocator_manager"] = MEMORY_RELEASE
            e = EnvoyProc(args.envoy, f"mem-{sc.name}-{cfg}", doc, ENVOY_CPU, rundir)
            try:
                e.wait_ready(time.time() + 60)
                r = harness.http_request(e.port, sc.method, sc.path, sc.request_headers(), sc.body)
                if r.status != 200:
                    log(f"  {sc.name} {cfg}: measured request got {r.status}; not measured")
                    continue
                run_wrk(sc, e, 1, 4, f"mem-{sc.name}-{cfg}")
                if release:
                    time.sleep(MEMORY_RELEASE_WAIT)
                m = memory_breakdown(e)
            finally:
                e.stop()
            m.update(scenario=sc.name, config=cfg, release=release)
            log(f"  {sc.name:5} {cfg:6} {'release ' if release else ''}rss {m['rss_mb']:.0f} MB: "
                f"code {m['code_mb']:.1f}, allocator in use "
                f"{m['allocated_mb']:.1f}, free {m['free_mb']:.1f}, thread caches {m['thread_cache_mb']:.1f}; "
                f"{m['vms']} VMs")
            rows.append(m)
    return rows


# -- instructions counted -------------------------------------------------------------

COUNT_NO_SECURITY_HEADERS = report.NO_SECURITY_HEADERS


def count_run(args, scenarios, modules, upstream_port, rundir):
    """`--count`: each configuration of each scenario under callgrind (see
    bench/count.py); the configurations of a scenario start together, since V8
    compiling a module under valgrind takes minutes."""
    binary = count.envoy_binary(args.envoy)
    # Every CPU: nothing is timed, and valgrind runs each Envoy on one.
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0) | {ENVOY_CPU, LOAD_CPU}))
    rows = []
    for sc in scenarios:
        tokens = None
        if sc.tokens_file:
            with open(sc.tokens_file) as f:
                tokens = [line.strip() for line in f if line.strip()]
        fronts = {}
        try:
            for cfg, doc in bootstraps(sc, modules, args.wasm, upstream_port):
                out = os.path.join(rundir, f"count-{sc.name}-{cfg}.cg")
                wrap = count.VALGRIND + [f"--callgrind-out-file={out}"]
                fronts[cfg] = (EnvoyProc(binary, f"count-{sc.name}-{cfg}", doc, cpus, rundir, wrap), out)
            deadline = time.time() + 1800
            for cfg, (e, out) in fronts.items():
                e.wait_ready(deadline)
                # Valgrind translates each code path at its first run: minutes
                # while the other configurations still compile their modules.
                err, _ = probe(sc, cfg, e, timeout=600)
                if err:
                    raise RuntimeError(f"{sc.name} {cfg}: {err}")
                lo, hi = count.binary_range(e.pid, binary)
                count.drive(e.port, sc, count.COUNT_WARMUP, tokens)
                count.callgrind(e.pid, "-z")
                count.drive(e.port, sc, count.COUNT_REQUESTS, tokens and tokens[count.COUNT_WARMUP:])
                count.callgrind(e.pid, "-d")
                e.stop()
                parts = count.parse(out + ".1", count.COUNT_REQUESTS, binary, lo, hi)
                row = dict(count.summary(parts), scenario=sc.name, config=cfg)
                log(f"  {sc.name} {cfg:6} {row['ir']:9,.0f} instructions/request: "
                    + ", ".join(f"{k} {v:,.0f}" for k, v in row["parts"].items() if v)
                    + f"; I1 misses {row['i1_misses']:,.0f}")
                rows.append(row)
        finally:
            for e, _ in fronts.values():
                e.stop()
    return rows


# -- machine ------------------------------------------------------------------------

def machine_info(envoy):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ver = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=30).stdout
    ver = ver.strip().split("version:")[-1].strip()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10).stdout
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "envoy": ver, "wrk": wrk.split("[")[0].strip(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
            "pinning": f"Envoy under test on CPU {ENVOY_CPU}; wrk and the upstream Envoy on CPU {LOAD_CPU}"
            if PINNING else "no taskset or fewer than 2 CPUs: not pinned"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=harness.ENVOY)
    ap.add_argument("--wasm", default=harness.WASM, help="the api-guard module to measure")
    ap.add_argument("--quick", action="store_true", help="short runs (about 5 minutes): development only")
    ap.add_argument("--only", help="comma-separated scenario names (prefix match)")
    ap.add_argument("--budget", type=float, default=2400, help="seconds; no scenario starts after it")
    ap.add_argument("--diagnose", action="store_true",
                    help="instead of the scenarios: api-guard variants (features switched off) vs no-op")
    ap.add_argument("--hostcalls", action="store_true",
                    help="instead of the scenarios: the price of one host call of each kind vs no-op")
    ap.add_argument("--memory", action="store_true",
                    help="instead of the scenarios: where the RSS goes, per configuration of the "
                         "open and the everything route (results in bench/results/memory/)")
    ap.add_argument("--count", action="store_true",
                    help="instead of timing: instructions per request through Envoy under callgrind, "
                         "split into Envoy, its allocator, the module's compiled code and libc "
                         "(default scenarios open and jwt-es256-repeat; results in bench/results/count/)")
    ap.add_argument("--profile", action="store_true",
                    help="one more round per configuration under `perf record`: Envoy CPU per request "
                         "split into the module's compiled code, Envoy's binary, libc and kernel")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--rate-fraction", type=float, default=0.5,
                    help="latency phase: this fraction of the scenario's lowest max throughput")
    ap.add_argument("--note", default="", help="a line for the report (e.g. 'shared, noisy machine')")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.seconds, args.rounds, args.latency_seconds, tokens = 1, 2, 1, 2, 4000
    else:
        args.warmup, args.seconds, args.rounds, args.latency_seconds, tokens = 1, 2, 3, 3, 20000
    if args.memory:
        tokens = 10  # one token is used; nothing is timed
    if args.count:
        tokens = count.COUNT_WARMUP + count.COUNT_REQUESTS
        args.only = args.only or "open,jwt-es256-repeat"
    args.envoy, args.wasm = os.path.abspath(args.envoy), os.path.abspath(args.wasm)
    for tool in ("wrk", args.envoy, args.wasm):
        if not (shutil.which(tool) or os.path.exists(tool)):
            sys.exit(f"missing: {tool} (run `make bench`, which installs and builds what it needs)")
    start = time.time()
    os.makedirs(WORK, exist_ok=True)
    if PINNING:  # this script and its children (wrk, minting, probes) stay off the Envoy CPU
        os.sched_setaffinity(0, {LOAD_CPU})
    info = machine_info(args.envoy)
    log(f"building the no-op and probe modules; minting tokens ({tokens} per algorithm)")
    modules = {name: build_module(name) for name in ("noop", "hostcalls")}
    keys, token_files = fixtures.keys_and_tokens(WORK, tokens, log)
    scenarios = build_scenarios(keys, token_files)
    if args.diagnose:
        scenarios = diagnostic_scenarios(keys, token_files)
    if args.hostcalls:
        scenarios = hostcall_scenarios(modules["hostcalls"])
    if args.memory:
        scenarios = [s for s in scenarios if s.name in ("open", "all")]
    if args.only:
        wanted = args.only.split(",")
        scenarios = [s for s in scenarios if any(s.name.startswith(w) for w in wanted)]
    if args.count:
        # Exact names: the prefix `open` would also take every other `open...` scenario.
        scenarios = [s for s in scenarios if s.name in args.only.split(",")] or scenarios
        for sc in scenarios:
            # What the default security headers (seven header writes per response) cost.
            if "security_headers" not in sc.ours:
                sc.add_extra(COUNT_NO_SECURITY_HEADERS, dict(sc.ours, security_headers={"enabled": False}))
    rundir = os.path.join(WORK, "run")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    big = os.path.join(WORK, "orders-10kb.json")
    with open(big, "wb") as f:
        f.write(fixtures.orders_response())
    global UPSTREAM
    upstream = UPSTREAM = EnvoyProc(args.envoy, "upstream", upstream_bootstrap(big), LOAD_CPU, rundir)
    results = []
    services = contextlib.ExitStack()
    try:
        if any(sc.needs_rls for sc in scenarios):
            # On the load CPU (this process's affinity), like the upstream.
            t0 = time.time()
            redis = services.enter_context(harness.start_redis())
            rls = services.enter_context(harness.start_rls(redis.port, RLS_LIMITS))
            log(f"Redis and the rate-limit service ready in {time.time() - t0:.1f}s")
            for sc in scenarios:
                if sc.needs_rls:
                    sc.clusters = [harness.cluster("ratelimit", rls.port, http2=True)]
        upstream.wait_ready(time.time() + 60)
        if args.memory:
            memory = memory_run(args, scenarios, modules, upstream.port, rundir)
            out = os.path.join(args.out, "memory")
            os.makedirs(out, exist_ok=True)
            info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
            info["sizes"] = {"api_guard.wasm": os.path.getsize(args.wasm),
                             "noop.wasm": os.path.getsize(modules["noop"]),
                             "hostcalls.wasm": os.path.getsize(modules["hostcalls"])}
            with open(os.path.join(out, "latest.json"), "w") as f:
                json.dump({"machine": info, "memory": memory}, f, indent=1)
            with open(os.path.join(out, "latest.md"), "w") as f:
                f.write(report.memory_markdown(info, memory))
            log(f"done: {out}/latest.md")
            return
        if args.count:
            rows = count_run(args, scenarios, modules, upstream.port, rundir)
            out = os.path.join(args.out, "count")
            os.makedirs(out, exist_ok=True)
            info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
            info["duration_s"] = round(time.time() - start)
            info["sizes"] = {"api_guard.wasm": os.path.getsize(args.wasm),
                             "noop.wasm": os.path.getsize(modules["noop"]),
                             "hostcalls.wasm": os.path.getsize(modules["hostcalls"])}
            info["requests"] = {"warmup": count.COUNT_WARMUP, "counted": count.COUNT_REQUESTS}
            with open(os.path.join(out, "latest.json"), "w") as f:
                json.dump({"machine": info, "count": rows}, f, indent=1)
            with open(os.path.join(out, "latest.md"), "w") as f:
                f.write(report.count_markdown(info, rows))
            log(f"done in {info['duration_s']}s: {out}/latest.md")
            return
        for i, sc in enumerate(scenarios):
            if time.time() - start > args.budget:
                log(f"budget of {args.budget:.0f}s spent: skipping {', '.join(s.name for s in scenarios[i:])}")
                results.append({"name": "skipped", "skipped": [s.name for s in scenarios[i:]]})
                break
            log(f"[{i + 1}/{len(scenarios)}] {sc.name}: {sc.title}")
            r = run_scenario(sc, args, upstream.port, modules, rundir)
            for cfg, c in r["configs"].items():
                log(f"  {cfg:6} {c['rps']:8.0f} req/s  {c['cpu_us']:6.1f} us CPU/req  "
                    f"p50 {c['p50_us']}us p99 {c['p99_us']}us  rss {c['rss_mb']:.0f} MB  errors {c['errors']}  "
                    f"[util {c['envoy_util']:.0%}, load side {c['upstream_cpu_us'] + c['wrk_cpu_us']:.0f} us/req]")
            results.append(r)
    finally:
        upstream.stop()
        services.close()
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    info["duration_s"] = round(time.time() - start)
    info["mode"] = "quick" if args.quick else "full"
    info["note"] = args.note
    info["sizes"] = {"api_guard.wasm": os.path.getsize(args.wasm), "noop.wasm": os.path.getsize(modules["noop"])}
    info["params"] = {"warmup_s": args.warmup, "throughput_s": args.seconds, "rounds": args.rounds,
                      "latency_s": args.latency_seconds, "connections": THROUGHPUT_CONNECTIONS,
                      "rate_fraction": args.rate_fraction, "tokens_per_alg": tokens}
    os.makedirs(args.out, exist_ok=True)
    doc = {"machine": info, "scenarios": [r for r in results if r.get("configs") is not None]}
    skipped = [s for r in results if r.get("name") == "skipped" for s in r["skipped"]]
    doc["skipped"] = skipped
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(report.markdown(doc))
    with open(os.path.join(args.out, "latest.svg"), "w") as f:
        f.write(report.svg(doc))
    log(f"done in {info['duration_s']}s: {args.out}/latest.md, latest.svg, latest.json")


if __name__ == "__main__":
    main()
