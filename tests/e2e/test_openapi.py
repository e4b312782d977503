"""The OpenAPI importer's output through a real Envoy: for real public documents
(tools/openapi/specs, each of a different shape) the import succeeds, `envoy --mode
validate` accepts it, and requests follow the document: declared operations pass
with valid input, undeclared paths are 404, wrong methods 405, bad bodies and
parameters 400 (and the security schemes 401/403)."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from harness import ROOT, start_envoy, validate

OPENAPI = os.environ.get("OPENAPI", os.path.join(ROOT, "target", "openapi", "api-guard-openapi"))
SPECS = os.path.join(ROOT, "tools", "openapi", "specs")
JSON = {"content-type": "application/json"}


def imported(spec, overlay=None, *args):
    """The configuration the importer prints for `spec` (a path under SPECS)."""
    cmd = [OPENAPI, os.path.join(SPECS, "oas-examples", spec), *args]
    if overlay:
        cmd += ["--overlay", os.path.join(SPECS, "overlays", overlay)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(line.startswith("warning: ") for line in r.stderr.splitlines()), r.stderr
    return json.loads(r.stdout)


def token(scope):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "envoy", "mint_token.py"), "--scope", scope],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def tokens():
    return {s: token(s) for s in ("read:pets write:pets", "read:pets", "read write", "read", "write:things")}


def bearer(t):
    return {"authorization": f"Bearer {t}"}


def body(doc):
    return json.dumps(doc).encode()


# (document, overlay, importer arguments, probes). A probe is (method, path,
# headers-or-token-scope, body, status); a string in place of headers is the scope
# of a bearer token minted for the request.
CASES = {
    "petstore-3.0-security": ("petstore.json", "petstore.yaml", ["--json-only"], [
        ("POST", "/v2/pet", "read:pets write:pets", {"name": "rex", "photoUrls": ["u"]}, 200),
        # readOnly `id` is not required of a request.
        ("PUT", "/v2/pet", "read:pets write:pets", {"name": "rex", "photoUrls": [], "status": "sold"}, 200),
        ("POST", "/v2/pet", "read:pets write:pets", {"name": 7, "photoUrls": "u"}, 400),
        ("POST", "/v2/pet", "read:pets write:pets", {"photoUrls": []}, 400),
        ("POST", "/v2/pet", None, {"name": "rex", "photoUrls": []}, 401),
        ("POST", "/v2/pet", "read:pets", {"name": "rex", "photoUrls": []}, 403),
        ("GET", "/v2/pet/findByStatus?status=available,sold", "read:pets write:pets", None, 200),
        ("GET", "/v2/pet/findByStatus?status=available&status=pending", "read:pets write:pets", None, 200),
        ("GET", "/v2/pet/findByStatus?status=lost", "read:pets write:pets", None, 400),
        ("GET", "/v2/pet/findByStatus", "read:pets write:pets", None, 400),
        ("GET", "/v2/pet/findByStatus?status=sold&debug=1", "read:pets write:pets", None, 400),
        ("GET", "/v2/pet/12", "api_key:read:pets", None, 200),
        ("GET", "/v2/pet/twelve", "api_key:read:pets", None, 400),
        ("GET", "/v2/pet/12", None, None, 401),
        ("GET", "/v2/store/order/5", {}, None, 200),
        ("GET", "/v2/store/order/11", {}, None, 400),
        ("POST", "/v2/store/order", {}, {"petId": 1, "quantity": 2, "status": "placed"}, 200),
        ("POST", "/v2/store/order", {}, {"quantity": "two"}, 400),
        ("GET", "/v2/user/login?username=a&password=b", {}, None, 200),
        ("GET", "/v2/user/login?username=a", {}, None, 400),
        ("POST", "/v2/user/createWithArray", {}, [{"username": "a"}, {"id": "x"}], 400),
        # The filter refuses the XML the document also allows (--json-only).
        ("POST", "/v2/user", {"content-type": "application/xml"}, b"<user/>", 415),
        ("GET", "/v2/store", {}, None, 404),
        ("GET", "/pet/12", {}, None, 404),
        ("PATCH", "/v2/pet", {}, None, 405),
        ("DELETE", "/v2/store/inventory", {}, None, 405),
    ]),
    "petstore-expanded-3.0-yaml-allOf": ("petstore-expanded.yaml", None, [], [
        ("GET", "/api/pets?tags=a,b&limit=10", {}, None, 200),
        ("GET", "/api/pets?limit=ten", {}, None, 400),
        ("POST", "/api/pets", {}, {"name": "rex", "tag": "dog"}, 200),
        ("POST", "/api/pets", {}, {"tag": "dog"}, 400),
        ("GET", "/api/pets/7", {}, None, 200),
        ("DELETE", "/api/pets/x", {}, None, 400),
        ("PUT", "/api/pets/7", {}, None, 405),
        ("GET", "/api/cats", {}, None, 404),
    ]),
    "polymorphism-3.0-oneOf-allOf": ("polymorphism.json", None, [], [
        ("POST", "/anything/one-of-primitive", {}, "text", 200),
        ("POST", "/anything/one-of-primitive", {}, 7, 200),
        ("POST", "/anything/one-of-primitive", {}, 7.5, 400),
        ("POST", "/anything/any-of-primitive", {}, [], 400),
        ("POST", "/anything/all-of-object", {}, {"a": "x", "c": "y"}, 200),
        ("POST", "/anything/all-of-object", {}, {"a": 1}, 400),
        ("POST", "/anything/nested-one-of-object-ref", {}, {"config": {"a": "x"}, "extra": 1}, 400),
        ("GET", "/anything/one-of-primitive", {}, None, 405),
        ("POST", "/anything/else", {}, {}, 404),
    ]),
    "schema-circular-3.0-recursive": ("schema-circular.json", None, [], [
        ("POST", "/not-quite-circular", {}, {"rules": {}}, 200),
        ("POST", "/not-quite-circular", {}, {"rules": 5}, 400),
        ("PUT", "/circular", {"content-type": "multipart/form-data; boundary=x"}, b"--x--", 200),
        ("GET", "/circular", {}, None, 405),
    ]),
    "security-3.0-schemes": ("security.json", "security.yaml", [], [
        ("GET", "/anything/apiKey?apiKey={write:things}", {}, None, 200),
        ("GET", "/anything/apiKey", {}, None, 401),
        ("PUT", "/anything/apiKey", {"x-api-key": "{write:things}"}, None, 200),
        ("POST", "/anything/oauth2", "write:things", None, 200),
        ("POST", "/anything/oauth2", "read", None, 403),
        ("GET", "/anything/optional-auth", {}, None, 200),
        ("GET", "/anything/optional-auth?apiKey=forged", {}, None, 401),
        ("POST", "/anything/no-auth?x=1", {}, None, 400),
        ("POST", "/anything/nothing", {}, None, 404),
    ]),
    "star-trek-3.0-large": ("star-trek.json", None, [], [
        ("GET", "/api/v1/rest/animal?uid=ANMA0000000001", {}, None, 200),
        ("GET", "/api/v1/rest/animal", {}, None, 400),
        ("GET", "/api/v1/rest/spacecraft/search?pageNumber=2&pageSize=50", {}, None, 200),
        ("GET", "/api/v1/rest/spacecraft/search?pageNumber=two", {}, None, 400),
        ("POST", "/api/v1/rest/spacecraft/search?sort=name",
         {"content-type": "application/x-www-form-urlencoded"}, b"name=Enterprise", 200),
        ("DELETE", "/api/v1/rest/animal", {}, None, 405),
        ("GET", "/api/v1/rest/tribble", {}, None, 404),
    ]),
    "train-travel-3.1-oauth": ("train-travel.json", "train-travel.yaml", [], [
        ("GET", "/trips?origin=efdbb9d1-02c2-4bc3-afb7-6788d8782b1e"
                "&destination=b2e783e1-c824-4d63-b37a-d8d698862f1d&date=2024-02-01T09:00:00Z", "read", None, 200),
        ("GET", "/trips?origin=efdbb9d1-02c2-4bc3-afb7-6788d8782b1e&date=2024-02-01T09:00:00Z", "read", None, 400),
        ("GET", "/trips?origin=a&destination=b&date=c&bicycles=maybe", "read", None, 400),
        ("GET", "/stations", "write:things", None, 403),
        ("GET", "/stations", None, None, 401),
        ("POST", "/bookings/1725ff48-ab45-4bb5-9d02-88745177dedb/payment", "read",
         {"amount": 49.99, "currency": "gbp",
          "source": {"object": "card", "name": "J. Doe", "number": "4242424242424242", "cvc": 123,
                     "exp_month": 12, "exp_year": 2030, "address_country": "gb"}}, 200),
        ("POST", "/bookings/1725ff48-ab45-4bb5-9d02-88745177dedb/payment", "read",
         {"amount": "lots", "currency": "gbp"}, 400),
        ("PUT", "/bookings", "read", None, 405),
        ("GET", "/trains", "read", None, 404),
    ]),
}


def request_for(probe, tokens):
    method, path, headers, doc, status = probe
    if isinstance(headers, str):
        headers = ({"api_key": tokens[headers.split(":", 1)[1]]} if headers.startswith("api_key:")
                   else bearer(tokens[headers]))
    headers = dict(headers or {})
    for scope, t in tokens.items():
        path = path.replace("{" + scope + "}", t)
        headers = {k: v.replace("{" + scope + "}", t) for k, v in headers.items()}
    data = None
    if doc is not None:
        data = doc if isinstance(doc, bytes) else body(doc)
        headers.setdefault("content-type", "application/json")
    return method, path, headers, data, status


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_documents_are_enforced_as_written(case, tokens):
    spec, overlay, args, probes = CASES[case]
    config = imported(spec, overlay, *args)
    code, out = validate(config)
    assert code == 0, out[-3000:]
    with start_envoy(config) as env:
        failures = []
        for probe in probes:
            method, path, headers, data, status = request_for(probe, tokens)
            r = env.request(method, path, headers=headers, body=data)
            if r.status != status:
                failures.append(f"{method} {probe[1]}: {r.status}, want {status}: {r.body[:300]!r}")
        assert not failures, "\n".join(failures)
        # Nothing the filter refused reached the upstream.
        refused = sum(1 for p in probes if p[4] >= 400)
        assert len(env.upstream_requests()) == len(probes) - refused


def test_demo_spec_routes_are_the_importers_output():
    """envoy/envoy.yaml's second listener carries the configuration the importer
    writes for envoy/openapi-demo.yaml: regenerate it with `make openapi-demo`."""
    r = subprocess.run([OPENAPI, os.path.join(ROOT, "envoy", "openapi-demo.yaml"), "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        doc = yaml.safe_load(f)
    listener = next(li for li in doc["static_resources"]["listeners"] if li["name"] == "openapi-demo")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    assert wasm["typed_config"]["config"]["configuration"]["value"] == json.loads(r.stdout)
