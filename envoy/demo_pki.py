#!/usr/bin/env python3
"""Writes the demo's certificates to envoy/demo-pki: a CA, the mTLS listener's server
certificate (localhost, 127.0.0.1) and client certificates whose URI SANs are SPIFFE
IDs. Their private keys are public (they are in this repository): demo only.

  .venv/bin/python envoy/demo_pki.py        # rewrite them (valid 10 years)

`make run` prints curl commands that present them to the mTLS listener.
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo-pki")
CLIENTS = {
    "web": "spiffe://demo.local/ns/shop/sa/web",     # listed
    "cron": "spiffe://demo.local/ns/ops/sa/cron",     # matches spiffe://demo.local/ns/ops/*
    "intruder": "spiffe://demo.local/ns/shop/sa/intruder",  # valid, not listed: 403
}


def issue(cn, sans, issuer=None, ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer[0].subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def write(name, cert, key):
    with open(os.path.join(OUT, f"{name}.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(OUT, f"{name}.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def main():
    os.makedirs(OUT, exist_ok=True)
    ca = issue("api-guard demo CA", None, ca=True)
    write("ca", *ca)
    write("server", *issue("localhost", [x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ca))
    for name, spiffe in CLIENTS.items():
        write(name, *issue(name, [x509.UniformResourceIdentifier(spiffe)], ca))
    os.remove(os.path.join(OUT, "ca.key"))  # nothing needs to sign more
    print(f"demo certificates written to {OUT}")


if __name__ == "__main__":
    main()
