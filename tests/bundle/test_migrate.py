"""migrate-manifest: EC2's copy of key and IV made for another region's certificate, signed again."""

from __future__ import annotations

import hashlib
import shutil
import zipfile

import pytest

from amidsl.bundle import decrypt_keys, read_manifest, unbundle, verify_bundle
from amidsl.bundle.errors import ManifestEditedError, WrongPrivateKeyError
from amidsl.bundle.manifest import parse_manifest
from amidsl.bundle.migrate import migrate_manifest
from amidsl.cli.main import run
from amidsl.strategies.ec2_certificate import PINNED_SPKI_SHA256, spki_sha256
from tests.bundle.conftest import bundle_into, make_identity


@pytest.fixture(scope="module")
def other_region_ec2():
    """EC2's key pair of the region the bundle moves to."""
    return make_identity("amidsl test ec2 of another region")


@pytest.fixture
def bundled(tmp_path, sample_image, user, ec2):
    out = tmp_path / "bundle"
    bundle_into(sample_image, out, user, ec2)
    return out / "web.manifest.xml"


@pytest.fixture
def files(tmp_path, user, other_region_ec2):
    paths = {"cert": tmp_path / "cert.pem", "pk": tmp_path / "pk.pem", "ec2": tmp_path / "ec2-other.pem"}
    paths["cert"].write_bytes(user.cert_pem)
    paths["pk"].write_bytes(user.key_pem)
    paths["ec2"].write_bytes(other_region_ec2.cert_pem)
    return paths


def migrate_args(bundled, files, *extra):
    return [
        "migrate-manifest",
        "--manifest", str(bundled),
        "--cert", str(files["cert"]),
        "--privkey", str(files["pk"]),
        "--region", "eu-central-1",
        *extra,
    ]  # fmt: skip


def test_the_migrated_manifest_opens_with_the_new_ec2_key_only_and_verifies(
    bundled, user, ec2, other_region_ec2, tmp_path, sample_image
):
    migrated = migrate_manifest(
        read_manifest(bundled),
        user_private_key_pem=user.key_pem,
        user_cert_pem=user.cert_pem,
        ec2_cert_pem=other_region_ec2.cert_pem,
    )
    before = read_manifest(bundled)
    (bundled.parent / "web.manifest.xml").write_text(migrated.xml)
    verify_bundle(bundled, user.cert_pem)  # signed again by the user, parts unchanged
    assert decrypt_keys(migrated, other_region_ec2.key_pem) == decrypt_keys(before, user.key_pem)
    with pytest.raises(WrongPrivateKeyError):
        decrypt_keys(migrated, ec2.key_pem)
    assert migrated.keys.user_encrypted_key == before.keys.user_encrypted_key
    restored = unbundle(bundled, other_region_ec2.key_pem, tmp_path / "restored", user_cert_pem=user.cert_pem)
    assert hashlib.sha1(restored.read_bytes()).digest() == hashlib.sha1(sample_image.read_bytes()).digest()


def test_a_manifest_edited_after_signing_is_not_signed_again(bundled, user, other_region_ec2):
    text = bundled.read_text().replace("<architecture>x86_64<", "<architecture>i386<")
    bundled.write_text(text)
    with pytest.raises(ManifestEditedError):
        migrate_manifest(
            read_manifest(bundled),
            user_private_key_pem=user.key_pem,
            user_cert_pem=user.cert_pem,
            ec2_cert_pem=other_region_ec2.cert_pem,
        )


def test_the_command_writes_the_output_file_and_leaves_the_original(bundled, files, tmp_path, user, capsys):
    original = bundled.read_text()
    output = tmp_path / "eu-central-1.manifest.xml"
    assert run([*migrate_args(bundled, files), "--ec2cert", str(files["ec2"]), "-o", str(output)]) == 0
    assert bundled.read_text() == original
    assert output.read_text() != original
    assert "migrated" in capsys.readouterr().out


def test_the_command_replaces_the_manifest_by_default(bundled, files, other_region_ec2):
    assert run([*migrate_args(bundled, files), "--ec2cert", str(files["ec2"])]) == 0
    decrypt_keys(read_manifest(bundled), other_region_ec2.key_pem)


def test_without_an_ec2_certificate_the_command_says_which_file_the_region_needs(bundled, files, capsys):
    assert run(migrate_args(bundled, files)) == 2
    err = capsys.readouterr().err
    assert "--ec2cert FILE" in err and "cert-ec2.pem is eu-central-1's" in err


def test_a_certificate_directory_without_the_region_s_file_names_it_and_the_fix(
    bundled, files, tmp_path, capsys
):
    empty = tmp_path / "certs"
    empty.mkdir()
    arguments = [*migrate_args(bundled, files), "--ec2-certificates", str(empty)]
    arguments[arguments.index("eu-central-1")] = "us-gov-west-1"
    assert run(arguments) == 2
    err = capsys.readouterr().err
    assert f"{empty}/cert-ec2-gov.pem cannot be read" in err and "etc/ec2/amitools/" in err


def test_a_certificate_directory_s_file_must_match_its_pinned_fingerprint(bundled, files, tmp_path, capsys):
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(files["ec2"], certs / "cert-ec2.pem")  # not Amazon's certificate
    original = bundled.read_text()
    assert run([*migrate_args(bundled, files), "--ec2-certificates", str(certs)]) == 2
    assert "which is not the one amidsl knows for cert-ec2.pem" in capsys.readouterr().err
    assert bundled.read_text() == original


def test_the_pinned_certificate_is_taken_from_a_directory_or_the_tools_archive(
    bundled, files, tmp_path, monkeypatch, other_region_ec2
):
    # Pin the test's stand-in for EC2's certificate, as amidsl pins Amazon's.
    monkeypatch.setitem(PINNED_SPKI_SHA256, "cert-ec2.pem", spki_sha256(other_region_ec2.cert_pem))
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(files["ec2"], certs / "cert-ec2.pem")
    assert run([*migrate_args(bundled, files), "--ec2-certificates", str(certs)]) == 0
    decrypt_keys(read_manifest(bundled), other_region_ec2.key_pem)
    archive = tmp_path / "ec2-ami-tools.zip"
    with zipfile.ZipFile(archive, "w") as tools:
        tools.write(files["ec2"], "ec2-ami-tools-1.5.19/etc/ec2/amitools/cert-ec2.pem")
    assert run([*migrate_args(bundled, files), "--ec2-certificates", str(archive)]) == 0


def test_the_command_writes_the_manifest_to_standard_output_for_output_dash(
    bundled, files, tmp_path, capsys, other_region_ec2, monkeypatch
):
    original = bundled.read_text()
    monkeypatch.chdir(tmp_path)
    assert run([*migrate_args(bundled, files), "--ec2cert", str(files["ec2"]), "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert bundled.read_text() == original and not (tmp_path / "-").exists()
    migrated = parse_manifest(captured.out)
    decrypt_keys(migrated, other_region_ec2.key_pem)
    assert "migrated" in captured.err
