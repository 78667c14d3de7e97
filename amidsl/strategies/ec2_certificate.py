"""EC2's public certificate for a region: what the bundle's EC2 copy of key and IV is encrypted for.

Amazon ships it inside the ec2-ami-tools archive (`etc/ec2/amitools/cert-ec2*.pem`). The controller
fetches that archive (or reads a file the user gives, setting `ec2_certificate_source`) and pins the
certificate by the SHA-256 of its public key (DER SubjectPublicKeyInfo). The certificates are long
expired and still what EC2 decrypts with, so expiry is not checked; a fingerprint amidsl does not know
is reported, never guessed at.
"""

from __future__ import annotations

import hashlib
import io
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from amidsl.settings import AmiSettings

# Measured on ec2-ami-tools 1.5.3 (the facts on the tools): file name -> SPKI SHA-256.
PINNED_SPKI_SHA256 = {
    "cert-ec2.pem": "0522abd3c9496f96757dda137452fa67043135c383092af18e99d8049823def3",
    "cert-ec2-gov.pem": "d55c5f07be82afbb670ee1117df638a1033cb4320647397cfe9d6dcb510cae8c",
    "cert-ec2-cn-north-1.pem": "c31b05cbeb98310529f0aa0cf087d14430a8342033e31efdba07f467ad0823d6",
}
REGION_FILES = {"us-gov-west-1": "cert-ec2-gov.pem", "cn-north-1": "cert-ec2-cn-north-1.pem"}
ARCHIVE_FOLDER = "etc/ec2/amitools/"
DOWNLOAD_SECONDS = 60


class Ec2CertificateError(Exception):
    """EC2's certificate cannot be had or trusted; the message names the source and the fix."""


def certificate_file(region: str) -> str:
    """The file in the tools archive that holds EC2's certificate for `region`."""
    return REGION_FILES.get(region, "cert-ec2.pem")


def spki_sha256(cert_pem: str | bytes) -> str:
    """Hex SHA-256 of a certificate's DER SubjectPublicKeyInfo (what the pins are)."""
    data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def certificate_from_archive(
    archive: bytes, region: str, where: str, pins: Mapping[str, str] = PINNED_SPKI_SHA256
) -> str:
    """EC2's certificate for `region` out of an ec2-ami-tools zip, checked against its pin."""
    name = certificate_file(region)
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as tools:
            members = [m for m in tools.namelist() if m.endswith(ARCHIVE_FOLDER + name)]
            if not members:
                raise Ec2CertificateError(
                    f"{where} holds no {ARCHIVE_FOLDER}{name}: set ec2_certificate_source to EC2's "
                    f"certificate for {region} (a {name} from an ec2-ami-tools archive you trust)"
                )
            pem = tools.read(members[0]).decode("ascii")
    except zipfile.BadZipFile:
        raise Ec2CertificateError(
            f"{where} is not a zip archive: check ami_tools_url, or set ec2_certificate_source"
        ) from None
    return check_pinned(pem, name, f"{members[0]} in {where}", pins)


def check_pinned(pem: str, name: str, where: str, pins: Mapping[str, str] = PINNED_SPKI_SHA256) -> str:
    """`pem`, if it is the certificate pinned for the file `name` (read from `where`); else an error."""
    try:
        found = spki_sha256(pem)
    except ValueError:
        raise Ec2CertificateError(f"{where} is not a PEM certificate") from None
    if found != pins.get(name):
        raise Ec2CertificateError(
            f"{where} has the public key SHA-256 {found}, which is not the one amidsl "
            f"knows for {name} ({pins.get(name)}): a new archive may carry a new key. Check it with "
            "Amazon, then give that file as EC2's certificate (ec2_certificate_source, --ec2cert)"
        )
    return pem


def certificate_from_directory(directory: str | Path, region: str) -> str:
    """EC2's certificate for `region` out of a directory laid out as the tools' etc/ec2/amitools
    (cert-ec2.pem, cert-ec2-gov.pem, cert-ec2-cn-north-1.pem), or out of an ec2-ami-tools zip."""
    path = Path(directory)
    if path.is_file():
        return certificate_from_archive(path.read_bytes(), region, str(path))
    name = certificate_file(region)
    try:
        pem = (path / name).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not PEM text"
        raise Ec2CertificateError(
            f"EC2's certificate for {region} is {name}, and {path / name} cannot be read ({reason}): copy "
            f"{name} from the {ARCHIVE_FOLDER} folder of an ec2-ami-tools archive into {path}, or give the "
            "archive itself"
        ) from None
    return check_pinned(pem, name, str(path / name))


def download(url: str) -> bytes:
    """Fetch a URL (the tools archive) on the controller."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_SECONDS) as response:
        return response.read()


def ec2_certificate(settings: AmiSettings, fetch: Callable[[str], bytes] = download) -> str:
    """EC2's certificate for the build's region: the user's file, else pinned from the tools archive."""
    if settings.ec2_certificate_pem:
        return settings.ec2_certificate_pem
    source = settings.install_source
    if source.local_file is not None:
        return certificate_from_archive(
            Path(source.local_file).read_bytes(), settings.region, source.local_file
        )
    url = source.url or settings.ami_tools_url
    try:
        archive = fetch(url)
    except OSError as err:
        raise Ec2CertificateError(
            f"cannot fetch {url} for EC2's certificate ({err}): check the network, or set "
            "ec2_certificate_source to a cert-ec2*.pem you have"
        ) from None
    return certificate_from_archive(archive, settings.region, url)
