"""Unbundle stays within bounded memory and the manifest's sizes, whatever the decrypted stream holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from dataclasses import replace

import pytest
from crafting import plain_tar, tar_header

from amidsl.bundle import BundleError, read_manifest, unbundle
from amidsl.bundle.unbundle import BundleKeys, decrypted_chunks

MiB = 1024 * 1024
MEMORY_LIMIT_KIB = 256 * 1024


def _gzip_of(head: bytes, zeros: int) -> bytes:
    """A gzip stream of head followed by that many zero bytes, made without holding them."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [compressor.compress(head)]
    chunk = b"\x00" * MiB
    for _ in range(zeros // MiB):
        out.append(compressor.compress(chunk))
    return b"".join(out) + compressor.flush()


def _peak_kib_of_unbundle(manifest, user, destination) -> int:
    """Run unbundle in a fresh interpreter; return its peak resident memory in KiB."""
    script = textwrap.dedent(
        """
        import sys
        from amidsl.bundle import BundleError, unbundle
        manifest, key, cert, destination = sys.argv[1:]
        try:
            unbundle(manifest, open(key, "rb").read(), destination, user_cert_pem=open(cert, "rb").read())
        except BundleError as error:
            print("refused:", error, file=sys.stderr)
        # VmHWM is this program's own peak (ru_maxrss would include the forking test runner's).
        status = open("/proc/self/status").read()
        print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        """
    )
    key, cert = destination.parent / "pk.pem", destination.parent / "cert.pem"
    key.write_bytes(user.key_pem)
    cert.write_bytes(user.cert_pem)
    result = subprocess.run(
        [sys.executable, "-c", script, str(manifest), str(key), str(cert), str(destination)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "refused:" in result.stderr, result.stderr
    return int(result.stdout.split()[-1])


def _sparse_map_bomb(blocks: int) -> bytes:
    """An old-GNU sparse header followed by `blocks` extension blocks of 21 map entries each."""
    entry = b"%011o\x00%011o\x00" % (1, 1)
    sparse = entry * 4 + b"\x01" + b"%011o\x00" % 1
    extension = (entry * 21 + b"\x01").ljust(512, b"\x00")
    return tar_header(b"image", 4, b"S", sparse) + extension * blocks


@pytest.mark.parametrize(
    ("head", "zeros"),
    [
        (tar_header(b"././@LongLink", 600 * MiB, b"L"), 600 * MiB),
        (tar_header(b"././@PaxHeader", 600 * MiB, b"x"), 600 * MiB),
        (_sparse_map_bomb(300_000), 0),
    ],
    ids=["gnu-long-name", "pax-header", "sparse-map"],
)
def test_a_header_bomb_is_refused_within_256_mb(tmp_path, user, craft, head, zeros):
    manifest = craft(tmp_path / "bundle", gzip_stream=_gzip_of(head, zeros), size=4)
    assert _peak_kib_of_unbundle(manifest, user, tmp_path / "out") < MEMORY_LIMIT_KIB
    assert os.listdir(tmp_path / "out") == []


def test_a_sparse_member_larger_than_the_manifest_size_is_refused(tmp_path, user, craft):
    two_gib = 2 * 1024 * MiB
    # A sparse map with one empty region at the end: 2 GiB of holes and no data at all.
    sparse = (
        b"%011o\x00%011o\x00" % (two_gib, 0) + b"\x00" * 72 + b"\x00" + b"\x80" + two_gib.to_bytes(11, "big")
    )
    tar = tar_header(b"image", 0, b"S", sparse) + b"\x00" * 1024
    manifest = craft(tmp_path / "bundle", tar, size=1)
    with pytest.raises(BundleError, match="size"):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert os.listdir(tmp_path / "out") == []


def test_a_plain_member_larger_than_the_manifest_size_is_refused(tmp_path, user, craft):
    manifest = craft(tmp_path / "bundle", plain_tar(b"image", b"y" * 5000), size=1)
    with pytest.raises(BundleError, match="size"):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert os.listdir(tmp_path / "out") == []


def test_data_after_the_end_of_the_archive_is_bounded(tmp_path, user, craft):
    tar = plain_tar(b"image", b"z") + b"\x00" * (64 * MiB)
    manifest = craft(tmp_path / "bundle", tar, size=1)
    with pytest.raises(BundleError, match="after the end"):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)


def test_a_second_member_is_refused(tmp_path, user, craft):
    tar = plain_tar(b"image", b"a")[:-1024] + plain_tar(b"other", b"b")
    manifest = craft(tmp_path / "bundle", tar, size=1)
    with pytest.raises(BundleError, match="exactly one"):
        unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)


def test_parts_read_beyond_the_bundled_size_are_refused(genuine, user):
    manifest = read_manifest(genuine)
    short = replace(manifest, bundled_size=manifest.bundled_size - 1)
    keys = BundleKeys(b"k" * 16, b"i" * 16)
    with pytest.raises(BundleError, match="bundled_size"):
        for _ in decrypted_chunks(short, keys, genuine.parent):
            pass


def test_a_crafted_single_file_bundle_restores(tmp_path, user, craft):
    """The crafting helper itself is sound: a well-formed one-file stream restores byte for byte."""
    data = os.urandom(3000)
    tar = plain_tar(b"image", data)
    manifest = craft(tmp_path / "bundle", tar, size=len(data))
    assert read_manifest(manifest).digest == hashlib.sha1(tar).hexdigest()
    restored = unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert restored.read_bytes() == data


def test_a_posix_tar_with_a_pax_header_restores(tmp_path, user, craft):
    """Bounded reading still accepts what a POSIX tar writes: the name and size from a pax header."""
    import io
    import tarfile

    data = os.urandom(3000)
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("image")
        info.size = len(data)
        info.pax_headers = {"comment": "written by a POSIX tar", "path": "image", "size": str(len(data))}
        archive.addfile(info, io.BytesIO(data))
    manifest = craft(tmp_path / "bundle", stream.getvalue(), size=len(data))
    restored = unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert restored.read_bytes() == data


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_gnu_tar_sparse_output_with_extension_blocks_restores_sparse(tmp_path, user, craft):
    """What `tar -c -S` writes for a file of many data regions (a sparse map beyond the header)."""
    image = tmp_path / "src" / "image"
    image.parent.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
        for region in range(40):
            f.seek(region * MiB + 4096)
            f.write(os.urandom(5000))
    tar = subprocess.run(
        ["tar", "-c", "-S", "--owner", "0", "--group", "0", "-C", str(image.parent), "image"],
        capture_output=True,
        check=True,
    ).stdout
    manifest = craft(tmp_path / "bundle", tar, size=64 * MiB)
    restored = unbundle(manifest, user.key_pem, tmp_path / "out", user_cert_pem=user.cert_pem)
    assert restored.read_bytes() == image.read_bytes()
    assert restored.stat().st_blocks * 512 < 2 * MiB
