"""The node program's stream pieces: pigz-style gzip, AES through libcrypto, Python 3.8 compatibility."""

from __future__ import annotations

import ast
import glob
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl.node import PROGRAM_PATH, program_sha256, program_source
from amidsl.node import amidsl_node as node
from tests.minimum_python import newer_python_violations

# Repetitive data compresses across chunk boundaries, where the shared dictionary matters.
payloads = st.one_of(
    st.binary(max_size=20_000),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=300), st.integers(1, 200)),
)


def parallel_gzip(data: bytes, level: int, workers: int, chunk_size: int, pieces: int) -> bytes:
    out: list[bytes] = []
    gzip = node.ParallelGzip(out.append, level, workers, chunk_size)
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        gzip.write(data[start : start + step])
    gzip.close()
    return b"".join(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=payloads,
    level=st.integers(1, 9),
    workers=st.integers(1, 4),
    chunk_size=st.integers(1, 5000),
    pieces=st.integers(1, 7),
)
def test_parallel_gzip_is_one_member_that_zlib_and_gunzip_read_back(data, level, workers, chunk_size, pieces):
    compressed = parallel_gzip(data, level, workers, chunk_size, pieces)
    reader = zlib.decompressobj(31)
    assert reader.decompress(compressed) == data
    assert reader.eof and reader.unused_data == b""  # one member, nothing after it
    gunzip = subprocess.run(["gunzip", "-c"], input=compressed, capture_output=True, check=True)
    assert gunzip.stdout == data


def test_parallel_gzip_of_a_large_stream_stays_close_to_plain_zlib():
    data = program_source().encode() * 200  # about 10 MB of text, many chunks
    ours = parallel_gzip(data, 6, 2, node.GZIP_CHUNK, 50)
    assert zlib.decompress(ours, 31) == data
    assert len(ours) <= len(zlib.compress(data, 6)) * 1.01


def test_a_sink_that_fails_makes_close_raise_its_error_instead_of_hanging():
    def sink(data: bytes) -> None:
        if len(data) > 10:  # the gzip header goes through; the first compressed piece fails
            raise OSError(28, "No space left on device")

    gzip = node.ParallelGzip(sink, 1, 2, 1000)
    for _ in range(50):  # more pieces than the queue between workers and writer holds
        gzip.write(os.urandom(1000))
    with pytest.raises(OSError, match="No space left"):
        gzip.close()


def test_an_abandoned_gzip_stops_its_threads():
    gzip = node.ParallelGzip(lambda data: None, 1, 2, 1000)
    gzip.write(os.urandom(5000))
    gzip.abandon()
    assert not gzip._writer.is_alive()


def test_a_tree_removed_in_the_background_is_gone_once_cleanup_waits(tmp_path):
    tree = tmp_path / "staging"
    for n in range(50):
        (tree / f"d{n}" / "sub").mkdir(parents=True)
        (tree / f"d{n}" / "sub" / "file").write_text("x")
    cleanup = node.Cleanup()
    cleanup.add(str(tree))
    cleanup.remove_in_background(str(tree))
    cleanup.wait()
    assert not tree.exists()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=5000),
    cuts=st.lists(st.integers(0, 5000), max_size=6),
    key=st.binary(min_size=16, max_size=16),
)
def test_aes_through_libcrypto_equals_cryptography(data, cuts, key):
    iv = bytes(reversed(key))
    lib, _ = node.load_libcrypto()
    ours = node.Aes128Cbc(lib, key, iv)
    out = b""
    previous = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        out += ours.update(data[previous:cut])
        previous = cut
    out += ours.finish()
    ours.close()
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    expected = encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    assert out == expected


def test_the_program_parses_as_python_3_8():
    ast.parse(program_source(), filename=str(PROGRAM_PATH), feature_version=(3, 8))


def python_3_8_violations(source: str, tmp_path: Path) -> str:
    """What vermin finds in the program that Python 3.8 lacks."""
    return newer_python_violations({"amidsl_node.py": source}, (3, 8), tmp_path)


def test_the_program_uses_nothing_newer_than_python_3_8(tmp_path):
    assert python_3_8_violations(program_source(), tmp_path) == ""


def test_the_python_3_8_check_finds_a_newer_stdlib_api_and_a_runtime_generic(tmp_path):
    newer = program_source() + '\nPREFIX = "x".removeprefix("y")\nSIZES = dict[str, int]\n'
    found = python_3_8_violations(newer, tmp_path)
    assert "str.removeprefix" in found
    assert "dict[..]" in found


