"""Bundling: round trips, part naming, hand restore with standard tools, and shell-made bundles."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl.bundle import (
    BlockDeviceMapping,
    BundleError,
    EncryptedKeys,
    Manifest,
    ManifestPart,
    bundle_image,
    decrypt_keys,
    read_manifest,
    unbundle,
    verify_bundle,
)
from amidsl.bundle.keys import load_private_key
from amidsl.bundle.manifest import sign_manifest
from amidsl.cli.main import run

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
IV = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")


def make_bundle(image: Path, out: Path, user, ec2, **options) -> Manifest:
    out.mkdir(exist_ok=True)
    return bundle_image(
        image,
        out,
        user_id="1234-5678-9012",
        user_cert_pem=user.cert_pem,
        user_private_key_pem=user.key_pem,
        ec2_cert_pem=ec2.cert_pem,
        **options,
    )


def test_round_trip_restores_the_image_byte_for_byte(tmp_path, sample_image, user, ec2):
    manifest = make_bundle(sample_image, tmp_path / "out", user, ec2, part_size=64 * 1024)
    manifest_path = tmp_path / "out" / "image.manifest.xml"
    assert verify_bundle(manifest_path, user.cert_pem) == read_manifest(manifest_path)
    restored = unbundle(manifest_path, user.key_pem, tmp_path / "restored", user_cert_pem=user.cert_pem)
    assert restored == tmp_path / "restored" / "image"
    assert restored.read_bytes() == sample_image.read_bytes()
    assert manifest.size == sample_image.stat().st_size
    # The holes stay holes: the restored file does not allocate the zero stretches.
    assert restored.stat().st_blocks <= sample_image.stat().st_blocks + 8


def test_ec2_key_opens_the_ec2_copy_of_the_aes_key(tmp_path, sample_image, user, ec2):
    make_bundle(sample_image, tmp_path / "out", user, ec2, key=KEY, iv=IV)
    manifest = read_manifest(tmp_path / "out" / "image.manifest.xml")
    keys = decrypt_keys(manifest, ec2.key_pem)
    assert (keys.key, keys.iv) == (KEY, IV)
    assert KEY.hex() not in repr(keys)
    restored = unbundle(
        tmp_path / "out" / "image.manifest.xml", ec2.key_pem, tmp_path / "r", user_cert_pem=user.cert_pem
    )
    assert restored.read_bytes() == sample_image.read_bytes()


def test_parts_are_named_with_zero_padded_indexes_and_sized_as_asked(tmp_path, user, ec2):
    image = tmp_path / "random.img"
    image.write_bytes(os.urandom(12 * 40_000 - 1000))  # incompressible: about 12 parts
    manifest = make_bundle(image, tmp_path / "out", user, ec2, prefix="web", part_size=40_000)
    names = [p.filename for p in manifest.parts]
    assert names == [f"web.part.{i:02d}" for i in range(len(names))]
    assert len(names) >= 11
    sizes = [(tmp_path / "out" / n).stat().st_size for n in names]
    assert set(sizes[:-1]) == {40_000} and 0 < sizes[-1] <= 40_000
    assert manifest.bundled_size == sum(sizes)
    for part in manifest.parts:
        assert part.digest == hashlib.sha1((tmp_path / "out" / part.filename).read_bytes()).hexdigest()
    assert sorted(os.listdir(tmp_path / "out")) == sorted([*names, "web.manifest.xml"])


def test_rebundling_with_fewer_parts_removes_the_stale_parts(tmp_path, user, ec2):
    image = tmp_path / "random.img"
    image.write_bytes(os.urandom(200_000))
    make_bundle(image, tmp_path / "out", user, ec2, part_size=10_000)
    manifest = make_bundle(image, tmp_path / "out", user, ec2, part_size=100_000)
    assert len(manifest.parts) == 3
    verify_bundle(tmp_path / "out" / "image.manifest.xml", user.cert_pem)


def test_manifest_records_the_machine_configuration_asked_for(tmp_path, sample_image, user, ec2):
    manifest = make_bundle(
        sample_image,
        tmp_path / "out",
        user,
        ec2,
        arch="i386",
        kernel_id="aki-12345678",
        ramdisk_id="ari-87654321",
        product_codes=("ABCD1234",),
        ancestry=("ami-11111111", "ami-22222222"),
        block_device_mappings={"root": "/dev/sda1", "ami": "sda1"},
    )
    parsed = read_manifest(tmp_path / "out" / "image.manifest.xml")
    assert parsed == manifest
    assert parsed.user == "123456789012"
    assert parsed.architecture == "i386"
    assert (parsed.kernel_id, parsed.ramdisk_id) == ("aki-12345678", "ari-87654321")
    assert parsed.product_codes == ("ABCD1234",)
    assert parsed.ancestry == ("ami-11111111", "ami-22222222")
    assert set(parsed.block_device_mappings) == {
        BlockDeviceMapping("ami", "sda1"),
        BlockDeviceMapping("root", "/dev/sda1"),
    }
    verify_bundle(tmp_path / "out" / "image.manifest.xml", user.cert_pem)


@pytest.mark.parametrize("arch", ["x86_64", "i386", "arm64"])
def test_a_bundle_without_mappings_asked_for_has_no_block_device_mapping(
    tmp_path, sample_image, user, ec2, arch
):
    # As ec2-bundle-image and ec2-bundle-vol --no-inherit without -B: no per-architecture defaults.
    manifest = make_bundle(sample_image, tmp_path / "out", user, ec2, arch=arch)
    written = (tmp_path / "out" / "image.manifest.xml").read_text()
    assert manifest.block_device_mappings == ()
    assert "<block_device_mapping>" not in written
    assert (
        "<machine_configuration><architecture>" + arch + "</architecture></machine_configuration>" in written
    )


def _write_pem(path: Path, pem: bytes) -> Path:
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def _openssl_decrypt_hex(ciphertext_hex: str, key_file: Path) -> str:
    out = subprocess.run(
        ["openssl", "pkeyutl", "-decrypt", "-inkey", str(key_file)],
        input=bytes.fromhex(ciphertext_hex),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode("ascii")


def test_bundle_is_restored_by_hand_with_openssl_gunzip_and_tar(tmp_path, sample_image, user, ec2):
    make_bundle(sample_image, tmp_path / "out", user, ec2, part_size=50_000)
    manifest = read_manifest(tmp_path / "out" / "image.manifest.xml")
    key_file = _write_pem(tmp_path / "user.key", user.key_pem)
    # The manifest holds the key and IV as hex text: exactly what openssl's -K and -iv take.
    key_hex = _openssl_decrypt_hex(manifest.keys.user_encrypted_key, key_file)
    iv_hex = _openssl_decrypt_hex(manifest.keys.user_encrypted_iv, key_file)
    assert re.fullmatch("[0-9a-f]{32}", key_hex) and re.fullmatch("[0-9a-f]{32}", iv_hex)
    parts = " ".join(p.filename for p in manifest.parts)
    restore = tmp_path / "restore"
    restore.mkdir()
    script = (
        f"cd {tmp_path / 'out'} && cat {parts} "
        f"| openssl enc -d -aes-128-cbc -K {key_hex} -iv {iv_hex} | gunzip "
        f"| tee {tmp_path / 'stream.tar'} | tar -x -C {restore}"
    )
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True)
    stream_digest = hashlib.sha1((tmp_path / "stream.tar").read_bytes()).hexdigest()
    assert stream_digest == manifest.digest
    assert (restore / "image").read_bytes() == sample_image.read_bytes()


def test_bundle_from_the_ec2_ami_tools_shell_pipeline_verifies_and_unbundles(
    tmp_path, sample_image, user, ec2
):
    """The pipeline ec2-bundle-image runs, with a manifest assembled and signed here."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "src").mkdir()
    os.link(sample_image, tmp_path / "src" / "image")
    key_hex, iv_hex = KEY.hex(), IV.hex()
    script = (
        f"tar -c -S --owner 0 --group 0 -C {tmp_path / 'src'} image | tee {tmp_path / 'stream.tar'}"
        f" | gzip -9 | openssl enc -aes-128-cbc -K {key_hex} -iv {iv_hex}"
        f" | split -b 30000 -d -a 2 - {out}/image.part."
    )
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True)
    parts = sorted(out.iterdir())
    assert len(parts) > 1

    def encrypt(text: str, cert_pem: bytes) -> str:
        cert = _write_pem(tmp_path / "cert.pem", cert_pem)
        out = subprocess.run(
            ["openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", str(cert)],
            input=text.encode("ascii"),
            capture_output=True,
            check=True,
        )
        return out.stdout.hex()

    unsigned = Manifest(
        name="image",
        user="123456789012",
        architecture="x86_64",
        digest=hashlib.sha1((tmp_path / "stream.tar").read_bytes()).hexdigest(),
        size=sample_image.stat().st_size,
        bundled_size=sum(p.stat().st_size for p in parts),
        keys=EncryptedKeys(
            user_encrypted_key=encrypt(key_hex, user.cert_pem),
            ec2_encrypted_key=encrypt(key_hex, ec2.cert_pem),
            user_encrypted_iv=encrypt(iv_hex, user.cert_pem),
            ec2_encrypted_iv=encrypt(iv_hex, ec2.cert_pem),
        ),
        parts=tuple(
            ManifestPart(i, p.name, hashlib.sha1(p.read_bytes()).hexdigest()) for i, p in enumerate(parts)
        ),
        signature="",
    )
    signed = sign_manifest(unsigned, load_private_key(user.key_pem))
    (out / "image.manifest.xml").write_text(signed.xml)

    verify_bundle(out / "image.manifest.xml", user.cert_pem)
    restored = unbundle(
        out / "image.manifest.xml", user.key_pem, tmp_path / "restored", user_cert_pem=user.cert_pem
    )
    assert restored.read_bytes() == sample_image.read_bytes()

    # The same through the command line tasks.
    cert_file = _write_pem(tmp_path / "user.crt", user.cert_pem)
    key_file = _write_pem(tmp_path / "user.key", user.key_pem)
    manifest_arg = str(out / "image.manifest.xml")
    assert run(["verify-bundle", "--manifest", manifest_arg, "--cert", str(cert_file)]) == 0
    assert run(
        ["unbundle", "--manifest", manifest_arg, "--privkey", str(key_file),
         "--destination", str(tmp_path / "cli"), "--cert", str(cert_file)]
    ) == 0  # fmt: skip
    assert (tmp_path / "cli" / "image").read_bytes() == sample_image.read_bytes()


