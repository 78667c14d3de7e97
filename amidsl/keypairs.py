"""Self-signed X.509 signing pairs: the example's, the simulator's EC2 key, and throwaway test pairs."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def self_signed_pair(
    common_name: str,
    key: rsa.RSAPrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    days: int = 3650,
    serial: int | None = None,
) -> tuple[str, str]:
    """(private key PEM, certificate PEM) for a new (or the given) RSA key, self-signed.

    The key is written as `RSA PRIVATE KEY`, the form of AWS's pk-*.pem files. Signing is PKCS#1 v1.5,
    which is deterministic: with a fixed key, start, length and serial the PEM is always the same.
    """
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