def test_the_program_imports_only_the_standard_library():
    tree = ast.parse(program_source())
    imported = {
        alias.name.split(".")[0]
        for node_ in ast.walk(tree)
        if isinstance(node_, ast.Import)
        for alias in node_.names
    } | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def find_python38() -> str | None:
    """A Python 3.8: on PATH, or one pyenv installed (its shims run only the selected versions)."""
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = [shutil.which("python3.8"), *sorted(glob.glob(f"{pyenv_root}/versions/3.8*/bin/python3.8"))]
    for candidate in filter(None, found):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_the_program_runs_under_python_3_8_where_installed(tmp_path):
    python38 = find_python38()
    if python38 is None:
        pytest.skip("python3.8 is not installed (on PATH or by pyenv)")
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume/file").write_text("x")
    request = f'{{"volume": "{tmp_path}/volume", "destination_dir": "{tmp_path}"}}'
    done = subprocess.run(
        [python38, str(PROGRAM_PATH), "check"], input=request, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_shipped_source_has_a_stable_checksum():
    assert program_sha256() == hashlib.sha256(PROGRAM_PATH.read_bytes()).hexdigest()
    assert program_source().startswith("#!/usr/bin/env python3\n")


def test_a_node_without_mke2fs_is_told_to_install_e2fsprogs(monkeypatch):
    monkeypatch.setattr(node.shutil, "which", lambda name, path=None: None)
    with pytest.raises(node.NodeError, match=r"mke2fs is not installed; install e2fsprogs"):
        node.mke2fs_version()


def test_an_old_mke2fs_is_refused(monkeypatch):
    def old_mke2fs(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, b"mke2fs 1.42.9 (28-Dec-2013)\n")

    monkeypatch.setattr(node.subprocess, "run", old_mke2fs)
    with pytest.raises(node.NodeError, match=r"mke2fs is version 1.42.9; .* needs e2fsprogs >= 1.43"):
        node.mke2fs_version()


def test_a_node_without_libcrypto_is_told_to_install_openssl(monkeypatch):
    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(node.ctypes, "CDLL", no_library)
    with pytest.raises(node.NodeError, match=r"libcrypto was not found .*; install openssl"):
        node.load_libcrypto()


def compressible_file(path: Path, chunks: int) -> bytes:
    """READ_CHUNK-sized chunks of text-like data that repeats across chunk boundaries."""
    words = [os.urandom(6).hex().encode() for _ in range(500)]
    rng = random.Random(7)
    data = b" ".join(rng.choice(words) for _ in range(chunks * node.READ_CHUNK // 12))[
        : chunks * node.READ_CHUNK
    ]
    path.write_bytes(data)
    return data


def deflated_ahead(tmp_path: Path, image: Path, level: int) -> node.DeflatedAhead:
    """A DeflatedAhead that has gone over the whole of image (as if mke2fs had finished)."""
    ahead = node.DeflatedAhead(str(tmp_path / "ahead"), level, 1 << 40, node.Cleanup())
    ahead.start(str(image))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # it stops finding work once it has deflated every chunk
        made = ahead.made
        time.sleep(0.3)
        if made and ahead.made == made:
            break
    ahead.stop()
    return ahead


def bundle_gzip(image: Path, level: int, ahead: node.DeflatedAhead | None) -> bytes:
    """The gzip member bundling makes of image's tar, with or without chunks deflated ahead."""
    out: list[bytes] = []
    gzip = node.ParallelGzip(out.append, level, 2, ahead=ahead)
    for piece in node.tar_one_file(str(image), "image"):
        gzip.write(piece)
    gzip.close()
    return b"".join(out)


def test_chunks_deflated_ahead_make_the_same_gzip_member_as_deflating_when_bundling(tmp_path):
    image = tmp_path / "image"
    compressible_file(image, 8)
    ahead = deflated_ahead(tmp_path, image, 4)
    # Chunk 0 has no dictionary in the image; the last two lie within AHEAD_MARGIN of its end.
    assert ahead.made == 8 - 1 - node.AHEAD_MARGIN // node.READ_CHUNK
    assert bundle_gzip(image, 4, ahead) == bundle_gzip(image, 4, None)
    assert ahead.used == ahead.made


def test_a_chunk_changed_after_it_was_deflated_ahead_is_deflated_again(tmp_path):
    image = tmp_path / "image"
    data = compressible_file(image, 8)
    ahead = deflated_ahead(tmp_path, image, 4)
    changed = bytearray(data)
    changed[3 * node.READ_CHUNK + 1000 : 3 * node.READ_CHUNK + 1010] = b"CHANGED!!!"  # mid-chunk
    image.write_bytes(bytes(changed))
    member = bundle_gzip(image, 4, ahead)
    assert member == bundle_gzip(image, 4, None)
    assert ahead.used == ahead.made - 1
    tar = zlib.decompress(member, 31)
    assert bytes(changed) in tar


def test_deflating_ahead_keeps_to_its_byte_budget(tmp_path):
    image = tmp_path / "image"
    compressible_file(image, 8)
    ahead = node.DeflatedAhead(str(tmp_path / "ahead"), 4, 1, node.Cleanup())
    ahead.start(str(image))
    time.sleep(1)
    ahead.stop()
    assert ahead.made == 1


def test_the_size_added_up_while_staging_equals_a_walk_of_the_staging_tree(tmp_path):
    from tests.node.conftest import make_volume

    volume = make_volume(tmp_path / "volume")
    staging = tmp_path / "staging"
    staging.mkdir()
    tally = node.SizeTally(-1)
    staged = node.stage_volume(node.walk_volume(str(volume), ["/srv"], [], False), str(staging), [], tally)
    walked = node.measure_selection(node.walk_volume(str(staging), (), (), True), -1)
    assert tally.size() == walked
    assert staged == walked.entries > 0


def test_tar_with_release_frees_the_image_behind_the_reading_and_yields_the_same_archive(tmp_path):
    kept, freed = tmp_path / "kept", tmp_path / "freed"
    data = compressible_file(kept, 40)
    with open(freed, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())  # its blocks allocated on disk, as mke2fs's image's are
    # The tar header holds the mtime: the two files were written in the same second only by luck.
    os.utime(freed, ns=(os.stat(kept).st_atime_ns, os.stat(kept).st_mtime_ns))
    archive = b"".join(node.tar_one_file(str(kept), "image"))
    assert b"".join(node.tar_one_file(str(freed), "image", release=True)) == archive
    assert kept.read_bytes() == data  # without release the file is left alone
    # Freed up to the last RELEASE_STEP boundary read; the size stays.
    assert os.stat(freed).st_size == len(data)
    allocated = os.stat(freed).st_blocks * 512
    assert allocated <= len(data) - 32 * node.MiB, f"{allocated} bytes still allocated"
