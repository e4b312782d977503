"""Benchmark fixtures: signing keys and pre-minted tokens, request bodies and their
JSON Schema, the 10 KB JSON response to mask, and the plugin/native configurations.

Everything here is deterministic in shape (sizes are exact) and generated at run
time under bench/work/ (git-ignored); keys and tokens are reused by later runs while
the tokens stay valid for hours, because minting 20k RS256 tokens takes a while.
"""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt  # PyJWT (in the project's .venv)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

ISSUER = "https://idp.bench.local/"
AUDIENCE = "bench-api"
ALGS = ("ES256", "RS256", "EdDSA", "HS256")
TOKEN_LIFETIME = 24 * 3600
MIN_REMAINING = 3 * 3600  # re-mint when cached tokens expire sooner than this


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")


# -- keys ---------------------------------------------------------------------------

def _new_keys():
    """Private keys (serialised) for the four algorithms."""
    pem = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
               encryption_algorithm=serialization.NoEncryption())
    return {
        "ES256": ec.generate_private_key(ec.SECP256R1()).private_bytes(**pem).decode(),
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(**pem).decode(),
        "EdDSA": ed25519.Ed25519PrivateKey.generate().private_bytes(**pem).decode(),
        "HS256": b64u(os.urandom(32)),
    }


def signing_key(keys, alg):
    if alg == "HS256":
        return base64.urlsafe_b64decode(keys[alg] + "==")
    return serialization.load_pem_private_key(keys[alg].encode(), password=None)


def public_jwk(keys, alg):
    """The verification key as a JWK (the same one for api-guard and jwt_authn)."""
    kid = alg.lower()
    if alg == "HS256":
        return {"kty": "oct", "kid": kid, "alg": alg, "k": keys[alg]}
    pub = signing_key(keys, alg).public_key()
    if alg == "ES256":
        n = pub.public_numbers()
        return {"kty": "EC", "crv": "P-256", "kid": kid, "alg": alg,
                "x": b64u(_int_bytes(n.x, 32)), "y": b64u(_int_bytes(n.y, 32))}
    if alg == "RS256":
        n = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": alg, "n": b64u(_int_bytes(n.n)), "e": b64u(_int_bytes(n.e))}
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": alg, "x": b64u(raw)}


def claims(i, now):
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{i:06d}", "iat": now,
            "exp": now + TOKEN_LIFETIME, "jti": f"bench-{i:06d}", "shop_id": "s1",
            "roles": ["clerk"], "scope": "orders:read orders:write"}


def keys_and_tokens(work, count, log=print):
    """(keys, {alg: token file path}); each file has `count` distinct tokens, one a line."""
    os.makedirs(work, exist_ok=True)
    meta_path = os.path.join(work, "tokens.json")
    now = int(time.time())
    meta = None
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("count", 0) < count or meta.get("minted_at", 0) + TOKEN_LIFETIME - now < MIN_REMAINING:
            meta = None
    if meta is None:
        t0 = time.time()
        keys = _new_keys()
        for alg in ALGS:
            key = signing_key(keys, alg)
            with open(os.path.join(work, f"tokens-{alg}.txt"), "w") as f:
                for i in range(count):
                    f.write(jwt.encode(claims(i, now), key, algorithm=alg,
                                       headers={"kid": alg.lower(), "typ": "JWT"}) + "\n")
        meta = {"count": count, "minted_at": now, "keys": keys}
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        log(f"minted {count} tokens per algorithm in {time.time() - t0:.0f}s")
    return meta["keys"], {alg: os.path.join(work, f"tokens-{alg}.txt") for alg in ALGS}


def first_token(path):
    with open(path) as f:
        return f.readline().strip()


# -- bodies -------------------------------------------------------------------------

