"""Listing an image made by plain mke2fs, without mounting it."""

import os
import subprocess

from amidsl.bundle import list_image
from amidsl.bundle.e2fs import tool


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
