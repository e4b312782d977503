"""End-to-end harness: a real Envoy with the api-guard module and a real upstream.

    with start_envoy({"routes": [...]}) as env:
        r = env.request("GET", "/healthz", headers={"authorization": "Bearer ..."})
        assert r.status == 200
        assert env.upstream_requests()[-1]["path"] == "/healthz"
        assert env.stat("apiguard.route.health.decision.allowed") == 1

Envoy runs with --disable-hot-restart, loopback ports chosen by the kernel (port 0,
read back from the admin API), a chosen --concurrency, and the plugin configuration
given by the test. Start-up fails loudly (with Envoy's log) if the plugin did not
load. Only the processes started here are stopped.
"""
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "envoy"))
import demo_upstream  # noqa: E402

ENVOY = os.environ.get("ENVOY", os.path.join(ROOT, ".venv", "bin", "envoy"))
WASM = os.environ.get("WASM", os.path.join(ROOT, "build", "api_guard.wasm"))
LOADED_MARK = "wasm log api-guard: configuration loaded"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value (repeated headers joined by ", ")
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


def http_request(port, method, path, headers=None, body=None, timeout=10):
    """One HTTP/1.1 request to 127.0.0.1:`port`, exactly as given (no implicit
    Accept-Encoding); repeated response headers are joined with ", "."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
            hdrs["content-length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body is not None:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        merged = {}
        for k, v in resp.getheaders():
            k = k.lower()
            merged[k] = f"{merged[k]}, {v}" if k in merged else v
        return Response(resp.status, merged, data)
    finally:
        conn.close()


def h2_request(port, method, path, headers=(), body_frames=(b"",), trailers=None, timeout=10):
    """One HTTP/2 request (prior knowledge) to 127.0.0.1:`port`: HEADERS without
    END_STREAM, then each DATA frame of `body_frames` (the last ends the stream
    unless `trailers`, a dict, follow). Returns (status, response body)."""
    import h2.connection
    import h2.events
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                            (":authority", "localhost"), *headers], end_stream=False)
    for i, frame in enumerate(body_frames):
        last = i == len(body_frames) - 1
        conn.send_data(sid, frame, end_stream=last and trailers is None)
    if trailers:
        conn.send_headers(sid, list(trailers.items()), end_stream=True)
    sock.sendall(conn.data_to_send())
    status, data, done = None, b"", False
    try:
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return status, data


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cluster(name, port, http2=False):
    c = {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }}
    return c


def wasm_filter(plugin_config, as_struct=False, wasm=None, hold_headers=True):
    if as_struct:
        configuration = {"@type": "type.googleapis.com/google.protobuf.Struct", "value": plugin_config}
    else:
        text = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        configuration = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text}
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "root_id": "api-guard",
                "allow_on_headers_stop_iteration": hold_headers,
                "fail_open": False,
                "configuration": configuration,
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm or WASM}},
                },
            },
        },
    }


def bootstrap(plugin_config, upstream_port, clusters=(), as_struct=False, hcm=None,
              http_filters=None, hold_headers=True):
    """The Envoy bootstrap (as a dict; written as JSON, which Envoy reads as YAML)."""
    filters = (http_filters if http_filters is not None
               else [wasm_filter(plugin_config, as_struct, hold_headers=hold_headers)])
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "server_header_transformation": "PASS_THROUGH",
        "route_config": {"virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"},
                        "route": {"cluster": "upstream", "timeout": "10s"}}]}]},
        "http_filters": filters + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    manager.update(hcm or {})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager}]}],
            }],
            "clusters": [cluster("upstream", upstream_port)] + list(clusters),
        },
    }


class Envoy:
    """A running Envoy plus its upstream. Use `start_envoy`."""

    def __init__(self, workdir, proc, admin, port, upstream, recorder, log_path):
        self.workdir = workdir
        self.proc = proc
        self.admin = admin
        self.port = port
        self.upstream = upstream
        self.recorder = recorder
        self.log_path = log_path

    # -- traffic ---------------------------------------------------------
    def request(self, method, path, headers=None, body=None, timeout=10):
        return http_request(self.port, method, path, headers, body, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def upstream_requests(self, incomplete=False):
        """What the upstream received. Requests it saw only in part (headers, then
        a reset: a body refused by a filter that let the headers go on) only with
        `incomplete=True`."""
        return [r for r in self.recorder.snapshot() if incomplete or r.get("complete", True)]

    # -- observation -----------------------------------------------------
    def admin_get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.read().decode()

    def _read_stats(self):
        doc = json.loads(self.admin_get("/stats?format=json"))
        out = {}
        for s in doc.get("stats", []):
            if "name" in s and "value" in s:
                out[s["name"].removeprefix("wasmcustom.")] = s["value"]
        return out

    def stats(self):
        """All counters and gauges, `wasmcustom.` prefix removed. The filter hands
        its counts to Envoy on a tick (`metrics_flush_ms`, which start_envoy sets to
        FLUSH_MS): read until two reads several ticks apart agree."""
        counters = self.admin_get("/stats?format=json&type=Counters&filter=apiguard")
        deadline = time.time() + 5
        while time.time() < deadline:
            time.sleep(STATS_SETTLE_S)
            again = self.admin_get("/stats?format=json&type=Counters&filter=apiguard")
            if again == counters:
                break
            counters = again
        return self._read_stats()

    def stat(self, name):
        return self.stats().get(name, 0)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        self.upstream.shutdown()
        self.upstream.server_close()
        check_audit_lines(self.log())


AUDIT_MARK = "api-guard audit: "
# What no audit record may hold, whatever the test: a JWS (every compact JWS
# starts with a base64url JSON header, `eyJ`), a bearer credential, the client's
# raw address (all tests run on loopback).
AUDIT_FORBIDDEN = re.compile(r"eyJ[A-Za-z0-9_-]*\.|[Bb]earer|127\.0\.0\.1|::1")


def check_audit_lines(log_text):
    """Every audit line an Envoy of the e2e run wrote: one JSON object, nothing
    a record must never contain. Runs when each Envoy stops."""
    for line in log_text.splitlines():
        if AUDIT_MARK not in line:
            continue
        record = line.split(AUDIT_MARK, 1)[1]
        json.loads(record)
        found = AUDIT_FORBIDDEN.search(record)
        assert found is None, f"audit record holds {found.group(0)!r}: {record}"


def wait_ready(proc, admin_path, deadline, tail):
    """Waits until the Envoy `proc` (started with `--admin-address-path admin_path`)
    is ready; returns (admin address, port of its first listener). Raises with
    `tail()` (its log) if it exits or the deadline passes."""
    admin = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Envoy exited with {proc.returncode}:\n{tail()}")
        if admin is None and os.path.exists(admin_path):
            with open(admin_path) as f:
                admin = f.read().strip() or None
        if admin:
            try:
                with urllib.request.urlopen(f"http://{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
        time.sleep(0.1)
    else:
        raise RuntimeError(f"Envoy not ready in time:\n{tail()}")
    with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=5) as r:
        listeners = json.loads(r.read())
    port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
    return admin, port


def stop_process(proc):
    """Terminates a process started here (SIGTERM, then SIGKILL after 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def poll(fn, ok, timeout, interval=0.2):
    """Calls fn until ok(result) or timeout seconds; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if ok(out) or time.monotonic() > deadline:
            return out
        time.sleep(interval)


def tail_file(path, n=60):
    """The last `n` lines of a log file (for error messages)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "<no log>"


# The filter's metrics flush period in the tests (the default is 1000 ms), and how
# long counters must stay unchanged before `Envoy.stats()` trusts them.
FLUSH_MS = 100
STATS_SETTLE_S = 0.35


@contextlib.contextmanager
def start_envoy(plugin_config, concurrency=1, clusters=(), as_struct=False, hcm=None,
                responders=None, http_filters=None, expect_loaded=True, timeout=30,
                make_bootstrap=None, envoy_args=(), hold_headers=True):
    """Starts the upstream and Envoy; yields an `Envoy`; stops both afterwards.

    clusters: extra clusters, e.g. `cluster("idp", port)`; responders: upstream
    overrides {path_prefix: fn(handler, request) -> (status, headers, body)};
    make_bootstrap: fn(upstream_port) -> bootstrap dict, replacing the generated one;
    envoy_args: more command-line arguments for Envoy; hold_headers: the Wasm
    filter's `allow_on_headers_stop_iteration` (False: as istiod renders a
    WasmPlugin), told to the plugin as well.
    """
    if isinstance(plugin_config, dict) and "metrics_flush_ms" not in plugin_config:
        plugin_config = dict(plugin_config, metrics_flush_ms=FLUSH_MS)
    if (isinstance(plugin_config, dict) and not hold_headers
            and "allow_on_headers_stop_iteration" not in plugin_config):
        plugin_config = dict(plugin_config, allow_on_headers_stop_iteration=False)
    recorder = demo_upstream.Recorder()
    upstream = demo_upstream.serve(recorder=recorder, responders=responders)
    workdir = tempfile.mkdtemp(prefix="apiguard-e2e-")
    cfg_path = os.path.join(workdir, "envoy.json")
    with open(cfg_path, "w") as f:
        doc = (make_bootstrap(upstream.server_port) if make_bootstrap else
               bootstrap(plugin_config, upstream.server_port, clusters, as_struct, hcm,
                         http_filters, hold_headers))
        json.dump(doc, f)
    admin_path = os.path.join(workdir, "admin.txt")
    log_path = os.path.join(workdir, "envoy.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [ENVOY, "-c", cfg_path, "--disable-hot-restart", "--concurrency", str(concurrency),
             "--admin-address-path", admin_path, "-l", "warning",
             "--component-log-level", "wasm:debug", *envoy_args],
            stdout=log, stderr=subprocess.STDOUT)
    env = None
    try:
        admin, port = wait_ready(proc, admin_path, time.time() + timeout, lambda: tail_file(log_path))
        env = Envoy(workdir, proc, admin, port, upstream, recorder, log_path)
        if expect_loaded:
            text = env.log()
            if LOADED_MARK not in text or "failed to load" in text:
                raise RuntimeError(f"api-guard plugin did not load:\n{tail_file(log_path)}")
        yield env
    finally:
        if env is not None:
            env.stop()
        else:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            upstream.shutdown()
            upstream.server_close()


