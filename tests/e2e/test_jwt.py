"""JWT authentication and claims authorization through a real Envoy and upstream.

Keys are generated here; tokens are minted with PyJWT (or by hand where a token
must be malformed on purpose). Envoys: `env` (inline key sets, the default
`signature_backend: auto`, which is Envoy's verify_signature on this Envoy),
`backend_env` (the same configuration once with `signature_backend: host` and once
with `module`, for the tests whose outcome rests on the signature check) and
`remote_env` (key sets fetched from `idp.IdP`, a local HTTP server).
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import time
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from harness import closed_port, cluster, poll, start_envoy, validate
from idp import IdP

ISS = "https://idp.e2e.test/"
AUD = "orders-api"
ISS_PARTNER = "https://partner.e2e.test"
ISS_REMOTE = "https://remote.e2e.test/"
FORWARDED = ("x-user-id", "x-roles", "x-tier", "x-jwt-payload")  # headers the filter sets

# -- keys ---------------------------------------------------------------------

RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
EC_CURVES = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1(),
             "ES256K": ec.SECP256K1()}
HMAC_ALGS = {"HS256": 32, "HS384": 48, "HS512": 64}  # secret size = hash size
ASYM_ALGS = RSA_ALGS + list(EC_CURVES) + ["EdDSA"]
# What Envoy's verify_signature checks under `signature_backend: host` (the rest
# stays in the module whatever the setting).
HOST_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
BACKENDS = ["host", "module"]


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key(alg):
    if alg in RSA_ALGS:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg in EC_CURVES:
        return ec.generate_private_key(EC_CURVES[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return os.urandom(HMAC_ALGS[alg])


def public_jwk(alg, key, kid):
    """The JWK a key set publishes for `key`, with `alg` and `kid`."""
    if alg in HMAC_ALGS:
        jwk = {"kty": "oct", "k": b64u(key)}
    elif alg in RSA_ALGS:
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif alg in EC_CURVES:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "alg": alg, "kid": kid}


class Key:
    def __init__(self, alg, kid):
        self.alg, self.kid, self.private = alg, kid, new_key(alg)
        self.jwk = public_jwk(alg, self.private, kid)


def jwks(*keys):
    return {"keys": [k.jwk for k in keys]}


# kid = the algorithm in lower case.
ASYM = {alg: Key(alg, alg.lower()) for alg in ASYM_ALGS}
HMAC_KEYS = {alg: Key(alg, alg.lower()) for alg in HMAC_ALGS}
PARTNER = Key("EdDSA", "partner-1")
STRANGER = Key("ES256", "ghost")  # in no key set
ES256 = ASYM["ES256"]


# -- tokens -------------------------------------------------------------------

def claims(drop=(), **extra):
    """The base payload, with `extra` claims set and `drop` claims removed:

        {"iss": "https://idp.e2e.test/", "aud": "orders-api", "sub": "alice",
         "roles": ["clerk"], "shop_id": "s1", "iat": now, "exp": now + 600, "jti": random}

    Every token below is this payload plus what its call spells out, e.g.
    `mint(shop_id="s2")` is the base payload with "shop_id": "s2", ES256, kid "es256".
    """
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "alice", "roles": ["clerk"], "shop_id": "s1",
         "iat": now, "exp": now + 600, "jti": b64u(os.urandom(8))}
    c.update(extra)
    for k in drop:
        c.pop(k, None)
    return c


def mint(key=ES256, kid=None, headers=None, **claim_args):
    """A token signed by `key` (PyJWT), header kid = key.kid unless given."""
    h = {"kid": key.kid if kid is None else kid, **(headers or {})}
    return jwt.encode(claims(**claim_args), key.private, algorithm=key.alg, headers=h)


def raw_token(header, payload, sign=None):
    """A compact JWS built by hand; `sign(signing_input) -> bytes` or no signature."""
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(payload).encode())}"
    sig = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64u(sig)}"


def pyjwt_signer(key):
    algo = jwt.get_algorithm_by_name(key.alg)
    return lambda data: algo.sign(data, algo.prepare_key(key.private))


def hs256_with(secret):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def bearer(token):
    return {"authorization": f"Bearer {token}"}


# -- requests -----------------------------------------------------------------

def send(env, path, token=None, headers=None):
    """GET `path`; returns (response, requests the upstream received for it)."""
    h = dict(headers or {})
    if token is not None:
        h.update(bearer(token))
    before = len(env.upstream_requests())
    r = env.get(path, headers=h)
    return r, env.upstream_requests()[before:]


def allowed(env, path, token=None, headers=None):
    r, seen = send(env, path, token, headers)
    assert r.status == 200, r
    assert len(seen) == 1, seen
    return seen[0]


def rejected(env, path, status, token=None, headers=None, www="invalid_token"):
    """Asserts a problem+json rejection that never reached the upstream."""
    r, seen = send(env, path, token, headers)
    assert r.status == status, r
    assert seen == [], "the upstream must see nothing"
    assert r.headers["content-type"] == "application/problem+json", r
    doc = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"], doc
    challenge = r.headers.get("www-authenticate")
    if www == "plain":
        assert challenge == "Bearer", r  # RFC 6750 §3.1: no error code without a token
    elif www == "invalid_token":
        assert challenge.startswith('Bearer error="invalid_token", error_description="'), r
    elif www == "insufficient_scope":
        assert challenge.startswith('Bearer error="insufficient_scope"'), r
    if token:
        assert token not in r.body.decode() and token not in (challenge or ""), "token echoed"
    return doc


class Delta:
    """Counter changes across a block: `with Delta(env, names) as d: ...; d["name"]`."""

    def __init__(self, env, *names):
        self.env, self.names = env, names

    def __enter__(self):
        self.before = {n: self.env.stat(n) for n in self.names}
        return self

    def __exit__(self, *exc):
        stats = self.env.stats()
        self.after = {n: stats.get(n, 0) for n in self.names}

    def __getitem__(self, name):
        return self.after[name] - self.before[name]


# -- the inline-keys Envoy ----------------------------------------------------

def route(name, path, auth=None):
    r = {"name": name, "match": {"path": path}}
    if auth is not None:
        r["auth"] = auth
    return r


CONFIG = {
    "providers": {
        # Every asymmetric algorithm; forwards the token (default).
        "asym": {"issuer": ISS, "audiences": [AUD], "max_lifetime_seconds": 3600,
                 "jwks": {"inline": jwks(*ASYM.values())}},
        # HMAC keys (a key set never mixes symmetric and asymmetric keys).
        "hmac": {"issuer": ISS, "jwks": {"inline": jwks(*HMAC_KEYS.values())}},
        # Every token source; strips the token; sets headers from claims.
        "src": {"issuer": ISS, "audiences": [AUD], "jwks": {"inline": jwks(ES256)},
                "from_params": ["access_token"], "from_cookies": ["session"], "forward": False,
                "claim_to_headers": [{"claim": "sub", "header": "x-user-id"},
                                     {"claim": "roles", "header": "x-roles"},
                                     {"claim": "realm.tier", "header": "x-tier"}],
                "forward_payload_header": "x-jwt-payload"},
        "partner": {"issuer": ISS_PARTNER, "jwks": {"inline": jwks(PARTNER)},
                    "from_headers": [{"name": "x-partner-token"}]},
    },
    "routes": [
        route("alg-asym", "/alg/asym", {"requires": "asym"}),
        route("alg-hmac", "/alg/hmac", {"requires": "hmac"}),
        route("strict", "/strict", {"requires": "asym"}),
        route("fwd", "/fwd", {"requires": "src"}),
        route("optional", "/optional", {"requires": "src", "allow_missing": True}),
        route("any", "/any", {"requires": {"any": ["asym", "partner"]}}),
        route("all", "/all", {"requires": {"all": ["asym", "partner"]}}),
        route("orders", "/shops/{shop}/orders/{id}", {
            "requires": "asym", "claims": {"roles": {"any_of": ["clerk", "admin"]}},
            "bind": {"shop": "shop_id"}}),
        route("scoped", "/scoped", {
            "requires": "asym", "claims": {"scope": {"all_of": ["orders:read", "orders:write"]}}}),
        route("realm", "/realm", {
            "requires": "asym", "claims": {"realm.roles": {"any_of": ["ops"]},
                                           "tenant": {"equals": "acme"}}}),
        route("public", "/public"),
    ],
}


@pytest.fixture(scope="module")
def env():
    with start_envoy(CONFIG) as e:
        yield e


@pytest.fixture(scope="module", params=BACKENDS)
def backend_env(request):
    """(signature_backend, Envoy) for each backend."""
    with start_envoy(dict(CONFIG, signature_backend=request.param)) as e:
        yield request.param, e


SIGNATURE_COUNTERS = tuple(f"apiguard.provider.asym.signature.{b}" for b in BACKENDS)


def checked_by(backend, alg):
    """The backend that checks an `alg` signature under `signature_backend: backend`."""
    return "host" if backend == "host" and alg in HOST_ALGS else "module"


# 1. Every key type ------------------------------------------------------------

@pytest.mark.parametrize("alg", ASYM_ALGS)
def test_good_asymmetric_token_passes_and_is_forwarded(env, alg):
    # {"iss": ISS, "aud": "orders-api", "sub": "alice", ..., "exp": now+600}, kid = alg
    token = mint(ASYM[alg])
    with Delta(env, "apiguard.provider.asym.verified", *SIGNATURE_COUNTERS) as d:
        seen = allowed(env, "/alg/asym", token)
    assert seen["headers"]["authorization"] == f"Bearer {token}"  # forward: true (default)
    assert d["apiguard.provider.asym.verified"] == 1
    # `auto` takes the host here (Envoy 1.40 has verify_signature).
    by = checked_by("host", alg)
    assert {b: d[f"apiguard.provider.asym.signature.{b}"] for b in BACKENDS} == \
        {b: int(b == by) for b in BACKENDS}, alg


def test_every_algorithm_passes_on_each_backend(backend_env):
    # One token per algorithm, all through one counter reading (a reading costs
    # several flush periods): each passes, and the backends' counts add up.
    backend, env = backend_env
    with Delta(env, "apiguard.provider.asym.verified", *SIGNATURE_COUNTERS) as d:
        for alg in ASYM_ALGS:
            allowed(env, "/alg/asym", mint(ASYM[alg]))
    on_host = sum(checked_by(backend, alg) == "host" for alg in ASYM_ALGS)
    assert d["apiguard.provider.asym.verified"] == len(ASYM_ALGS)
    assert (d["apiguard.provider.asym.signature.host"],
            d["apiguard.provider.asym.signature.module"]) == \
        (on_host, len(ASYM_ALGS) - on_host), backend


def test_signature_backend_host_passes_validate():
    # `envoy --mode validate` runs the configure step, and with it the host's check.
    rc, out = validate(dict(CONFIG, signature_backend="host"))
    assert rc == 0, out[-3000:]
    assert "verified by Envoy (verify_signature)" in out


def test_the_backend_is_chosen_once_and_logged(backend_env, env):
    backend, benv = backend_env
    host_line = ("signatures: RS256/384/512 and ES256/384/512 verified by Envoy "
                 "(verify_signature), the other algorithms in the module")
    module_line = "signatures: all verified in the module (signature_backend: module)"
    assert (host_line if backend == "host" else module_line) in benv.log()
    # `auto` (the default) takes the host on an Envoy that has verify_signature.
    assert host_line in env.log()


@pytest.mark.parametrize("alg", list(HMAC_ALGS))
def test_good_hmac_token_passes(env, alg):
    token = mint(HMAC_KEYS[alg])  # same claims, HMAC-signed
    allowed(env, "/alg/hmac", token)


def test_a_key_verifies_only_its_own_algorithm(backend_env):
    _, env = backend_env
    # The RS256 key signing a token labelled RS512 (kid rs256): the key fixes RS256.
    signer = jwt.get_algorithm_by_name("RS512")
    token = raw_token({"alg": "RS512", "kid": "rs256"}, claims(),
                      lambda m: signer.sign(m, ASYM["RS256"].private))
    rejected(env, "/strict", 401, token)
    # The same key material under PS256 (kid rs256) is refused as well.
    ps = jwt.get_algorithm_by_name("PS256")
    token = raw_token({"alg": "PS256", "kid": "rs256"}, claims(),
                      lambda m: ps.sign(m, ASYM["RS256"].private))
    rejected(env, "/strict", 401, token)


# 2. Rejections ----------------------------------------------------------------

def tampered_payload():
    # Signed {"sub": "alice", ...}; payload swapped for {"sub": "admin", ...}.
    h, _, s = mint().split(".")
    return f"{h}.{b64u(json.dumps(claims(sub='admin', roles=['admin'])).encode())}.{s}"


def tampered_signature():
    h, p, s = mint().split(".")
    sig = bytearray(b64u_decode(s))
    sig[5] ^= 0x01
    return f"{h}.{p}.{b64u(bytes(sig))}"


def rsa_public_pem(fmt):
    return ASYM["RS256"].private.public_key().public_bytes(serialization.Encoding.PEM, fmt)


def es256_der_signature():
    # A valid ECDSA signature, but DER-encoded instead of JWS's fixed-size r || s.
    return raw_token({"alg": "ES256", "kid": "es256"}, claims(),
                     lambda m: ES256.private.sign(m, ec.ECDSA(hashes.SHA256())))


REJECTIONS = {
    # name: (token factory, status, provider reason)
    "expired": (lambda: mint(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000), 401, "expired"),
    "not_yet_valid": (lambda: mint(nbf=int(time.time()) + 3600), 401, "not_yet_valid"),
    "iat_in_future": (lambda: mint(iat=int(time.time()) + 3600, exp=int(time.time()) + 3700),
                      401, "not_yet_valid"),
    "wrong_issuer": (lambda: mint(iss="https://evil.example/"), 401, "issuer"),
    "wrong_audience": (lambda: mint(aud="billing-api"), 403, "audience"),
    "no_audience": (lambda: mint(drop=["aud"]), 403, "audience"),
    "tampered_payload": (tampered_payload, 401, "bad_signature"),
    "tampered_signature": (tampered_signature, 401, "bad_signature"),
    "es256_der_signature": (es256_der_signature, 401, "bad_signature"),
    "unknown_kid": (lambda: mint(STRANGER), 401, "unknown_kid"),
    "known_kid_wrong_key": (lambda: mint(STRANGER, kid="es256"), 401, "bad_signature"),
    "alg_none": (lambda: raw_token({"alg": "none", "typ": "JWT"}, claims()), 401, "bad_signature"),
    "alg_None_with_kid": (lambda: raw_token({"alg": "None", "kid": "es256"}, claims()),
                          401, "bad_signature"),
    "alg_none_with_signature": (lambda: raw_token({"alg": "none", "kid": "es256"}, claims(),
                                                  lambda m: b"\x00" * 64), 401, "bad_signature"),
    # Key confusion: HS256 with the RSA public key (as PEM / as JWK JSON) as HMAC secret.
    "hs256_secret_spki_pem": (lambda: raw_token(
        {"alg": "HS256", "kid": "rs256"}, claims(),
        hs256_with(rsa_public_pem(serialization.PublicFormat.SubjectPublicKeyInfo))), 401, "bad_signature"),
    "hs256_secret_pkcs1_pem": (lambda: raw_token(
        {"alg": "HS256", "kid": "rs256"}, claims(),
        hs256_with(rsa_public_pem(serialization.PublicFormat.PKCS1))), 401, "bad_signature"),
    "hs256_secret_jwk_json": (lambda: raw_token(
        {"alg": "HS256", "kid": "rs256"}, claims(),
        hs256_with(json.dumps(ASYM["RS256"].jwk).encode())), 401, "bad_signature"),
    "hs256_secret_pem_no_kid": (lambda: raw_token(
        {"alg": "HS256"}, claims(),
        hs256_with(rsa_public_pem(serialization.PublicFormat.SubjectPublicKeyInfo))), 401, "bad_signature"),
    "hs256_secret_ec_point": (lambda: raw_token(
        {"alg": "HS256", "kid": "es256"}, claims(),
        hs256_with(ES256.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))),
        401, "bad_signature"),
    "missing_exp": (lambda: mint(drop=["exp"]), 401, "malformed"),
    "exp_not_a_number": (lambda: mint(exp=str(int(time.time()) + 600)), 401, "malformed"),
    "lifetime_over_max": (lambda: mint(exp=int(time.time()) + 7200), 401, "expired"),
    "lifetime_over_max_no_iat": (lambda: mint(drop=["iat"], exp=int(time.time()) + 7200), 401, "expired"),
    "crit_header": (lambda: mint(headers={"crit": ["exp"], "exp": 1}), 401, "malformed"),
    "payload_not_an_object": (lambda: raw_token({"alg": "ES256", "kid": "es256"}, ["not", "an", "object"],
                                                pyjwt_signer(ES256)), 401, "malformed"),
    "not_a_jws": (lambda: "abc.def", 401, "malformed"),
}


# Rejections decided by the signature check, or after it passed: on each backend.
SIGNATURE_CASES = ["tampered_payload", "tampered_signature", "es256_der_signature",
                   "known_kid_wrong_key", "payload_not_an_object", "expired"]


def test_signature_rejections_on_each_backend(backend_env):
    backend, env = backend_env
    reasons = sorted({REJECTIONS[c][2] for c in SIGNATURE_CASES} | {"bad_signature"})
    names = tuple(f"apiguard.provider.asym.{r}" for r in reasons) + SIGNATURE_COUNTERS
    want = {n: 0 for n in names}
    with Delta(env, *names) as d:
        for case in SIGNATURE_CASES:  # all ES256
            factory, status, reason = REJECTIONS[case]
            rejected(env, "/strict", status, factory())
            want[f"apiguard.provider.asym.{reason}"] += 1
        # A tampered signature of the other host families.
        for alg in ("RS256", "ES384", "ES512"):
            h, p, s = mint(ASYM[alg]).split(".")
            sig = bytearray(b64u_decode(s))
            sig[len(sig) // 2] ^= 0x04
            rejected(env, "/strict", 401, f"{h}.{p}.{b64u(bytes(sig))}")
            want["apiguard.provider.asym.bad_signature"] += 1
    checks = len(SIGNATURE_CASES) + 3
    want[f"apiguard.provider.asym.signature.{checked_by(backend, 'ES256')}"] = checks
    assert {n: d[n] for n in names} == want, backend


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_invalid_token_is_rejected(env, case):
    factory, status, reason = REJECTIONS[case]
    token = factory()
    names = (f"apiguard.provider.asym.{reason}", f"apiguard.route.strict.decision.{reason}")
    with Delta(env, *names) as d:
        doc = rejected(env, "/strict", status, token,
                       www="invalid_token" if status == 401 else "insufficient_scope")
    assert doc["type"].endswith(":invalid-token" if status == 401 else ":forbidden"), doc
    assert (d[names[0]], d[names[1]]) == (1, 1), (case, d.before, d.after)


def test_hmac_route_refuses_an_rsa_labelled_token(env):
    # The reverse confusion: RS256 token (valid RSA signature) named after an HMAC kid.
    rejected(env, "/alg/hmac", 401, mint(ASYM["RS256"], kid="hs256", drop=["aud"]))


def test_no_token_is_plain_401(env):
    with Delta(env, "apiguard.provider.asym.missing", "apiguard.route.strict.decision.missing") as d:
        doc = rejected(env, "/strict", 401, www="plain")
        # A non-Bearer Authorization header is not a token either.
        rejected(env, "/strict", 401, headers={"authorization": "Basic YTpi"}, www="plain")
    assert doc["type"].endswith(":missing-token"), doc
    assert d["apiguard.provider.asym.missing"] == 2
    assert d["apiguard.route.strict.decision.missing"] == 2


# 3. Token sources, forward: false, requirements -----------------------------

def test_forward_false_strips_header_token(env):
    token = mint()
    seen = allowed(env, "/fwd?x=1", token)
    assert "authorization" not in seen["headers"], seen
    assert seen["path"] == "/fwd?x=1"


def test_token_from_query_parameter_is_stripped(env):
    token = mint()
    seen = allowed(env, f"/fwd?a=1&access_token={token}&b=2")
    assert token not in json.dumps(seen, default=str)
    url = urlsplit(seen["path"])
    assert url.path == "/fwd" and parse_qsl(url.query) == [("a", "1"), ("b", "2")], seen["path"]


def test_token_from_cookie_is_stripped_other_cookies_kept(env):
    token = mint()
    seen = allowed(env, "/fwd", headers={"cookie": f"theme=dark; session={token}; lang=en"})
    cookies = [c.strip() for c in seen["headers"].get("cookie", "").split(";")]
    assert sorted(cookies) == ["lang=en", "theme=dark"], seen["headers"]
    assert token not in json.dumps(seen, default=str)


def test_same_token_in_two_places_counts_once_and_both_are_stripped(env):
    token = mint()
    seen = allowed(env, f"/fwd?access_token={token}", token,
                   headers={"cookie": f"session={token}"})
    assert token not in json.dumps(seen, default=str), seen


def test_two_different_tokens_for_one_provider_are_rejected(env):
    one, two = mint(sub="alice"), mint(sub="bob")
    with Delta(env, "apiguard.provider.src.malformed") as d:
        rejected(env, f"/fwd?access_token={two}", 401, one)
        rejected(env, "/fwd", 401, one, headers={"cookie": f"session={two}"})
    assert d["apiguard.provider.src.malformed"] == 2


def send_raw(env, path, header_list):
    """GET with repeated headers allowed: [(name, value), ...] -> (status, upstream saw)."""
    before = len(env.upstream_requests())
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in header_list:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status, env.upstream_requests()[before:]
    finally:
        conn.close()


def test_a_second_token_cannot_hide_in_a_repeated_header_or_cookie(env):
    good = mint()
    forged = tampered_payload()
    for headers in ([("authorization", f"Bearer {good}"), ("authorization", f"Bearer {forged}")],
                    [("authorization", f"Bearer {good}"), ("authorization", f"Bearer {good}")],
                    [("cookie", f"session={good}"), ("cookie", f"session={forged}")]):
        status, seen = send_raw(env, "/fwd", headers)
        assert (status, seen) == (401, []), headers


def test_percent_encoded_parameter_name_is_a_token_source_too(env):
    good = mint()
    # The upstream would decode `access%5Ftoken` to `access_token`: it must be checked ...
    rejected(env, f"/fwd?access%5Ftoken={tampered_payload()}", 401, good)
    # ... and stripped when it holds the (valid) token.
    seen = allowed(env, f"/fwd?access%5Ftoken={good}&b=2")
    assert good not in json.dumps(seen, default=str) and seen["path"] == "/fwd?b=2", seen


def test_scheme_is_case_insensitive_and_quoted_cookie_accepted(env):
    token = mint()
    seen = allowed(env, "/fwd", headers={"authorization": f"bearer {token}"})
    assert "authorization" not in seen["headers"]
    seen = allowed(env, "/fwd", headers={"cookie": f'session="{token}"; a=b'})
    assert seen["headers"].get("cookie") == "a=b", seen["headers"]


def test_allow_missing_lets_anonymous_through_but_not_bad_tokens(env):
    seen = allowed(env, "/optional")
    assert not any(h in seen["headers"] for h in FORWARDED)
    rejected(env, "/optional", 401, mint(exp=int(time.time()) - 3600))
    rejected(env, "/optional", 401, "not-a-token")
    seen = allowed(env, "/optional", mint(sub="carol"))
    assert seen["headers"]["x-user-id"] == "carol"


def partner_token(**kw):
    # {"iss": ISS_PARTNER, "sub": "partner-svc", "exp": now+600} (EdDSA)
    return mint(PARTNER, iss=ISS_PARTNER, sub="partner-svc", drop=["aud"], **kw)


def test_requires_any_of_two_providers(env):
    allowed(env, "/any", mint())
    allowed(env, "/any", headers={"x-partner-token": partner_token()})
    allowed(env, "/any", mint(), headers={"x-partner-token": partner_token()})
    rejected(env, "/any", 401, www="plain")
    # Every token sent must be valid, even if another already satisfies `any`.
    expired = partner_token(exp=int(time.time()) - 3600)
    rejected(env, "/any", 401, mint(), headers={"x-partner-token": expired})


def test_requires_all_of_two_providers(env):
    allowed(env, "/all", mint(), headers={"x-partner-token": partner_token()})
    rejected(env, "/all", 401, mint(), www="plain")
    rejected(env, "/all", 401, headers={"x-partner-token": partner_token()}, www="plain")
    # A partner token in the Authorization header is not the partner's token.
    rejected(env, "/all", 401, partner_token())


# 4. Authorization: claims and bind ------------------------------------------

def test_bind_own_shop_passes_other_shop_is_403(env):
    clerk_s1 = mint(roles=["clerk"], shop_id="s1")  # {"roles": ["clerk"], "shop_id": "s1", ...}
    seen = allowed(env, "/shops/s1/orders/7", clerk_s1)
    assert seen["path"] == "/shops/s1/orders/7"
    with Delta(env, "apiguard.provider.asym.bind", "apiguard.route.orders.decision.bind") as d:
        doc = rejected(env, "/shops/s2/orders/7", 403, clerk_s1, www="insufficient_scope")
    assert doc["type"].endswith(":forbidden"), doc
    assert (d["apiguard.provider.asym.bind"], d["apiguard.route.orders.decision.bind"]) == (1, 1)
    rejected(env, "/shops/s2/orders/7", 403, mint(drop=["shop_id"]), www=None)


@pytest.mark.parametrize("path", ["/shops/%73%32/orders/7", "/shops/S2/orders/7",
                                  "/shops/s2/orders/7?shop=s1", "/shops/s1%2Fs2/orders/7",
                                  "/shops/s1/../s2/orders/7", "/shops/s1;shop_id=s1/../s2/orders/7"])
def test_bind_is_not_bypassed_by_encoding(env, path):
    # Token for shop s1; the path names another shop, encoded: never 200.
    r, seen = send(env, path, mint(shop_id="s1"))
    assert r.status in (400, 403, 404), r
    assert seen == []


def test_bind_compares_the_path_the_upstream_receives(env):
    # An encoded spelling of the own shop passes, and the upstream gets the path
    # that was authorised, not the raw one.
    seen = allowed(env, "/shops/%73%31/orders/7", mint(shop_id="s1"))
    assert seen["path"] == "/shops/s1/orders/7"
    seen = allowed(env, "/shops/s2/../s1/orders/7", mint(shop_id="s1"))
    assert seen["path"] == "/shops/s1/orders/7"


def test_claims_any_of_roles(env):
    allowed(env, "/shops/s1/orders/1", mint(roles=["viewer", "admin"]))
    with Delta(env, "apiguard.provider.asym.claims", "apiguard.route.orders.decision.claims") as d:
        rejected(env, "/shops/s1/orders/1", 403, mint(roles=["viewer"]), www="insufficient_scope")
        rejected(env, "/shops/s1/orders/1", 403, mint(drop=["roles"]), www="insufficient_scope")
    assert (d["apiguard.provider.asym.claims"], d["apiguard.route.orders.decision.claims"]) == (2, 2)


@pytest.mark.parametrize("scope,status", [
    ("orders:read orders:write", 200),
    ("profile orders:write orders:read", 200),
    (["orders:read", "orders:write"], 200),
    ("orders:read", 403),
    ("orders:read orders:write-all", 403),  # words, not substrings
    ("orders:read,orders:write", 403),
])
def test_claims_space_delimited_scope(env, scope, status):
    token = mint(scope=scope)
    if status == 200:
        allowed(env, "/scoped", token)
    else:
        rejected(env, "/scoped", 403, token, www="insufficient_scope")


@pytest.mark.parametrize("extra,status", [
    ({"realm": {"roles": ["dev", "ops"]}, "tenant": "acme"}, 200),
    ({"realm": {"roles": ["dev"]}, "tenant": "acme"}, 403),
    ({"realm": {"roles": ["ops"]}, "tenant": "acme-evil"}, 403),
    ({"realm": {"roles": ["ops"]}}, 403),
    ({"roles": ["ops"], "tenant": "acme"}, 403),  # top-level roles are not realm.roles
])
def test_claims_nested_dotted_claim_and_equals(env, extra, status):
    token = mint(**extra)
    if status == 200:
        allowed(env, "/realm", token)
    else:
        rejected(env, "/realm", 403, token, www="insufficient_scope")


# 5. Forwarded claims; spoofed copies removed --------------------------------

SPOOF = {"x-user-id": "admin", "X-Roles": "admin,root", "x-tier": "platinum",
         "x-jwt-payload": b64u(json.dumps({"sub": "admin", "roles": ["admin"]}).encode())}


def test_claims_and_payload_forwarded_spoofed_copies_replaced(env):
    payload = claims(sub="alice", roles=["clerk", "admin"], realm={"tier": "gold"})
    token = jwt.encode(payload, ES256.private, algorithm="ES256", headers={"kid": "es256"})
    seen = allowed(env, "/fwd", token, headers=SPOOF)["headers"]
    assert seen["x-user-id"] == "alice"
    assert seen["x-roles"] == "clerk,admin"
    assert seen["x-tier"] == "gold"
    assert seen["x-jwt-payload"] == token.split(".")[1]
    assert json.loads(b64u_decode(seen["x-jwt-payload"])) == payload


def test_spoofed_header_removed_when_the_token_lacks_the_claim(env):
    seen = allowed(env, "/fwd", mint(), headers=SPOOF)["headers"]  # no `realm` claim
    assert "x-tier" not in seen, seen
    assert seen["x-user-id"] == "alice"


def test_claim_with_control_characters_sets_no_header(env):
    # {"sub": "alice\r\nx-evil: 1", ...}: header injection attempt via a claim.
    seen = allowed(env, "/fwd", mint(sub="alice\r\nx-evil: 1"), headers=SPOOF)["headers"]
    assert "x-user-id" not in seen and "x-evil" not in seen, seen
    assert seen["x-roles"] == "clerk"


@pytest.mark.parametrize("path", ["/optional", "/public", "/alg/asym"])
def test_spoofed_headers_removed_without_a_verified_token_or_on_other_routes(env, path):
    token = mint() if path == "/alg/asym" else None
    seen = allowed(env, path, token, headers=SPOOF)["headers"]
    assert not any(h in seen for h in FORWARDED), seen


@pytest.mark.parametrize("path", ["/optional", "/public"])
def test_underscore_spellings_of_forwarded_headers_are_removed(env, path):
    # CGI/WSGI-style upstreams read `x_user_id` as `x-user-id`.
    spoof = {h.replace("-", "_"): "admin" for h in FORWARDED}
    seen = allowed(env, path, None, headers=spoof)["headers"]
    assert not any(h in seen for h in spoof), seen


# 7. Cache; 8. decision metrics ----------------------------------------------

def test_repeated_token_is_served_from_cache(backend_env):
    backend, env = backend_env
    token = mint()
    signature = f"apiguard.provider.asym.signature.{checked_by(backend, 'ES256')}"
    names = ("apiguard.provider.asym.verified", "apiguard.provider.asym.verified_cached",
             signature)
    with Delta(env, *names) as first:
        allowed(env, "/alg/asym", token)
    with Delta(env, *names) as second:
        allowed(env, "/alg/asym", token)
    assert [first[n] for n in names] == [1, 0, 1]
    assert [second[n] for n in names] == [0, 1, 0], "a cache hit checks no signature"


def test_cache_never_serves_a_token_past_exp(env):
    # Valid for about 3 more seconds (exp = now - 57, default skew 60 s).
    now = int(time.time())
    token = mint(iat=now - 100, exp=now - 57)
    names = ("apiguard.provider.asym.verified_cached", "apiguard.provider.asym.expired")
    with Delta(env, *names) as d:
        allowed(env, "/alg/asym", token)
        allowed(env, "/alg/asym", token)  # from the cache
        time.sleep(max(0.0, now + 3.2 - time.time()))
        rejected(env, "/alg/asym", 401, token)
    assert (d[names[0]], d[names[1]]) == (1, 1)


def test_decision_metrics_for_401_and_403(env):
    names = ("apiguard.route.orders.decision.missing", "apiguard.route.orders.decision.expired",
             "apiguard.route.orders.decision.audience", "apiguard.route.orders.decision.bind",
             "apiguard.route.orders.decision.allowed")
    with Delta(env, *names) as d:
        rejected(env, "/shops/s1/orders/1", 401, www="plain")
        rejected(env, "/shops/s1/orders/1", 401, mint(exp=int(time.time()) - 3600))
        rejected(env, "/shops/s1/orders/1", 403, mint(aud="other"), www="insufficient_scope")
        rejected(env, "/shops/s9/orders/1", 403, mint(), www="insufficient_scope")
        allowed(env, "/shops/s1/orders/1", mint())
    assert [d[n] for n in names] == [1, 1, 1, 1, 1], (d.before, d.after)


# 6. Remote JWKS --------------------------------------------------------------

R1, R2 = Key("ES256", "r1"), Key("EdDSA", "r2")          # provider `remote`
ROT1, ROT2, ROT3 = Key("ES256", "rot1"), Key("ES256", "rot2"), Key("ES256", "rot3")  # `rot`
OCT = Key("HS256", "oct-1")  # a symmetric key published remotely: always refused


def remote_token(key, **kw):
    # {"iss": ISS_REMOTE, "sub": "alice", "exp": now+600, ...}, kid = key.kid
    return mint(key, iss=ISS_REMOTE, drop=["aud"], **kw)


@pytest.fixture(scope="module")
def idp():
    server = IdP()
    server.serve("/jwks.json", jwks(R1))
    server.serve("/rot.json", jwks(ROT1))
    server.fail("/dead.json", "500")
    server.serve("/oct.json", jwks(OCT))
    yield server
    server.close()


@pytest.fixture(scope="module")
def remote_env(idp):
    def remote(path, refresh, cluster_name="idp"):
        return {"issuer": ISS_REMOTE, "jwks": {"remote": {
            "cluster": cluster_name, "path": path, "refresh_seconds": refresh, "timeout_ms": 1000}}}

    cfg = {
        "providers": {
            "remote": remote("/jwks.json", 1),
            "rot": remote("/rot.json", 300),  # refreshes only for an unknown kid
            "dead": remote("/dead.json", 1),
            "nohost": remote("/jwks.json", 1, "nohost"),
            "octonly": remote("/oct.json", 1),
        },
        "routes": [route(p, f"/{p}", {"requires": p})
                   for p in ("remote", "rot", "dead", "nohost", "octonly")],
    }
    with start_envoy(cfg, clusters=[cluster("idp", idp.port), cluster("nohost", closed_port())]) as e:
        yield e


def get_status(env, path, token):
    return env.get(path, headers=bearer(token)).status


def test_remote_first_fetch_lets_tokens_through(remote_env, idp):
    token = remote_token(R1)
    status = poll(lambda: get_status(remote_env, "/remote", token), lambda s: s == 200, 5)
    assert status == 200
    assert idp.hits("/jwks.json") >= 1
    assert remote_env.stat("apiguard.provider.remote.jwks.fetch_success") >= 1
    allowed(remote_env, "/remote", remote_token(R1))
    rejected(remote_env, "/remote", 401, remote_token(STRANGER, kid="r1"))


def test_remote_key_rotation(remote_env, idp):
    old = remote_token(R1)
    assert poll(lambda: get_status(remote_env, "/remote", old), lambda s: s == 200, 5) == 200
    # The IdP publishes a new key next to the old one.
    switched = time.monotonic()
    idp.serve("/jwks.json", jwks(R1, R2))
    new = remote_token(R2)
    assert poll(lambda: get_status(remote_env, "/remote", new), lambda s: s == 200, 6) == 200
    assert idp.hits("/jwks.json", since=switched) >= 1
    allowed(remote_env, "/remote", remote_token(R2))
    # Then retires the old one: even the cached old token stops passing.
    assert get_status(remote_env, "/remote", old) == 200
    idp.serve("/jwks.json", jwks(R2))
    assert poll(lambda: get_status(remote_env, "/remote", old), lambda s: s == 401, 6) == 401
    rejected(remote_env, "/remote", 401, remote_token(R1))
    allowed(remote_env, "/remote", remote_token(R2))


def test_unknown_kid_triggers_one_rate_limited_refetch(remote_env, idp):
    # `rot` refreshes every 300 s: only the unknown-kid refetch can bring rot2 in.
    first = remote_token(ROT1)
    assert poll(lambda: get_status(remote_env, "/rot", first), lambda s: s == 200, 5) == 200
    switched = time.monotonic()
    idp.serve("/rot.json", jwks(ROT1, ROT2))
    new = remote_token(ROT2)
    with Delta(remote_env, "apiguard.provider.rot.unknown_kid") as d:
        rejected(remote_env, "/rot", 401, new)  # kid unknown: 401, refetch scheduled
    assert d["apiguard.provider.rot.unknown_kid"] == 1
    assert poll(lambda: get_status(remote_env, "/rot", new), lambda s: s == 200, 6) == 200
    assert idp.hits("/rot.json", since=switched) == 1, "exactly one refetch"
    # Another new kid within 30 s: no further fetch, however many requests name it.
    idp.serve("/rot.json", jwks(ROT1, ROT2, ROT3))
    again = time.monotonic()
    newer = remote_token(ROT3)
    for _ in range(6):
        assert get_status(remote_env, "/rot", newer) == 401
        time.sleep(0.4)
    assert idp.hits("/rot.json", since=again) == 0


def test_idp_down_keeps_the_last_good_keys(remote_env, idp):
    idp.serve("/jwks.json", jwks(R2))
    token = remote_token(R2)
    assert poll(lambda: get_status(remote_env, "/remote", token), lambda s: s == 200, 5) == 200
    failure = "apiguard.provider.remote.jwks.fetch_failure"
    for mode, n in (("500", 2), ("garbage", 2), ("no_keys", 2), ("close", 2), ("hang", 1)):
        before, since = remote_env.stat(failure), time.monotonic()
        idp.fail("/jwks.json", mode)
        # Several failed fetches (refresh_seconds: 1; two VMs fetch: main thread and
        # worker; "hang" fails only after timeout_ms) ...
        poll(lambda: (idp.hits("/jwks.json", since=since), remote_env.stat(failure)),
             lambda hs: hs[0] >= n and hs[1] >= before + n, 8)
        assert remote_env.stat(failure) >= before + n, mode
        # ... and a fresh token signed by the last good key still passes.
        allowed(remote_env, "/remote", remote_token(R2))
    assert remote_env.stat("apiguard.provider.remote.jwks.age_seconds") >= 3
    # The IdP recovers.
    ok = remote_env.stat("apiguard.provider.remote.jwks.fetch_success")
    idp.serve("/jwks.json", jwks(R2))
    poll(lambda: remote_env.stat("apiguard.provider.remote.jwks.fetch_success"), lambda n: n > ok, 5)
    assert remote_env.stat("apiguard.provider.remote.jwks.fetch_success") > ok
    allowed(remote_env, "/remote", remote_token(R2))


@pytest.mark.parametrize("provider", ["dead", "nohost", "octonly"])
def test_no_key_set_yet_fails_closed_with_503(remote_env, idp, provider):
    # dead: IdP answers 500; nohost: nothing listens; octonly: only a symmetric key,
    # which is never accepted from a remote set.
    token = mint(OCT, iss=ISS_REMOTE, drop=["aud"]) if provider == "octonly" else remote_token(R1)
    with Delta(remote_env, f"apiguard.provider.{provider}.keys_unavailable") as d:
        doc = rejected(remote_env, f"/{provider}", 503, token, www=None)
    assert doc["type"].endswith(":keys-unavailable"), doc
    assert d[f"apiguard.provider.{provider}.keys_unavailable"] == 1
    assert remote_env.stat(f"apiguard.provider.{provider}.jwks.fetch_failure") >= 1
    path = {"dead": "/dead.json", "octonly": "/oct.json"}.get(provider)
    if path:
        assert idp.hits(path) >= 1  # fetched and refused, not never asked
    # A token that is garbage anyway is a 401, not a 503.
    rejected(remote_env, f"/{provider}", 401, "garbage")
