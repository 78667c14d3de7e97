"""The tar stream is GNU tar's own: same bytes, holes skipped, readable by GNU tar and tarfile."""

from __future__ import annotations

import os
import subprocess
import tarfile

import pytest

from amidsl.bundle.tarstream import DataRegion, data_regions, tar_one_file

BLOCK = 4096


def gnu_tar(directory, name) -> bytes:
    command = ["tar", "-c", "-S", "--owner", "0", "--group", "0", "-C", str(directory), name]
    return subprocess.run(command, capture_output=True, check=True).stdout


LAYOUTS = {
    "empty": (0, []),
    "all hole": (1024 * 1024, []),
    "no holes": (10_000, [(0, os.urandom(10_000))]),
    "hole at start": (100_000, [(60_000, b"tail" * 100)]),
    "hole at end": (100_000, [(0, b"head" * 100)]),
    # More regions than fit in the header: GNU extension blocks follow it.
    "many regions": (200 * BLOCK, [(i * 2 * BLOCK, b"r%d" % i) for i in range(60)]),
    # Sizes beyond 8 GiB overflow the octal fields: GNU base-256 numbers.
    "beyond 8 GiB": (10 * 2**30, [(9 * 2**30, b"far" * 1000), (7, b"near")]),
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_stream_equals_gnu_tar_output(tmp_path, sparse_file, layout):
    size, regions = LAYOUTS[layout]
    sparse_file(tmp_path / "image", size, regions)
    ours = b"".join(tar_one_file(tmp_path / "image", "image"))
    assert ours == gnu_tar(tmp_path, "image")
    assert len(ours) % 10240 == 0


def test_holes_are_not_stored(tmp_path, sparse_file):
    sparse_file(tmp_path / "image", 64 * 1024 * 1024, [(10 * 1024 * 1024, os.urandom(BLOCK))])
    stream = b"".join(tar_one_file(tmp_path / "image", "image"))
    assert len(stream) < 20_000


def test_gnu_tar_extracts_content_and_holes(tmp_path, sparse_file):
    regions = [(i * 3 * BLOCK + 11, os.urandom(100 + i)) for i in range(40)]
    sparse_file(tmp_path / "image", 150 * BLOCK, regions)
    (tmp_path / "archive.tar").write_bytes(b"".join(tar_one_file(tmp_path / "image", "restored")))
    subprocess.run(["tar", "-x", "-f", "archive.tar"], cwd=tmp_path, check=True)
    restored = tmp_path / "restored"
    assert restored.read_bytes() == (tmp_path / "image").read_bytes()
    assert restored.stat().st_blocks * 512 <= 41 * 2 * BLOCK


def test_python_tarfile_reads_the_member_as_a_sparse_regular_file(tmp_path, sparse_file):
    sparse_file(tmp_path / "image", 50 * BLOCK, [(5 * BLOCK, b"a"), (30 * BLOCK, b"b")])
    (tmp_path / "archive.tar").write_bytes(b"".join(tar_one_file(tmp_path / "image", "image")))
    with tarfile.open(tmp_path / "archive.tar") as archive:
        (member,) = archive.getmembers()
        assert member.isreg() and member.issparse()
        assert (member.name, member.size, member.uid, member.gid) == ("image", 50 * BLOCK, 0, 0)
        assert archive.extractfile(member).read() == (tmp_path / "image").read_bytes()


def test_data_regions_follow_the_holes(tmp_path, sparse_file):
    sparse_file(tmp_path / "f", 10 * BLOCK, [(2 * BLOCK, b"x"), (7 * BLOCK + 5, b"y")])
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert data_regions(fd, 10 * BLOCK) == [
            DataRegion(2 * BLOCK, BLOCK),
            DataRegion(7 * BLOCK, BLOCK),
        ]
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 100])
def test_member_names_that_gnu_tar_would_need_extensions_for_are_refused(tmp_path, name):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(ValueError, match="plain name"):
        b"".join(tar_one_file(tmp_path / "f", name))
