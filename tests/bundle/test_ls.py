"""Listing an image made by plain mke2fs, without mounting it."""

import os
import re
import subprocess

import pytest

from amidsl.bundle import ImageError, list_image
from amidsl.bundle.e2fs import DEBUGFS_NEEDS_E2FSPROGS, tool


def test_lists_every_entry_with_type_mode_size_and_link_target(tmp_path):
    root = tmp_path / "root"
    (root / "a/b/c").mkdir(parents=True)
    (root / 'a/b/c/file with spaces & "quotes"').write_bytes(b"12345")
    (root / "exec").write_bytes(b"#!")
    os.chmod(root / "exec", 0o755)
    os.symlink("a/b", root / "to-b")
    os.mkfifo(root / "pipe")
    subprocess.run(
        [tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), str(tmp_path / "fs.img"), "16M"],
        check=True,
    )
    entries = {e.path: e for e in list_image(tmp_path / "fs.img")}
    assert set(entries) == {
        "/",
        "/lost+found",
        "/a",
        "/a/b",
        "/a/b/c",
        '/a/b/c/file with spaces & "quotes"',
        "/exec",
        "/to-b",
        "/pipe",
    }
    spaced = entries['/a/b/c/file with spaces & "quotes"']
    assert (spaced.type, spaced.size) == ("file", 5)
    assert (entries["/exec"].type, entries["/exec"].mode) == ("file", 0o755)
    assert (entries["/to-b"].type, entries["/to-b"].target) == ("symlink", "a/b")
    assert entries["/pipe"].type == "fifo"
    assert entries["/"].inode == 2 and entries["/"].type == "dir"
    assert list(entries) == sorted(entries)