def validate(plugin_config, as_struct=False):
    """Runs `envoy --mode validate` on a bootstrap with this plugin config.

    Returns (exit code, combined output)."""
    workdir = tempfile.mkdtemp(prefix="apiguard-validate-")
    cfg_path = os.path.join(workdir, "envoy.json")
    with open(cfg_path, "w") as f:
        json.dump(bootstrap(plugin_config, 9, as_struct=as_struct), f)
    r = subprocess.run([ENVOY, "--mode", "validate", "-c", cfg_path, "-l", "info",
                        "--component-log-level", "wasm:info"],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


# -- Redis and the rate-limit service (global quotas) --------------------------

REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")
RLS_SERVER = os.path.join(ROOT, "tests", "rls", "server.py")


class Service:
    """A process started here (Redis, the rate-limit service): its port, and
    `pause()`/`resume()` (SIGSTOP/SIGCONT) to make it hang."""

    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.paused = False

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.paused and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self):
        self.resume()
        stop_process(self.proc)

    def log(self):
        return tail_file(self.log_path)


def _wait_port(proc, port, log_path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{tail_file(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on {port} in time:\n{tail_file(log_path)}")


@contextlib.contextmanager
def start_redis(timeout=10):
    """Debian's `redis-server` on a free loopback port, without persistence;
    yields a `Service`; stopped afterwards (SIGCONT first if paused)."""
    port = closed_port()
    workdir = tempfile.mkdtemp(prefix="apiguard-redis-")
    log_path = os.path.join(workdir, "redis.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=log, stderr=subprocess.STDOUT)
    svc = Service(proc, port, log_path)
    try:
        _wait_port(proc, port, log_path, timeout)
        yield svc
    finally:
        svc.kill()


@contextlib.contextmanager
def start_rls(redis_port, limits, timeout=30):
    """The test rate-limit service (tests/rls/server.py) counting in the Redis on
    `redis_port`, with `limits` (a list in Limitador's limits-file shape); yields
    a `Service`; stopped afterwards (SIGCONT first if paused)."""
    workdir = tempfile.mkdtemp(prefix="apiguard-rls-")
    limits_path = os.path.join(workdir, "limits.json")
    with open(limits_path, "w") as f:
        json.dump(limits, f)
    log_path = os.path.join(workdir, "rls.log")
    ready_path = os.path.join(workdir, "ready.txt")
    with open(log_path, "w") as log, open(ready_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, RLS_SERVER, "--port", "0", "--limits", limits_path, "--log-requests",
             "--redis", f"redis://127.0.0.1:{redis_port}"],
            stdout=out, stderr=log)
    svc = Service(proc, None, log_path)
    try:
        deadline = time.monotonic() + timeout
        while svc.port is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rate-limit service did not start:\n{tail_file(log_path)}")
            with open(ready_path) as f:
                m = re.search(r"READY (\d+)", f.read())
            if m:
                svc.port = int(m.group(1))
            else:
                time.sleep(0.05)
        yield svc
    finally:
        svc.kill()
