"""mTLS peers (SPIFFE IDs), API keys and certificate-bound tokens through a real Envoy.

The test makes a CA, a server certificate and client certificates (Python
`cryptography`); Envoy listens three times: plain HTTP (API keys), TLS requiring a
client certificate (`mtls`), and TLS that asks for one without requiring it
(`optional`, for a client without a certificate). Clients present their
certificates with Python's `ssl`.
"""
import base64
import datetime
import hashlib
import http.client
import json
import os
import ssl
import subprocess
import tempfile
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm

from harness import bootstrap, cluster, poll, start_envoy
from idp import IdP

WEB = "spiffe://cluster.local/ns/shop/sa/web"
OPS = "spiffe://cluster.local/ns/ops/sa/cron"
EVIL = "spiffe://cluster.local/ns/shop/sa/evil"
ISS = "https://idp.identity.test/"
API_KEY = "ag_test_" + "k" * 32
OTHER_KEY = "ag_test_" + "o" * 32


# -- certificates ---------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(cn, issuer_cert, issuer_key, sans, ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn))
         .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    return cert, key


class Pki:
    def __init__(self):
        self.ca, self.ca_key = _cert("api-guard test CA", None, None, None, ca=True)
        self.server = _cert("localhost", self.ca, self.ca_key,
                            [x509.DNSName("localhost")])
        self.dir = tempfile.mkdtemp(prefix="apiguard-pki-")
        self.ca_path = self._write("ca.pem", _pem(self.ca))
        self.clients = {}
        for name, sans in {
            "web": [x509.UniformResourceIdentifier(WEB)],
            "ops": [x509.UniformResourceIdentifier(OPS)],
            "evil": [x509.UniformResourceIdentifier(EVIL)],
            "nosan": [x509.DNSName("client.test")],
        }.items():
            cert, key = _cert(name, self.ca, self.ca_key, sans)
            self.clients[name] = (self._write(f"{name}.pem", _pem(cert)),
                                  self._write(f"{name}.key", _pem(key)),
                                  cert)

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def thumbprint(self, client):
        """RFC 8705 x5t#S256 of a client certificate."""
        der = self.clients[client][2].public_bytes(serialization.Encoding.DER)
        return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    def tls_context(self, require):
        ctx = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": require,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"inline_string": _pem(self.server[0])},
                    "private_key": {"inline_string": _pem(self.server[1])},
                }],
                "validation_context": {"trusted_ca": {"inline_string": _pem(self.ca)}},
            },
        }
        return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


# -- tokens and keys --------------------------------------------------------------

JWT_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = {"keys": [{**ECAlgorithm.to_jwk(JWT_KEY.public_key(), as_dict=True), "alg": "ES256", "kid": "k1"}]}


def token(cnf=None, sub="alice"):
    claims = {"iss": ISS, "sub": sub, "exp": 4_000_000_000}
    if cnf is not None:
        claims["cnf"] = cnf
    return jwt.encode(claims, JWT_KEY, algorithm="ES256", headers={"kid": "k1"})


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def route(name, path, requires):
    return {"name": name, "match": {"path": path}, "auth": {"requires": requires}}


CONFIG = {
    "providers": {
        "mesh": {"peer": {"spiffe_ids": [WEB, "spiffe://cluster.local/ns/ops/*"]},
                 "claim_to_headers": [{"claim": "sub", "header": "x-peer-id"}]},
        "keys": {"api_key": {"from_headers": [{"name": "x-api-key"}], "from_params": ["api_key"],
                             "forward": False,
                             "keys": [{"id": "acme", "sha256": sha256_hex(API_KEY),
                                       "claims": {"sub": "acme", "plan": "gold"}},
                                      {"id": "other", "sha256": sha256_hex(OTHER_KEY).upper()}]},
                 "claim_to_headers": [{"claim": "key_id", "header": "x-key-id"},
                                      {"claim": "plan", "header": "x-plan"}]},
        "main": {"issuer": ISS, "jwks": {"inline": JWKS},
                 "claim_to_headers": [{"claim": "sub", "header": "x-user-id"}]},
        "bound": {"issuer": ISS, "jwks": {"inline": JWKS}, "require_cert_binding": True,
                  "from_headers": [{"name": "x-bound-token", "value_prefix": "Bearer "}]},
    },
    "routes": [
        route("peer", "/peer", "mesh"),
        route("peer-jwt", "/peer-jwt", {"all": ["mesh", "main"]}),
        route("keys", "/keys", "keys"),
        {"name": "gold", "match": {"path": "/gold"},
         "auth": {"requires": {"any": ["keys", "main"]}, "claims": {"plan": {"any_of": ["gold"]}}}},
        route("bound", "/bound", "bound"),
    ],
}


