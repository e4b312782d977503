#!/usr/bin/env python3
"""Makes a new random API key and the line that configures it.

  make api-key                              # id "key-<date>"
  make api-key ARGS="--id acme --claims '{\"plan\": \"gold\"}'"

Prints the key on the first line (give it to the client; it is shown only here)
and, on the second, the entry for `providers.<name>.api_key.keys`: only the key's
SHA-256 goes into the configuration.
"""
import argparse
import datetime
import hashlib
import json
import secrets
import sys


def new_key():
    # 32 random bytes, URL-safe: fits a header or a query parameter as it is.
    return "ag_" + secrets.token_urlsafe(32)


def entry(key, key_id, claims=None):
    e = {"id": key_id, "sha256": hashlib.sha256(key.encode()).hexdigest()}
    if claims:
        e["claims"] = claims
    return e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--id", default="key-" + datetime.date.today().isoformat(),
                    help="the key's id (claim key_id)")
    ap.add_argument("--claims", default=None, help="JSON object: the key's claims")
    args = ap.parse_args()
    claims = None
    if args.claims:
        try:
            claims = json.loads(args.claims)
        except ValueError as e:
            sys.exit(f"--claims: not JSON: {e}")
        if not isinstance(claims, dict):
            sys.exit("--claims: must be a JSON object")
    key = new_key()
    print(key)
    print(json.dumps(entry(key, args.id, claims)))


if __name__ == "__main__":
    main()
