"""RSA and X.509 for the bundle format: load PEMs, wrap the AES key, sign, check signatures."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from amidsl.bundle.errors import (
    BundleError,
    KeyMismatchError,
    ManifestEditedError,
    WrongCertificateError,
)


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii", "replace") if isinstance(pem, str) else pem


def load_certificate(pem: bytes | str) -> x509.Certificate:
    """Parse a PEM X.509 certificate holding an RSA public key."""
    try:
        cert = x509.load_pem_x509_certificate(_as_bytes(pem))
    except ValueError:
        raise BundleError(
            "the certificate is not a PEM X.509 certificate "
            "(expected a file starting with '-----BEGIN CERTIFICATE-----')"
        ) from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise BundleError(f"certificate {describe_certificate(cert)} does not hold an RSA key")
    return cert


def load_private_key(pem: bytes | str, checked: bool = False) -> rsa.RSAPrivateKey:
    """Parse an unencrypted PEM RSA private key; errors never echo the key's content.

    OpenSSL checks an RSA key's numbers as it loads it (tens of milliseconds); `checked` says that was
    done already, as it is for the key of the settings, read when they were (settings/credentials.py).
    """
    try:
        key = load_pem_private_key(_as_bytes(pem), password=None, unsafe_skip_rsa_key_validation=checked)
    except (ValueError, TypeError):
        # The library's message may quote parts of the input; never pass it on.
        raise BundleError(
            "the private key is not an unencrypted PEM RSA private key "
            "(expected a PEM file; decrypt it first with 'openssl rsa' if it has a passphrase)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BundleError("the private key is not an RSA key; bundles need RSA")
    return key


@dataclass(frozen=True)
class SigningKeys:
    """What signing a manifest needs, parsed: the user's matching key and certificate, EC2's certificate."""

    user_cert: x509.Certificate
    private_key: rsa.RSAPrivateKey = field(repr=False)
    ec2_cert: x509.Certificate

    def __post_init__(self) -> None:
        # A bundle signed with a key that does not match the certificate could never be verified.
        check_key_matches_certificate(self.private_key, self.user_cert)


def load_signing_keys(
    user_cert_pem: bytes | str,
    user_private_key_pem: bytes | str,
    ec2_cert_pem: bytes | str,
    key_checked: bool = False,
) -> SigningKeys:
    """Parse the three PEMs once; a key that does not match the user's certificate is refused
    (`key_checked`: the private key was checked already, see load_private_key)."""
    private_key = load_private_key(user_private_key_pem, checked=key_checked)
    return SigningKeys(load_certificate(user_cert_pem), private_key, load_certificate(ec2_cert_pem))


def describe_certificate(cert: x509.Certificate) -> str:
    """Name a certificate in messages by subject and serial number."""
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def check_key_matches_certificate(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    """Raise KeyMismatchError unless the private key is the certificate's key."""
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise KeyMismatchError(
            f"the private key does not belong to certificate {describe_certificate(cert)}; "
            "pass the key the certificate was issued for"
        )


def encrypt_for_certificate(cert: x509.Certificate, data: bytes) -> bytes:
    """RSA-encrypt data (PKCS#1 v1.5) so that only the certificate's key holder can read it."""
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key.encrypt(data, padding.PKCS1v15())


def decrypt_with_key(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes | None:
    """RSA-decrypt (PKCS#1 v1.5); None when the ciphertext was not made for this key."""
    try:
        return key.decrypt(ciphertext, padding.PKCS1v15())
    except ValueError:
        return None


def sign_sha1(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """Sign data with RSA PKCS#1 v1.5 over SHA-1, as the manifest format requires."""
    return key.sign(data, padding.PKCS1v15(), hashes.SHA1())


def check_signature(cert: x509.Certificate, data: bytes, signature: bytes) -> None:
    """Raise unless signature is the certificate key's SHA-1 signature of data.

    Recovering the signed digest tells the two failures apart: a signature that opens with the
    certificate's key but carries another digest means the signed text was edited; one that does
    not open at all was made with a different key.
    """
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
        return
    except InvalidSignature:
        pass
    try:
        public_key.recover_data_from_signature(signature, padding.PKCS1v15(), hashes.SHA1())
    except (InvalidSignature, ValueError):
        raise WrongCertificateError(
            f"the manifest was not signed by the key of certificate {describe_certificate(cert)}; "
            "verify with the certificate of the key that bundled the image"
        ) from None
    raise ManifestEditedError(
        "the manifest's machine_configuration or image section was changed after it was signed "
        f"by certificate {describe_certificate(cert)}; re-bundle the image instead of editing it"
    )