ORDER_SCHEMA = {
    "type": "object",
    "required": ["customer", "items", "currency"],
    "additionalProperties": False,
    "properties": {
        "order_ref": {"type": "string", "maxLength": 64},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "customer": {
            "type": "object", "required": ["id", "email"], "additionalProperties": False,
            "properties": {"id": {"type": "string", "maxLength": 64},
                           "email": {"type": "string", "maxLength": 254},
                           "name": {"type": "string", "maxLength": 200}}},
        "shipping": {
            "type": "object", "required": ["street", "city", "country"],
            "properties": {"street": {"type": "string", "maxLength": 200},
                           "city": {"type": "string", "maxLength": 100},
                           "zip": {"type": "string", "maxLength": 16},
                           "country": {"type": "string", "minLength": 2, "maxLength": 2}}},
        "items": {
            "type": "array", "minItems": 1, "maxItems": 1000,
            "items": {"type": "object", "required": ["sku", "qty", "price"], "additionalProperties": False,
                      "properties": {"sku": {"type": "string", "maxLength": 32},
                                     "qty": {"type": "integer", "minimum": 1, "maximum": 1000},
                                     "price": {"type": "number", "minimum": 0},
                                     "gift": {"type": "boolean"}}}},
        "note": {"type": "string", "maxLength": 4000},
    },
}


def _compact(doc):
    return json.dumps(doc, separators=(",", ":"))


def _pad(doc, size, field="note"):
    """`doc` as compact JSON of exactly `size` bytes, padding its `field` string."""
    doc = dict(doc, **{field: ""})
    missing = size - len(_compact(doc))
    if missing < 0:
        raise ValueError(f"document already over {size} bytes")
    doc[field] = ("lorem ipsum dolor sit amet " * (missing // 27 + 1))[:missing]
    body = _compact(doc).encode()
    assert len(body) == size, (len(body), size)
    return body


def order_body(size):
    """A valid order of exactly `size` bytes: 615 B = 3 items, 10 KB = ~180 items."""
    doc = {
        "order_ref": "ord-2024-000042",
        "currency": "EUR",
        "customer": {"id": "c-1009", "email": "ada@example.com", "name": "Ada Lovelace"},
        "shipping": {"street": "12 Analytical Engine Road", "city": "London", "zip": "NW1 2DB", "country": "GB"},
        "items": [],
    }
    while not doc["items"] or (size > 2000 and len(_compact(doc)) < size - 150):
        i = len(doc["items"])
        doc["items"] += [{"sku": f"sku-{i:05d}", "qty": 1 + i % 7, "price": 10.5 + i, "gift": i % 2 == 0}
                         for i in range(i, i + (3 if size < 2000 else 1))]
    return _pad(doc, size)


def invalid_order_body():
    return _compact({"currency": "XXX", "customer": {"id": 1}, "items": []}).encode()


def orders_response(size=10240):
    """The upstream's ~10 KB JSON: orders with card numbers, SSNs, e-mails, costs."""
    orders = []
    while True:
        i = len(orders)
        orders.append({
            "id": f"o-{i:04d}", "status": "paid",
            "card": {"number": f"4111111111{i:06d}", "expiry": "12/29"},
            "customer": {"name": "Ada Lovelace", "email": f"ada{i}@example.com", "ssn": f"123-45-{i:04d}"},
            "items": [{"sku": "book-1", "qty": 1, "cost": 42.5}, {"sku": "pen-7", "qty": 3, "cost": 2.25}],
        })
        if len(_compact({"orders": orders, "note": ""})) > size - 300:
            break
    return _pad({"orders": orders}, size)


MASK_RULES = [
    {"path": "$.orders[*].card.number", "action": "keep_last", "n": 4},
    {"path": "$.orders[*].customer.ssn", "action": "remove"},
    {"path": "$.orders[*].customer.email", "action": "redact"},
    {"path": "$.orders[*].items[*].cost", "action": "redact"},
]


# -- identifier cloaking --------------------------------------------------------------

CLOAK_KEY = bytes(range(32))
CLOAK_RULES = MASK_RULES + [{"path": "$.orders[*].id", "action": "cloak", "kind": "order"}]


def cloak_token(kind, value, key=CLOAK_KEY):
    """The token api-guard issues for `value` of `kind` (not per caller): the
    construction of docs/design.md, "Identifier cloaking"."""
    expand = lambda info: hmac.new(key, info + b"\x01", hashlib.sha256).digest()  # noqa: E731
    enc, mac = expand(b"api-guard cloak encryption"), expand(b"api-guard cloak nonce")
    context, v = bytes([len(kind)]) + kind.encode() + b"\x00", str(value).encode()
    nonce = hmac.new(mac, context + v, hashlib.sha256).digest()[:12]
    return b64u(nonce + ChaCha20Poly1305(enc).encrypt(nonce, v, context))

