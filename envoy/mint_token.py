#!/usr/bin/env python3
"""Mints demo JWTs signed with envoy/demo-keys/demo-es256-private.pem.

  make token                                   # clerk of shop s1, valid 1 h
  make token ARGS="--sub bob --shop s2 --roles admin"
  .venv/bin/python envoy/mint_token.py --expires-in -60   # already expired

Prints the compact token on stdout (nothing else), so it fits `$(make -s token)`.
"""
import argparse
import base64
import hashlib
import os
import sys
import time

import jwt  # PyJWT

HERE = os.path.dirname(os.path.abspath(__file__))
ISSUER = "https://idp.demo.local/"
AUDIENCE = "orders-api"


def thumbprint(pem_path):
    """base64url SHA-256 of the certificate's DER encoding (RFC 8705 x5t#S256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(pem_path, "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sub", default="alice")
    ap.add_argument("--shop", default="s1", help="shop_id claim (bound to {shop} in paths)")
    ap.add_argument("--roles", default="clerk", help="comma-separated roles")
    ap.add_argument("--scope", default="orders:read orders:write")
    ap.add_argument("--aud", default=AUDIENCE)
    ap.add_argument("--iss", default=ISSUER)
    ap.add_argument("--expires-in", type=int, default=3600, help="seconds; negative = expired")
    ap.add_argument("--kid", default="demo-1")
    ap.add_argument("--bind-cert", metavar="PEM",
                    help="bind the token to this client certificate (cnf.x5t#S256, RFC 8705)")
    args = ap.parse_args()
    with open(os.path.join(HERE, "demo-keys", "demo-es256-private.pem"), "rb") as f:
        key = f.read()
    now = int(time.time())
    claims = {
        "iss": args.iss, "sub": args.sub, "aud": args.aud,
        "iat": now, "exp": now + args.expires_in,
        "shop_id": args.shop,
        "roles": [r for r in args.roles.split(",") if r],
        "scope": args.scope,
    }
    if args.bind_cert:
        claims["cnf"] = {"x5t#S256": thumbprint(args.bind_cert)}
    sys.stdout.write(jwt.encode(claims, key, algorithm="ES256", headers={"kid": args.kid}) + "\n")


if __name__ == "__main__":
    main()
