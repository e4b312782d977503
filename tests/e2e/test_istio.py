"""The Istio example (envoy/istio/): what istiod and istio-agent would hand the
sidecar's Envoy, checked in a real Envoy.

There is no Kubernetes here, so the resources are read as istiod reads them: the
WasmPlugin's pluginConfig becomes the filter's JSON configuration, the EnvoyFilter's
Wasm config is the filter's config, the bootstrap override is merged into a bootstrap
with `--config-yaml` as pilot-agent does.
"""
import json
import os
import subprocess
import sys
import time

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from harness import ENVOY, ROOT, WASM, cluster, poll, start_envoy
from idp import IdP

ISTIO = os.path.join(ROOT, "envoy", "istio")
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def load(name):
    with open(os.path.join(ISTIO, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def wasmplugin():
    (doc,) = load("wasmplugin.yaml")
    assert doc["kind"] == "WasmPlugin"
    return doc


def envoyfilter():
    (doc,) = load("envoyfilter.yaml")
    assert doc["kind"] == "EnvoyFilter"
    return doc


def validate_file(path):
    return subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "validate.py"),
                           "--envoy", ENVOY, "--wasm", WASM, path],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_wasmplugin_is_inbound_only_fails_closed_and_pulls_an_oci_artifact():
    spec = wasmplugin()["spec"]
    assert spec["match"] == [{"mode": "SERVER"}]
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["phase"] == "AUTHN"
    assert spec["url"].startswith("oci://")
    cfg = spec["pluginConfig"]
    # Every protection is shown.
    routes = {r["name"]: r for r in cfg["routes"]}
    assert cfg["providers"]["main"]["jwks"]["remote"]["cluster"].startswith("outbound|")
    assert routes["get-order"]["auth"]["claims"] and routes["get-order"]["auth"]["bind"]
    assert routes["get-order"]["quota"] and routes["get-order"]["response"]["mask"]
    assert routes["create-order"]["request"]["schema"]
    assert cfg["unmatched"] == "deny"


def test_envoyfilter_is_the_wasmplugin_with_the_flag_set():
    spec, plugin = envoyfilter()["spec"], wasmplugin()["spec"]
    ext, http = spec["configPatches"]
    assert spec["workloadSelector"]["labels"] == plugin["selector"]["matchLabels"]
    assert ext["applyTo"] == "EXTENSION_CONFIG" and ext["patch"]["operation"] == "ADD"
    assert http["applyTo"] == "HTTP_FILTER"
    for patch in (ext, http):
        assert patch["match"]["context"] == "SIDECAR_INBOUND"
    typed = ext["patch"]["value"]["typed_config"]
    assert typed["@type"] == WASM_TYPE
    config = typed["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["fail_open"] is False
    assert config["vm_config"]["code"]["remote"]["http_uri"]["uri"] == plugin["url"]
    # The same configuration, except that the EnvoyFilter sets Envoy's flag (and the
    # plugin's field of that name keeps its default, true).
    plugin_cfg = dict(plugin["pluginConfig"])
    assert plugin_cfg.pop("allow_on_headers_stop_iteration") is False
    assert config["allow_on_headers_stop_iteration"] is True
    assert json.loads(config["configuration"]["value"]) == plugin_cfg
    discovery = http["patch"]["value"]["config_discovery"]
    assert http["patch"]["value"]["name"] == ext["patch"]["value"]["name"]
    assert discovery["type_urls"] == [WASM_TYPE]
    hcm = http["match"]["listener"]["filterChain"]["filter"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    assert hcm["subFilter"]["name"] == "envoy.filters.http.router"


def test_istio_resources_pass_make_validate():
    for name in ("wasmplugin.yaml", "envoyfilter.yaml"):
        r = validate_file(os.path.join(ISTIO, name))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().endswith(": OK"), r.stdout


def token(key, **claims):
    now = int(time.time())
    body = {"iss": "https://idp.example.com/", "aud": "orders-api", "iat": now,
            "exp": now + 600, **claims}
    return {"authorization": "Bearer " + jwt.encode(body, key, "ES256", headers={"kid": "k1"})}


def test_wasmplugin_config_protects_in_a_real_envoy():
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    idp = IdP()
    idp.serve("/.well-known/jwks.json", {"keys": [dict(jwk, kid="k1", alg="ES256", use="sig")]})
    cfg = wasmplugin()["spec"]["pluginConfig"]
    clerk = token(key, sub="alice", shop_id="s1", roles=["clerk"], scope="orders:write")
    try:
        # As istiod renders a WasmPlugin: without Envoy's allow_on_headers_stop_iteration.
        with start_envoy(cfg, clusters=[cluster("outbound|80||idp.example.com", idp.port)],
                         hold_headers=False) as env:
            r = poll(lambda: env.get("/shops/s1/orders/1", headers=clerk),
                     lambda r: r.status != 503, 10)
            assert r.status == 200, r
            body = r.json()
            assert body["card"]["number"].endswith("1111") and body["card"]["number"][0] == "*"
            assert "ssn" not in body["customer"]
            assert env.upstream_requests()[-1]["headers"].get("x-user-id") == "alice"
            assert "authorization" not in env.upstream_requests()[-1]["headers"]
            assert env.get("/shops/s1/orders/1").status == 401
            assert env.get("/shops/s2/orders/1", headers=clerk).status == 403
            assert env.get("/internal/metrics").status == 404
            bad = env.request("POST", "/shops/s1/orders", body=b'{"sku": 7}',
                              headers={**clerk, "content-type": "application/json"})
            assert bad.status == 400, bad
            good = env.request("POST", "/shops/s1/orders", body=b'{"sku": "a", "qty": 1}',
                               headers={**clerk, "content-type": "application/json"})
            assert good.status == 200, good
            assert env.get("/healthz").status == 200
    finally:
        idp.close()


def test_stats_bootstrap_override_merges_and_matches_the_demo_tags(tmp_path):
    (configmap,) = load("stats-bootstrap.yaml")
    (patch,) = load("pod-annotations.yaml")
    override = json.loads(configmap["data"]["custom_bootstrap.json"])
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        demo = yaml.safe_load(f)
    assert override["stats_config"]["stats_tags"] == demo["stats_config"]["stats_tags"]
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/bootstrapOverride"] == configmap["metadata"]["name"]
    proxy = yaml.safe_load(annotations["proxy.istio.io/config"])
    assert "wasmcustom.apiguard." in proxy["proxyStatsMatcher"]["inclusionPrefixes"]
    # Merged into a bootstrap without tags of its own, as pilot-agent merges it.
    del demo["stats_config"]
    demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = WASM
    base = tmp_path / "bootstrap.json"
    base.write_text(json.dumps(demo))
    r = subprocess.run([ENVOY, "--mode", "validate", "-c", str(base),
                        "--config-yaml", json.dumps(override), "-l", "error"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