def test_our_tar_stream_matches_gnu_tar_byte_for_byte(tmp_path, sample_image, user, ec2):
    (tmp_path / "src").mkdir()
    os.link(sample_image, tmp_path / "src" / "image")
    gnu = subprocess.run(
        ["tar", "-c", "-S", "--owner", "0", "--group", "0", "-C", str(tmp_path / "src"), "image"],
        capture_output=True,
        check=True,
    ).stdout
    manifest = make_bundle(sample_image, tmp_path / "out", user, ec2)
    assert manifest.digest == hashlib.sha1(gnu).hexdigest()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(min_value=0, max_value=300_000),
    regions=st.lists(
        st.tuples(st.integers(min_value=0, max_value=300_000), st.binary(min_size=1, max_size=5000)),
        max_size=6,
    ),
    part_size=st.integers(min_value=16, max_value=20_000),
)
def test_random_images_round_trip(tmp_path_factory, sparse_file, user, ec2, size, regions, part_size):
    work = tmp_path_factory.mktemp("rt")
    image = work / "image.bin"
    sparse_file(image, size, [(o, d) for o, d in regions if o + len(d) <= size])
    make_bundle(image, work / "out", user, ec2, part_size=part_size)
    verify_bundle(work / "out" / "image.manifest.xml", user.cert_pem)
    restored = unbundle(
        work / "out" / "image.manifest.xml", user.key_pem, work / "restored", user_cert_pem=user.cert_pem
    )
    assert restored.read_bytes() == image.read_bytes()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_output_does_not_depend_on_thread_count(tmp_path, sample_image, user, ec2, threads):
    manifest = make_bundle(sample_image, tmp_path / "out", user, ec2, key=KEY, iv=IV, threads=threads)
    reference = make_bundle(sample_image, tmp_path / "ref", user, ec2, key=KEY, iv=IV, threads=1)
    assert [p.digest for p in manifest.parts] == [p.digest for p in reference.parts]


