"""The signing credentials and EC2's certificate: read from their sources, parsed, matched.

Never echo a file's content in a message: say only what kind of problem it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from amidsl.example import example_credentials
from amidsl.secrets import Secret
from amidsl.settings.reading import Reading
from amidsl.settings.schema import Setting, Source

# What each source setting's file holds, for the fix when it is missing.
PEM_FILES = {
    "private_key_source": "the signing key's PEM file (its RSA private key, `pk-*.pem`)",
    "certificate_source": "the signing certificate's PEM file (X.509, `cert-*.pem`)",
    "ec2_certificate_source": "EC2's X.509 certificate in PEM (cert-ec2.pem from ec2-ami-tools)",
}


def source_text(r: Reading, name: str, source: Source | None) -> str | None:
    """The text of a credential source, or None with a problem recorded."""
    if source is None:
        return None
    if source.content is not None:
        return source.content.reveal() if isinstance(source.content, Secret) else source.content
    assert source.local_file is not None
    try:
        return Path(source.local_file).read_text(encoding="ascii")
    except FileNotFoundError:
        r.problem(
            name,
            f"local_file {source.local_file!r} does not exist",
            f"point local_file at {PEM_FILES.get(name, 'the PEM file')}",
        )
    except PermissionError:
        r.problem(
            name,
            f"local_file {source.local_file!r} is not readable",
            "make the file readable by the user running amidsl",
        )
    except IsADirectoryError:
        r.problem(
            name,
            f"local_file {source.local_file!r} is a directory",
            "point local_file at the PEM file itself",
        )
    except (OSError, UnicodeDecodeError):
        r.problem(
            name,
            f"local_file {source.local_file!r} is not a PEM text file",
            "give the PEM-encoded file (text starting with -----BEGIN)",
        )
    return None


def private_key_pem(r: Reading, row: Setting) -> Secret | None:
    """The signing key's text (None, with a problem recorded, when it cannot be read)."""
    text = source_text(r, "private_key_source", r.value("private_key_source"))
    return None if text is None else Secret(text)


def certificate_pem(r: Reading, row: Setting) -> str:
    """The certificate as amidsl uses it, after checking that it and the key belong together.

    Re-encoded from the parsed certificate, so nothing else in its file (a private key, comments) can
    reach the node, a script or a plan.
    """
    key = r.value("private_key_pem")
    key_pem = None if key is None else key.reveal()
    cert_pem = source_text(r, "certificate_source", r.value("certificate_source"))
    key_source = r.value("private_key_source")
    # The text compared too: a Source made in code may say example=True of a key of its own.
    example_key = bool(key_source and key_source.example) and key_pem == example_credentials()[0]
    return check_credentials(r, key_pem, cert_pem, example_key=example_key) or ""


def ec2_certificate_pem(r: Reading, row: Setting) -> str:
    """EC2's certificate as given by ec2_certificate_source ("" to take it from the tools archive)."""
    pem = source_text(r, "ec2_certificate_source", r.value("ec2_certificate_source")) or ""
    if pem:
        try:
            # Expiry is not checked: EC2's certificates are long expired and still in use.
            x509.load_pem_x509_certificate(pem.encode("ascii"))
        except ValueError:
            r.problem(
                "ec2_certificate_source",
                "is not a PEM X.509 certificate",
                "give EC2's cert-ec2*.pem from the ec2-ami-tools archive",
            )
    return pem


def pem_labels(text: str) -> list[str]:
    """The labels of the PEM blocks in a text (e.g. ["CERTIFICATE"])."""
    return re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", text)


def check_credentials(
    r: Reading, key_pem: str | None, cert_pem: str | None, example_key: bool = False
) -> str | None:
    """The key and certificate parse as PEM, the key is RSA, and they belong together.

    Returns the certificate re-encoded from the parsed certificate (as read when it does not parse).
    `example_key` says the key is amidsl's built-in example key.
    """
    if key_pem is not None and pem_labels(key_pem) == ["CERTIFICATE"]:
        r.problem(
            "private_key_source",
            "holds a certificate, not a private key",
            "give your private key's PEM file; private_key_source and certificate_source may be swapped",
        )
        key_pem = None
    elif key_pem is not None and pem_labels(key_pem)[1:]:
        r.problem(
            "private_key_source",
            f"holds {len(pem_labels(key_pem))} PEM blocks, not just the private key",
            "give a file with only your private key in it",
        )
        key_pem = None
    cert_pem = _only_one_certificate(r, cert_pem)
    key = None if key_pem is None else _rsa_key(r, key_pem, example_key)
    cert = None
    if cert_pem is not None:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            r.problem(
                "certificate_source",
                "is not a PEM X.509 certificate",
                "give the certificate file (-----BEGIN CERTIFICATE-----)",
            )
    if key is not None and cert is not None:
        cert_key = cert.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey) or (
            cert_key.public_numbers() != key.public_key().public_numbers()
        ):
            r.problem(
                "private_key_source",
                "does not match certificate_source",
                "give the private key that belongs to the certificate (they were created together)",
            )
    if cert is None:
        return cert_pem
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _only_one_certificate(r: Reading, cert_pem: str | None) -> str | None:
    """The certificate text if it holds exactly one certificate and nothing else, else None."""
    labels = [] if cert_pem is None else pem_labels(cert_pem)
    if labels and "CERTIFICATE" not in labels:
        # Never name the block: it may be a private key, whose headers messages do not quote.
        r.problem(
            "certificate_source",
            "holds no certificate, only another PEM block (perhaps a private key)",
            "give the certificate file (-----BEGIN CERTIFICATE-----); if the key is here, "
            "certificate_source and private_key_source may be swapped",
        )
        return None
    if any(label != "CERTIFICATE" for label in labels):
        r.problem(
            "certificate_source",
            "holds more than a certificate (another PEM block, perhaps a private key)",
            "give a file with only the certificate: it is copied to the node and shown in plans",
        )
        return None
    if cert_pem is not None and len(pem_labels(cert_pem)) > 1:
        r.problem(
            "certificate_source",
            f"holds {len(pem_labels(cert_pem))} certificates",
            "give a file with only the certificate that belongs to your private key",
        )
        return None
    return cert_pem


def _rsa_key(r: Reading, key_pem: str, is_example: bool = False) -> rsa.RSAPrivateKey | None:
    """The private key parsed, if it is an unencrypted RSA key (else None, with a problem).

    OpenSSL checks an RSA key as it loads it: its primes are prime, its numbers consistent (tens of
    milliseconds, most of `amidsl plan`'s own work). The built-in example's key skips that check: its
    primes are fixed, and tests/test_example.py checks them and loads the key with the full check.
    """
    try:
        key = serialization.load_pem_private_key(
            key_pem.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=is_example
        )
    except (ValueError, TypeError, UnicodeEncodeError):
        r.problem(
            "private_key_source",
            "is not an unencrypted PEM private key",
            "give your RSA private key as an unencrypted PEM file (PKCS#1 or PKCS#8), without a passphrase",
        )
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        r.problem(
            "private_key_source",
            "is not an RSA key",
            "ec2-ami-tools sign with RSA: give your RSA signing key",
        )
        return None
    return key
