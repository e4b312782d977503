"""What an operator sees: log lines at the level Envoy is set to at run time, and the
demo's metrics with their Prometheus labels (the README's Metrics and Logs)."""
import re
import urllib.request

from harness import poll, start_envoy
from test_demo import demo_bootstrap, mint


def set_wasm_log_level(env, level):
    req = urllib.request.Request(f"http://{env.admin}/logging?wasm={level}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def rejection_lines(env):
    return [line for line in env.log().splitlines() if "rejected route=" in line]


def test_rejections_show_at_the_level_envoy_is_switched_to():
    guest = mint("--sub", "mallory", "--shop", "s1", "--roles", "guest")
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk")
    with start_envoy(None, make_bootstrap=demo_bootstrap) as env:
        set_wasm_log_level(env, "info")
        assert env.get("/shops/s1/orders/1", headers=guest).status == 403
        assert env.get("/nope").status == 404
        assert rejection_lines(env) == [], "debug lines written at info"

        set_wasm_log_level(env, "debug")
        assert env.get("/shops/s1/orders/1", headers=guest).status == 403
        assert env.get("/shops/s2/orders/1", headers=clerk).status == 403
        assert env.get("/shops/s1/orders/1").status == 401
        assert env.get("/nope").status == 404
        lines = poll(lambda: rejection_lines(env), lambda ls: len(ls) >= 4, 5)
        tails = [line.split("wasm log ", 1)[1] for line in lines]
        assert tails == [
            "api-guard: rejected route=get-order status=403 reason=claims rule=claims.roles",
            "api-guard: rejected route=get-order status=403 reason=bind rule=bind.shop",
            "api-guard: rejected route=get-order status=401 reason=missing",
            "api-guard: rejected route=- status=404 reason=not_found",
        ], lines
        log = env.log()
        # The plugin's name once per line, and never a credential or a claim value.
        assert all(line.count("api-guard") == 1 for line in lines), lines
        for secret in (guest["authorization"][7:], clerk["authorization"][7:], "mallory", "guest"):
            assert secret not in log

        set_wasm_log_level(env, "warning")
        assert env.get("/nope").status == 404
        assert len(rejection_lines(env)) == 4


def test_demo_metrics_carry_reason_labels():
    clerk = mint("--sub", "alice", "--shop", "s1", "--roles", "clerk", "--scope", "orders:write")
    expired = mint("--expires-in", "-600")

    def text_body(handler, request):
        return 200, {"content-type": "text/plain"}, b"ssn 078-05-1120"

    with start_envoy(None, make_bootstrap=demo_bootstrap, responders={"/users/": text_body}) as env:
        assert env.get("/shops/s1/orders/1", headers=expired).status == 401
        assert env.get("/shops/s1/orders/1", headers=clerk).status == 200
        assert env.request("POST", "/shops/s1/orders", body=b'{"sku": 7}',
                           headers={**clerk, "content-type": "application/json"}).status == 400
        assert env.request("POST", "/shops/s1/orders", body=b'{"sku": "a", "qty": 1}',
                           headers={**clerk, "content-type": "application/json"}).status == 200
        assert env.get("/users/7").status == 502
        want = {
            ("apiguard_provider", (("provider", "demo"), ("reason", "expired"))): 1,
            ("apiguard_provider", (("provider", "demo"), ("reason", "verified"))): None,
            ("apiguard_route_request", (("reason", "schema"), ("route", "create-order"))): 1,
            ("apiguard_route_request", (("reason", "validated"), ("route", "create-order"))): 1,
            ("apiguard_route_response_withheld", (("reason", "not_json"), ("route", "get-user"))): 1,
            ("apiguard_route_response_detect", (("kind", "aws_access_key"), ("route", "get-order"))): 1,
            ("apiguard_route_response_masked", (("route", "get-order"),)): 1,
        }

        def found(samples):
            return all(k in samples and (v is None or samples[k] == v) for k, v in want.items())

        # The demo keeps the default metrics_flush_ms (1 s): wait for the flush.
        samples = poll(lambda: prometheus_samples(env), found, 5)
        assert found(samples), {k: v for k, v in samples.items() if k[0].startswith("apiguard")}
        # No api-guard metric name keeps a route, provider or reason in it.
        names = {name for name, _ in samples if name.startswith("apiguard")}
        assert not any("get_order" in n or "demo" in n or "expired" in n for n in names), names


def prometheus_samples(env):
    """{(name, sorted label pairs): value} from the admin's Prometheus output."""
    out = {}
    for line in env.admin_get("/stats/prometheus").splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out