@pytest.mark.parametrize(
    ("options", "inodes_a_group"),
    [(["-b", "1024", "-N", "64"], 8), (["-b", "4096", "-g", "1024", "-N", "64"], 32)],
    ids=["1KiB-blocks", "4KiB-blocks"],
)
def test_owners_sizes_and_modes_are_read_in_every_block_group(tmp_path, options, inodes_a_group):
    """Inodes are read where the filesystem keeps them: with few inodes a group, the files' inodes
    lie in several block groups, far into the file."""
    root = tmp_path / "root"
    expected = {}
    for n in range(12):
        directory = root / f"d{n}"
        directory.mkdir(parents=True)
        file = directory / "data"
        file.write_bytes(b"x" * (1000 + n))
        os.chown(file, 100_000 + n, 70_000 + n)  # above 65535: the owners' high halves count
        os.chmod(file, 0o600 + n)
        expected[f"/d{n}/data"] = (1000 + n, 100_000 + n, 70_000 + n, 0o600 + n)
    image = tmp_path / "fs.img"
    mke2fs = [tool("mke2fs"), "-q", "-t", "ext4", "-I", "128", *options, "-d", str(root), str(image), "64M"]
    subprocess.run(mke2fs, check=True)
    entries = {e.path: e for e in list_image(image)}
    assert {p: (e.size, e.uid, e.gid, e.mode) for p, e in entries.items() if p in expected} == expected
    assert len({(entries[p].inode - 1) // inodes_a_group for p in expected}) >= 2


def test_an_image_cut_short_is_refused_naming_it(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    image = tmp_path / "fs.img"
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True)
    with open(image, "r+b") as f:
        f.truncate(40 * 1024)  # the superblock and group descriptors stay; the inode table goes
    with pytest.raises(ImageError, match=rf"{image}"):
        list_image(image)


def checksummed_image(tmp_path):
    """An ext4 image with metadata checksums holding /a/f."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a/f").write_text("hi")
    image = tmp_path / "fs.img"
    mke2fs = [tool("mke2fs"), "-q", "-t", "ext4", "-O", "metadata_csum", "-b", "1024"]
    subprocess.run([*mke2fs, "-d", str(root), str(image), "16M"], check=True)
    return image


def change_mode_in_place(image, path):
    """Flip a bit of a file's mode in the image's bytes, as a crafted image could (its checksum stays)."""
    located = subprocess.run(
        [tool("debugfs"), "-R", f"imap {path}", str(image)], capture_output=True, text=True, check=True
    ).stdout
    block, offset = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)", located).groups()
    with open(image, "r+b") as f:  # the mode's low byte
        f.seek(int(block) * 1024 + int(offset, 16))
        mode = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([mode[0] ^ 0o002]))


def debugfs_stand_in(bin_dir, script):
    """A PATH whose debugfs is a shell script; REAL in it stands for the real debugfs."""
    bin_dir.mkdir()
    stand_in = bin_dir / "debugfs"
    stand_in.write_text("#!/bin/sh\n" + script.replace("REAL", tool("debugfs")))
    stand_in.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_an_inode_whose_checksum_does_not_match_is_refused_not_listed(tmp_path):
    image = checksummed_image(tmp_path)
    change_mode_in_place(image, "/a/f")
    with pytest.raises(ImageError, match=r"could not read inode \d+ of .*checksum does not match"):
        list_image(image)


def test_an_image_whose_superblock_checksum_does_not_match_is_refused_not_listed(tmp_path):
    """debugfs would retry ignoring every checksum, and list the changed inode as it is."""
    image = checksummed_image(tmp_path)
    change_mode_in_place(image, "/a/f")
    with open(image, "r+b") as f:  # s_checksum, the superblock's last 4 bytes
        f.seek(1024 + 1020)
        f.write(b"\0\0\0\0")
    with pytest.raises(ImageError, match=rf"{image}.*metadata checksums do not match.*e2fsck"):
        list_image(image)


def test_an_inode_table_far_past_the_end_of_the_image_is_refused_naming_it(tmp_path):
    image = tmp_path / "fs.img"
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-O", "64bit", str(image), "16M"], check=True)
    subprocess.run([tool("debugfs"), "-w", "-R", f"set_bg 0 inode_table {2**48}", str(image)], check=True)
    with pytest.raises(ImageError, match=rf"{image}"):
        list_image(image)


@pytest.mark.parametrize("block", [2**48, 2**62], ids=["2^48", "2^62"])
def test_an_inode_said_to_lie_past_the_end_of_the_image_is_refused_naming_it(tmp_path, monkeypatch, block):
    """debugfs refuses such a group descriptor itself (above); the listing does not rely on that."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    image = tmp_path / "fs.img"
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True)
    script = f'REAL "$@" | sed "s/located at block [0-9]*/located at block {block}/"\n'
    monkeypatch.setenv("PATH", debugfs_stand_in(tmp_path / "bin", script))
    with pytest.raises(ImageError, match=rf"an inode of {image} lies beyond the end of the image"):
        list_image(image)


@pytest.mark.parametrize(
    ("refusal", "status"),
    # debugfs exits 1 after a command it does not know, as after an image it cannot open.
    [("inode_dump: Usage: inode_dump <file>", "$status"), ("debugfs: Command not found inode_dump", "1")],
    ids=["e2fsprogs-1.43", "e2fsprogs-1.41"],
)
def test_a_debugfs_too_old_for_the_listing_is_named_with_the_e2fsprogs_needed(
    tmp_path, monkeypatch, refusal, status
):
    """An old debugfs does not know `inode_dump -b`; that is no damaged inode."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    image = tmp_path / "fs.img"
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True)
    script = (
        "commands=$(cat)\n"
        'printf "%s\\n" "$commands" | grep -v "^inode_dump -b " | REAL "$@"\n'
        "status=$?\n"
        f'printf "%s\\n" "$commands" | grep "^inode_dump -b " | sed "s/.*/{refusal}/" >&2\n'
        f"exit {status}\n"
    )
    monkeypatch.setenv("PATH", debugfs_stand_in(tmp_path / "bin", script))
    needed = re.escape(DEBUGFS_NEEDS_E2FSPROGS)
    with pytest.raises(
        ImageError, match=rf"debugfs is too old: .* needs e2fsprogs ≥ {needed} \(apt-get install e2fsprogs\)"
    ):
        list_image(image)