@pytest.fixture(scope="module")
def pki():
    return Pki()


@pytest.fixture(scope="module")
def env(pki):
    def make(upstream_port):
        doc = bootstrap(dict(CONFIG, metrics_flush_ms=100), upstream_port)
        plain = doc["static_resources"]["listeners"][0]
        listeners = [plain]
        for name, require in (("mtls", True), ("optional", False)):
            lst = json.loads(json.dumps(plain))
            lst["name"] = name
            lst["filter_chains"][0]["transport_socket"] = pki.tls_context(require)
            listeners.append(lst)
        doc["static_resources"]["listeners"] = listeners
        return doc

    with start_envoy(CONFIG, make_bootstrap=make) as e:
        statuses = json.loads(e.admin_get("/listeners?format=json"))["listener_statuses"]
        e.ports = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}
        yield e


def tls_get(env, pki, path, client=None, listener="mtls", headers=None):
    ctx = ssl.create_default_context(cafile=pki.ca_path)
    if client:
        cert, key, _ = pki.clients[client]
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("localhost", env.ports[listener], context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def last_upstream(env):
    return env.upstream_requests()[-1]


def upstream_header(env, name):
    h = last_upstream(env)["headers"]
    return {k.lower(): v for k, v in h.items()}.get(name)


def problem_type(body):
    return json.loads(body)["type"].rsplit(":", 1)[-1]


# -- peers ----------------------------------------------------------------------

def test_listed_and_wildcard_peers_pass_with_sub(env, pki):
    for client, sub in (("web", WEB), ("ops", OPS)):
        status, _, _ = tls_get(env, pki, "/peer", client)
        assert status == 200
        assert upstream_header(env, "x-peer-id") == sub
    assert env.stat("apiguard.provider.mesh.verified") >= 2


def test_unlisted_peer_and_cert_without_uri_san_are_forbidden(env, pki):
    for client in ("evil", "nosan"):
        status, _, body = tls_get(env, pki, "/peer", client)
        assert status == 403, body
        assert problem_type(body) == "forbidden"
    assert env.stat("apiguard.provider.mesh.peer") >= 2


def test_no_client_certificate_is_missing_token(env, pki):
    n = len(env.upstream_requests())
    status, headers, body = tls_get(env, pki, "/peer", None, listener="optional")
    assert status == 401, body
    assert problem_type(body) == "missing-token"
    # A plain connection cannot claim an identity with headers.
    r = env.get("/peer", headers={"x-forwarded-client-cert": f"By=x;URI={WEB}",
                                  "x-peer-id": WEB})
    assert r.status == 401
    assert len(env.upstream_requests()) == n
    # The same certificate on the optional listener is accepted.
    status, _, _ = tls_get(env, pki, "/peer", "web", listener="optional")
    assert status == 200


def test_peer_and_jwt_together(env, pki):
    bearer = {"authorization": f"Bearer {token()}"}
    status, _, _ = tls_get(env, pki, "/peer-jwt", "web", headers=bearer)
    assert status == 200
    assert upstream_header(env, "x-peer-id") == WEB
    assert upstream_header(env, "x-user-id") == "alice"
    status, _, body = tls_get(env, pki, "/peer-jwt", "web")
    assert (status, problem_type(body)) == (401, "missing-token")
    status, _, _ = tls_get(env, pki, "/peer-jwt", "evil", headers=bearer)
    assert status == 403
    assert env.get("/peer-jwt", headers=bearer).status == 401


# -- API keys -------------------------------------------------------------------

def test_api_key_from_header_is_stripped_and_gives_claims(env):
    r = env.get("/keys", headers={"x-api-key": API_KEY, "x-key-id": "spoofed"})
    assert r.status == 200, r
    assert upstream_header(env, "x-api-key") is None
    assert upstream_header(env, "x-key-id") == "acme"
    assert upstream_header(env, "x-plan") == "gold"
    r = env.get("/keys", headers={"x-api-key": OTHER_KEY})
    assert r.status == 200
    assert upstream_header(env, "x-key-id") == "other"


def test_api_key_from_param_is_stripped(env):
    r = env.get(f"/keys?a=1&api_key={API_KEY}&b=2")
    assert r.status == 200, r
    assert last_upstream(env)["path"] == "/keys?a=1&b=2"
    assert upstream_header(env, "x-key-id") == "acme"


def test_wrong_empty_and_missing_api_keys(env):
    n = len(env.upstream_requests())
    for headers, path, want in (
        ({"x-api-key": API_KEY[:-1]}, "/keys", "invalid-token"),
        ({"x-api-key": API_KEY + "x"}, "/keys", "invalid-token"),
        ({}, "/keys?api_key=nope", "invalid-token"),
        ({"x-api-key": ""}, "/keys", "missing-token"),
        ({}, "/keys?api_key=", "missing-token"),
        ({}, "/keys", "missing-token"),
    ):
        r = env.get(path, headers=headers)
        assert (r.status, problem_type(r.body)) == (401, want), (headers, path, r)
        assert API_KEY not in r.body.decode()
    assert len(env.upstream_requests()) == n
    assert env.stat("apiguard.provider.keys.unknown_key") >= 3
    assert env.stat("apiguard.provider.keys.missing") >= 3
    assert API_KEY not in env.log()


def test_api_key_claims_feed_claim_rules(env):
    assert env.get("/gold", headers={"x-api-key": API_KEY}).status == 200
    r = env.get("/gold", headers={"x-api-key": OTHER_KEY})
    assert r.status == 403, r


# -- certificate-bound tokens -----------------------------------------------------

def bound_header(t):
    return {"x-bound-token": f"Bearer {t}"}


def test_bound_token_from_the_right_certificate(env, pki):
    t = token(cnf={"x5t#S256": pki.thumbprint("web")})
    status, _, body = tls_get(env, pki, "/bound", "web", headers=bound_header(t))
    assert status == 200, body


def test_bound_token_refused_otherwise(env, pki):
    bound_to_web = token(cnf={"x5t#S256": pki.thumbprint("web")})
    cases = (
        ("evil", "mtls", bound_to_web, "another certificate"),
        ("web", "mtls", token(), "no cnf"),
        (None, "optional", bound_to_web, "no client certificate"),
    )
    for client, listener, t, why in cases:
        status, headers, body = tls_get(env, pki, "/bound", client, listener=listener,
                                        headers=bound_header(t))
        assert status == 401, (client, body)
        assert problem_type(body) == "invalid-token"
        assert "certificate binding failed" in headers["www-authenticate"]
        assert why in json.loads(body)["detail"]
    r = env.get("/bound", headers=bound_header(bound_to_web))
    assert r.status == 401 and "certificate binding failed" in r.headers["www-authenticate"]
    assert env.stat("apiguard.provider.bound.cert_binding") >= 4


def test_make_api_key_prints_a_key_and_its_sha256_entry():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(["make", "-s", "api-key", "ARGS=--id acme --claims '{\"plan\": \"gold\"}'"],
                         cwd=root, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2
    key, entry = out[0], json.loads(out[1])
    assert len(key) >= 40 and key.isascii() and not set(key) & set("&=#; ")
    assert entry == {"id": "acme", "sha256": sha256_hex(key), "claims": {"plan": "gold"}}
    again = subprocess.run(["make", "-s", "api-key"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert again[0] != key


# -- API keys fetched from a cluster ------------------------------------------------

def test_remote_api_keys_refresh_and_keep_the_last_good_document():
    idp = IdP()

    def doc(key, kid):
        return {"keys": [{"id": kid, "sha256": sha256_hex(key), "claims": {"plan": "gold"}}]}

    idp.serve("/api-keys.json", doc(API_KEY, "first"))
    cfg = {
        "providers": {"rkeys": {"api_key": {"remote": {"cluster": "idp", "path": "/api-keys.json",
                                                       "refresh_seconds": 1}},
                                "claim_to_headers": [{"claim": "key_id", "header": "x-key-id"}]}},
        "routes": [route("rkeys", "/rkeys", "rkeys")],
    }
    try:
        with start_envoy(cfg, clusters=[cluster("idp", idp.port)]) as e:
            def get(key):
                return e.get("/rkeys", headers={"x-api-key": key})

            assert poll(lambda: get(API_KEY).status, lambda s: s == 200, 10) == 200
            assert upstream_header(e, "x-key-id") == "first"
            assert get(OTHER_KEY).status == 401
            idp.serve("/api-keys.json", doc(OTHER_KEY, "second"))
            assert poll(lambda: get(OTHER_KEY).status, lambda s: s == 200, 10) == 200
            assert upstream_header(e, "x-key-id") == "second"
            assert get(API_KEY).status == 401
            for mode in ("500", "garbage", "no_keys"):
                idp.fail("/api-keys.json", mode)
                since = time.monotonic()
                poll(lambda: idp.hits("/api-keys.json", since), lambda n: n >= 2, 10)
                assert get(OTHER_KEY).status == 200, mode
            assert e.stat("apiguard.provider.rkeys.jwks.fetch_success") >= 2
            assert e.stat("apiguard.provider.rkeys.jwks.fetch_failure") >= 3
            assert OTHER_KEY not in e.log() and API_KEY not in e.log()
    finally:
        idp.close()