def test_sparse_regions_are_skipped_not_compressed(tmp_path, sparse_file, user, ec2):
    image = tmp_path / "sparse.img"
    data = os.urandom(256 * 1024)
    sparse_file(image, 8 * 1024**3, [(5 * 1024**3, data)])  # 8 GiB, 256 KiB of data
    manifest = make_bundle(image, tmp_path / "out", user, ec2)
    assert manifest.size == 8 * 1024**3
    assert manifest.bundled_size < len(data) + 64 * 1024
    restored = unbundle(
        tmp_path / "out" / "image.manifest.xml", user.key_pem, tmp_path / "r", user_cert_pem=user.cert_pem
    )
    assert restored.stat().st_size == 8 * 1024**3
    assert restored.stat().st_blocks * 512 < 2 * len(data)
    with open(restored, "rb") as f:
        f.seek(5 * 1024**3)
        assert f.read(len(data)) == data


def test_a_failing_part_write_stops_the_pipeline_cleanly(tmp_path, user, ec2, monkeypatch):
    from amidsl.bundle import BundleError
    from amidsl.node import amidsl_node as node

    image = tmp_path / "random.img"
    image.write_bytes(os.urandom(6 * 1024 * 1024))
    real_write = node.PartWriter.write
    written = []

    def disk_full_after_1_mib(self, data):
        if sum(written) > 1024 * 1024:
            raise OSError(28, "No space left on device", str(tmp_path / "out" / "part"))
        written.append(len(data))
        return real_write(self, data)

    monkeypatch.setattr(node.PartWriter, "write", disk_full_after_1_mib)
    with pytest.raises(BundleError, match=r"No space left on device.*check free space"):
        make_bundle(image, tmp_path / "out", user, ec2, part_size=256 * 1024, threads=2)
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(("option", "value"), [("kernel_id", "bogus"), ("ramdisk_id", "aki-1a2b3c4d")])
def test_malformed_kernel_or_ramdisk_ids_are_refused_before_anything_is_written(
    tmp_path, sample_image, user, ec2, option, value
):
    with pytest.raises(BundleError, match=f"{option} '{value}' is not an a"):
        make_bundle(sample_image, tmp_path / "out", user, ec2, **{option: value})
    assert list((tmp_path / "out").iterdir()) == []


def test_bundling_parses_the_private_key_and_certificates_once(
    tmp_path, sample_image, user, ec2, monkeypatch
):
    from cryptography import x509

    from amidsl.bundle import keys

    parsed = []
    load_key, load_cert = keys.load_pem_private_key, x509.load_pem_x509_certificate
    monkeypatch.setattr(
        keys, "load_pem_private_key", lambda *a, **k: parsed.append("key") or load_key(*a, **k)
    )
    monkeypatch.setattr(x509, "load_pem_x509_certificate", lambda *a: parsed.append("cert") or load_cert(*a))
    make_bundle(sample_image, tmp_path / "out", user, ec2)
    assert sorted(parsed) == ["cert", "cert", "key"]
