"""Wycheproof RS* and ES* JWS vectors through a real Envoy, verified by Envoy's
verify_signature (`signature_backend: host`).

`tests/conformance_jws.rs` runs every vector natively, against the module and
against a stand-in for the host. Here the host is Envoy itself: each vector group
whose key the filter loads becomes a provider with that key and a route, and each
vector is sent as a Bearer token. The payloads are bytes such as `foo`, not JSON
objects, so a token whose signature verifies is still refused, with the detail
"the token payload is not a JSON object"; any other answer means the signature
(or the token's form) was refused. That verdict must match the vector's label.
"""
import json
import os

import pytest

from harness import ROOT, start_envoy

WYCHEPROOF = os.path.join(ROOT, "..", "shared", "conformance", "wycheproof",
                          "json_web_signature_test.json")
HOST_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "ES521"}
SIGNATURE_VERIFIED = "the token payload is not a JSON object"


def groups():
    """(provider name, key, vectors) of every RS*/ES* group whose key is for
    signatures (the encryption keys are refused when the configuration loads)."""
    with open(WYCHEPROOF) as f:
        doc = json.load(f)
    out = []
    for i, g in enumerate(doc["testGroups"]):
        key = g.get("public") or g.get("private")
        usable = key.get("use", "sig") == "sig" and "verify" in key.get("key_ops", ["verify"])
        if key.get("alg") in HOST_ALGS and usable:
            out.append((f"wp{i}", key, g["tests"]))
    return out


@pytest.mark.skipif(not os.path.exists(WYCHEPROOF), reason="../shared/conformance is absent")
def test_wycheproof_rs_and_es_vectors_through_envoy_verify_signature():
    gs = groups()
    cfg = {
        "signature_backend": "host",
        "providers": {name: {"issuer": "https://issuer.example/", "jwks": {"inline": {"keys": [key]}}}
                      for name, key, _ in gs},
        "routes": [{"name": name, "match": {"path": f"/{name}"}, "auth": {"requires": name}}
                   for name, _, _ in gs],
    }
    wrong, counted, valid = [], 0, 0
    with start_envoy(cfg) as env:
        for name, _, tests in gs:
            for t in tests:
                counted += 1
                valid += t["result"] == "valid"
                try:
                    r = env.get(f"/{name}", headers={"authorization": f"Bearer {t['jws']}"})
                    accepted = r.status == 401 and r.json().get("detail") == SIGNATURE_VERIFIED
                    assert r.status in (400, 401), r
                except ValueError:
                    accepted = False  # not a header value http.client will send
                if accepted != (t["result"] == "valid"):
                    wrong.append(f"tcId {t['tcId']} ({t['comment']}): labelled {t['result']}, "
                                 f"{'accepted' if accepted else 'rejected'}")
        stats = env.stats()
    host = sum(stats.get(f"apiguard.provider.{n}.signature.host", 0) for n, _, _ in gs)
    module = sum(stats.get(f"apiguard.provider.{n}.signature.module", 0) for n, _, _ in gs)
    print(f"wycheproof through Envoy (signature_backend: host): {counted} vectors in "
          f"{len(gs)} groups, {valid} labelled valid, {host} signatures checked by Envoy, "
          f"{len(wrong)} wrong")
    assert not wrong, "\n".join(wrong)
    assert counted >= 280 and valid >= 15
    assert module == 0, "every signature of these groups goes to Envoy"
    assert host >= valid
