"""EC2's certificate: taken from the tools archive and pinned, or from the user's file; never guessed."""

from __future__ import annotations

import datetime
import io
import zipfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from amidsl.settings import SettingsError, resolve
from amidsl.strategies.ec2_certificate import (
    Ec2CertificateError,
    certificate_file,
    certificate_from_archive,
    ec2_certificate,
    spki_sha256,
)


def expired_certificate() -> str:
    """A certificate that expired years ago, as EC2's are."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AES Test")])
    start = datetime.datetime(2005, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def tools_zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"ec2-ami-tools-1.5.3/etc/ec2/amitools/{name}", text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cert_pem() -> str:
    return expired_certificate()


def test_every_region_but_two_uses_cert_ec2_pem():
    assert certificate_file("eu-west-1") == "cert-ec2.pem"
    assert certificate_file("us-gov-west-1") == "cert-ec2-gov.pem"
    assert certificate_file("cn-north-1") == "cert-ec2-cn-north-1.pem"


def test_a_pinned_expired_certificate_is_taken_from_the_archive(cert_pem):
    pins = {"cert-ec2.pem": spki_sha256(cert_pem)}
    archive = tools_zip({"cert-ec2.pem": cert_pem, "cert-ec2-gov.pem": "other"})
    assert certificate_from_archive(archive, "eu-west-1", "tools.zip", pins) == cert_pem


def test_an_unknown_fingerprint_is_reported_with_the_fingerprint_found(cert_pem):
    archive = tools_zip({"cert-ec2.pem": cert_pem})
    with pytest.raises(Ec2CertificateError) as raised:
        certificate_from_archive(archive, "eu-west-1", "tools.zip")
    message = str(raised.value)
    assert spki_sha256(cert_pem) in message and "ec2_certificate_source" in message


def test_an_archive_without_the_regions_certificate_says_which_file_is_missing(cert_pem):
    archive = tools_zip({"cert-ec2.pem": cert_pem})
    with pytest.raises(Ec2CertificateError, match=r"cert-ec2-gov\.pem"):
        certificate_from_archive(archive, "us-gov-west-1", "tools.zip")


def test_a_file_that_is_not_a_zip_is_reported():
    with pytest.raises(Ec2CertificateError, match="not a zip archive"):
        certificate_from_archive(b"<html>", "eu-west-1", "https://example.invalid/tools.zip")


def test_the_users_file_wins_and_nothing_is_fetched(raw_settings, cert_pem, tmp_path):
    path = tmp_path / "cert-ec2.pem"
    path.write_text(cert_pem)
    settings = resolve(raw_settings | {"ec2_certificate_source": {"local_file": str(path)}})

    def no_fetch(url):
        raise AssertionError("fetched")

    assert ec2_certificate(settings, fetch=no_fetch) == cert_pem


def test_the_archive_is_fetched_from_ami_tools_url_when_no_file_is_given(raw_settings, cert_pem):
    settings = resolve(raw_settings)
    fetched = []

    def fetch(url):
        fetched.append(url)
        return tools_zip({"cert-ec2.pem": cert_pem})

    with pytest.raises(Ec2CertificateError):  # the test certificate is not Amazon's pinned one
        ec2_certificate(settings, fetch=fetch)
    assert fetched == [settings.ami_tools_url]


def test_a_failed_download_says_how_to_give_the_certificate_instead(raw_settings):
    def fetch(url):
        raise OSError("network is unreachable")

    with pytest.raises(Ec2CertificateError, match="set ec2_certificate_source"):
        ec2_certificate(resolve(raw_settings), fetch=fetch)


def test_a_user_file_that_is_not_a_certificate_is_a_settings_problem(raw_settings, tmp_path):
    path = tmp_path / "cert-ec2.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(SettingsError, match="ec2_certificate_source"):
        resolve(raw_settings | {"ec2_certificate_source": {"local_file": str(path)}})
