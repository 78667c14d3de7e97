"""Every way a bundle can be damaged or misused is caught, each with its own message."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace

import pytest

from amidsl.bundle import (
    BundledSizeMismatchError,
    BundleError,
    ImageDigestMismatchError,
    KeyMismatchError,
    ManifestEditedError,
    ManifestParseError,
    MissingPartError,
    PartCountMismatchError,
    PartDigestMismatchError,
    PartNameError,
    PartsReorderedError,
    WrongCertificateError,
    WrongPrivateKeyError,
    bundle_image,
    read_manifest,
    unbundle,
    verify_bundle,
)
from amidsl.bundle.keys import load_private_key
from amidsl.bundle.manifest import ManifestPart, sign_manifest


@pytest.fixture
def bundle_dir(tmp_path, user, ec2):
    """A freshly bundled random image in parts image.part.0 … image.part.7 (the last one short)."""
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(7 * 4096))  # plus gzip framing: 8 parts
    out = tmp_path / "bundle"
    out.mkdir()
    bundle_image(
        image,
        out,
        user_id="123456789012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        part_size=4096,
    )
    assert len(read_manifest(out / "image.manifest.xml").parts) == 8
    return out


def _first_byte_flipped(data: bytes) -> bytes:
    """data with its first byte changed; writing a fixed byte would be no change when data starts with it."""
    return bytes([data[0] ^ 0xFF]) + data[1:]


def _verify_error(bundle_dir, cert_pem) -> BundleError:
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle_dir / "image.manifest.xml", cert_pem)
    return caught.value


def _resign(bundle_dir, user, **changes) -> None:
    """Rewrite the manifest with changes, signed with the right key (a consistent liar)."""
    manifest = read_manifest(bundle_dir / "image.manifest.xml")
    signed = sign_manifest(replace(manifest, **changes), load_private_key(user.key_pem))
    (bundle_dir / "image.manifest.xml").write_text(signed.xml)


def test_flipped_byte_in_a_part_is_a_digest_mismatch(bundle_dir, user):
    part = bundle_dir / "image.part.3"
    data = bytearray(part.read_bytes())
    data[100] ^= 0x01
    part.write_bytes(bytes(data))
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is PartDigestMismatchError
    assert "image.part.3" in str(error) and "SHA-1" in str(error)


def test_missing_part_is_named(bundle_dir, user):
    (bundle_dir / "image.part.5").unlink()
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is MissingPartError
    assert "image.part.5" in str(error) and "missing" in str(error)


def test_reordered_parts_are_reported_as_reordered(bundle_dir, user):
    first, second = bundle_dir / "image.part.1", bundle_dir / "image.part.2"
    first.rename(bundle_dir / "swap")
    second.rename(first)
    (bundle_dir / "swap").rename(second)
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is PartsReorderedError
    assert "image.part.1 holds image.part.2's content" in str(error)


def test_edited_manifest_field_breaks_the_signature(bundle_dir, user):
    path = bundle_dir / "image.manifest.xml"
    manifest = read_manifest(path)
    path.write_text(
        manifest.xml.replace(f"<size>{manifest.size}</size>", f"<size>{manifest.size + 1}</size>")
    )
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is ManifestEditedError
    assert "changed after it was signed" in str(error)


def test_wrong_certificate_is_told_apart_from_an_edit(bundle_dir, stranger):
    error = _verify_error(bundle_dir, stranger.cert_pem)
    assert type(error) is WrongCertificateError
    assert "amidsl test stranger" in str(error) and "not signed by" in str(error)


def test_truncated_manifest_is_a_parse_error(bundle_dir, user):
    path = bundle_dir / "image.manifest.xml"
    path.write_text(path.read_text()[:-200])
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is ManifestParseError
    assert "truncated" in str(error) and str(path) in str(error)


def test_missing_manifest_is_a_clear_error(tmp_path, user):
    with pytest.raises(ManifestParseError, match="does not exist"):
        verify_bundle(tmp_path / "nothing.manifest.xml", user.cert_pem)


def test_truncated_part_is_a_bundled_size_mismatch(bundle_dir, user):
    part = bundle_dir / "image.part.7"
    part.write_bytes(part.read_bytes()[:-1])
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is BundledSizeMismatchError
    assert "bundled_size" in str(error)


def test_extra_part_file_is_a_part_count_mismatch(bundle_dir, user):
    shutil.copy(bundle_dir / "image.part.7", bundle_dir / "image.part.8")
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is PartCountMismatchError
    assert "image.part.8" in str(error)


def test_part_count_attribute_disagreeing_with_the_list(bundle_dir, user):
    manifest = read_manifest(bundle_dir / "image.manifest.xml")
    # A consistent signer that lists one part fewer than its count says.
    _resign(bundle_dir, user, parts=manifest.parts[:-1])
    path = bundle_dir / "image.manifest.xml"
    text = path.read_text().replace("<parts count='7'>", "<parts count='8'>")
    path.write_text(text)
    with pytest.raises(PartCountMismatchError, match="count='8' but lists 7 parts"):
        unbundle(path, user.key_pem, bundle_dir / "restored", no_verify=True)


def test_part_name_leading_outside_the_bundle_is_refused(bundle_dir, user):
    manifest = read_manifest(bundle_dir / "image.manifest.xml")
    bad = ManifestPart(0, "../image.part.0", manifest.parts[0].digest)
    _resign(bundle_dir, user, parts=(bad, *manifest.parts[1:]))
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is PartNameError
    assert "not a plain file name" in str(error)


def test_part_indexes_out_of_order_are_refused(bundle_dir, user):
    manifest = read_manifest(bundle_dir / "image.manifest.xml")
    p0, p1 = manifest.parts[:2]
    _resign(bundle_dir, user, parts=(p1, p0, *manifest.parts[2:]))
    error = _verify_error(bundle_dir, user.cert_pem)
    assert type(error) is PartNameError
    assert "out of order" in str(error)


def test_wrong_image_digest_is_caught_by_unbundle_and_leaves_no_image(bundle_dir, user):
    _resign(bundle_dir, user, digest="0" * 40)
    verify_bundle(bundle_dir / "image.manifest.xml", user.cert_pem)  # parts themselves are fine
    with pytest.raises(ImageDigestMismatchError, match="0000000000"):
        unbundle(
            bundle_dir / "image.manifest.xml",
            user.key_pem,
            bundle_dir / "restored",
            user_cert_pem=user.cert_pem,
        )
    assert os.listdir(bundle_dir / "restored") == []


def test_wrong_private_key_cannot_unbundle(bundle_dir, user, stranger):
    with pytest.raises(WrongPrivateKeyError) as caught:
        unbundle(
            bundle_dir / "image.manifest.xml",
            stranger.key_pem,
            bundle_dir / "restored",
            user_cert_pem=user.cert_pem,
        )
    assert "private key opens neither" in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_tampered_part_stops_unbundle_before_anything_is_written(bundle_dir, user):
    part = bundle_dir / "image.part.0"
    part.write_bytes(_first_byte_flipped(part.read_bytes()))
    with pytest.raises(PartDigestMismatchError):
        unbundle(
            bundle_dir / "image.manifest.xml",
            user.key_pem,
            bundle_dir / "restored",
            user_cert_pem=user.cert_pem,
        )
    assert not (bundle_dir / "restored").exists()


def test_every_tampering_message_is_distinct(bundle_dir, user, stranger):
    messages = set()
    path = bundle_dir / "image.manifest.xml"
    original_manifest = path.read_text()
    originals = {p: p.read_bytes() for p in bundle_dir.glob("image.part.*")}

    def restore():
        path.write_text(original_manifest)
        for p, data in originals.items():
            p.write_bytes(data)

    cases = [
        lambda: (bundle_dir / "image.part.0").write_bytes(
            _first_byte_flipped(originals[bundle_dir / "image.part.0"])
        ),
        lambda: (bundle_dir / "image.part.0").unlink(),
        lambda: (bundle_dir / "image.part.0").write_bytes(originals[bundle_dir / "image.part.1"]),
        lambda: path.write_text(original_manifest.replace("<user>123456789012", "<user>123456789013")),
        lambda: path.write_text(original_manifest[:100]),
        lambda: (bundle_dir / "image.part.0").write_bytes(b""),
    ]
    for tamper in cases:
        tamper()
        messages.add(str(_verify_error(bundle_dir, user.cert_pem)))
        restore()
    messages.add(str(_verify_error(bundle_dir, stranger.cert_pem)))
    assert len(messages) == len(cases) + 1


def test_bundling_with_a_key_that_does_not_fit_the_certificate_is_refused(tmp_path, user, stranger, ec2):
    image = tmp_path / "image.bin"
    image.write_bytes(b"data")
    with pytest.raises(KeyMismatchError) as caught:
        bundle_image(
            image,
            tmp_path,
            user_id="123456789012",
            user_cert_pem=user.cert_pem,
            user_private_key_pem=stranger.key_pem,
            ec2_cert_pem=ec2.cert_pem,
        )
    assert "does not belong to certificate" in str(caught.value)
    assert list(tmp_path.glob("image.part.*")) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"user_id": "12345"}, "12-digit AWS account number"),
        ({"prefix": "a/b"}, "plain file name"),
        ({"key": b"short"}, "16 bytes"),
        ({"arch": "sparc"}, "not one of i386, x86_64, arm64"),
        ({"user_private_key_pem": b"not a key"}, "not an unencrypted PEM RSA private key"),
        ({"ec2_cert_pem": b"not a cert"}, "not a PEM X.509 certificate"),
    ],
)
def test_bad_bundle_options_are_refused_clearly(tmp_path, user, ec2, options, message):
    image = tmp_path / "image.bin"
    image.write_bytes(b"data")
    arguments = {
        "user_id": "123456789012",
        "user_cert_pem": user.cert_pem,
        "user_private_key_pem": user.key_pem,
        "ec2_cert_pem": ec2.cert_pem,
        **options,
    }
    with pytest.raises(BundleError, match=message) as caught:
        bundle_image(image, tmp_path, **arguments)
    assert "PRIVATE KEY" not in str(caught.value)


def test_parts_that_decrypt_to_garbage_are_reported_as_corrupt(bundle_dir, user, ec2):
    """A consistent liar: valid signature and part digests, but the payload is not gzip."""
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from amidsl.bundle import CorruptBundleError, decrypt_keys

    manifest = read_manifest(bundle_dir / "image.manifest.xml")
    keys = decrypt_keys(manifest, user.key_pem)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(keys.key), modes.CBC(keys.iv)).encryptor()
    garbage = padder.update(b"not a gzip stream " * 100) + padder.finalize()
    ciphertext = encryptor.update(garbage) + encryptor.finalize()
    for part in manifest.parts:
        (bundle_dir / part.filename).unlink()
    (bundle_dir / "image.part.0").write_bytes(ciphertext)
    digest = hashlib.sha1(ciphertext).hexdigest()
    _resign(
        bundle_dir,
        user,
        parts=(ManifestPart(0, "image.part.0", digest),),
        bundled_size=len(ciphertext),
    )
    verify_bundle(bundle_dir / "image.manifest.xml", user.cert_pem)
    with pytest.raises(CorruptBundleError, match="does not decrypt to a gzip-compressed tar"):
        unbundle(
            bundle_dir / "image.manifest.xml",
            user.key_pem,
            bundle_dir / "restored",
            user_cert_pem=user.cert_pem,
        )
    assert os.listdir(bundle_dir / "restored") == []
