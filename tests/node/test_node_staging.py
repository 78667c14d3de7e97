"""The staging tree mke2fs -d reads: hard links to the volume's files, and copies of small ones past a budget.

mke2fs looks every file with more than one link up in a list, one entry at a time, so a tree of
many hard links costs it time that grows with the square of their number (STAGING_LINKS).
"""

import os
import subprocess
from pathlib import Path

import pytest

from amidsl.bundle import list_image
from amidsl.node import amidsl_node as node


def tree_of_sizes(root: Path) -> Path:
    """Files of several sizes, one of them with a second link, owned and dated as on a real node."""
    (root / "etc").mkdir(parents=True)
    sizes = {"empty": 0, "tiny": 10, "page": 4096, "small": 3000, "medium": 9000, "large": 200_000}
    for name, size in sizes.items():
        path = root / "etc" / name
        path.write_bytes(os.urandom(size))
        path.chmod(0o640)
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        if os.geteuid() == 0:
            os.chown(path, 1000, 1001)
    os.link(root / "etc/tiny", root / "etc/tiny.again")
    return root


def staged(volume: Path, staging: Path, copy_up_to: int) -> None:
    staging.mkdir()
    node.stage_volume(node.walk_volume(str(volume), (), (), True), str(staging), [], None, copy_up_to)


def test_within_the_budget_every_file_is_linked(tmp_path):
    volume = tree_of_sizes(tmp_path / "volume")
    size = node.measure_selection(node.walk_volume(str(volume), (), (), True), os.lstat(volume).st_dev, 100)
    assert size.copy_up_to == -1
    assert size.copied == 0


def test_past_the_budget_the_smallest_single_linked_files_are_counted_as_copies(tmp_path):
    volume = tree_of_sizes(tmp_path / "volume")
    dev = os.lstat(volume).st_dev
    # Five single-linked files (tiny has two links, so it stays linked): empty, small and page fit
    # in 4096 bytes; leaving at most two linked means copying those three.
    size = node.measure_selection(node.walk_volume(str(volume), (), (), True), dev, 2)
    assert size.copy_up_to == 4096
    small = sum(os.lstat(volume / "etc" / n).st_blocks * 512 for n in ("empty", "small", "page"))
    assert size.copied == small
    # Never more than an eighth of the data is copied: the 200 KB file stays linked whatever the budget.
    assert node.measure_selection(node.walk_volume(str(volume), (), (), True), dev, 0).copy_up_to == 16384


def test_files_up_to_copy_up_to_are_staged_as_copies_keeping_owner_mode_and_times(tmp_path):
    volume = tree_of_sizes(tmp_path / "volume")
    staging = tmp_path / "staging"
    staged(volume, staging, 4096)

    for name in ("empty", "small", "page"):
        source, copy = os.lstat(volume / "etc" / name), os.lstat(staging / "etc" / name)
        assert copy.st_ino != source.st_ino and copy.st_nlink == 1
        assert (staging / "etc" / name).read_bytes() == (volume / "etc" / name).read_bytes()
        assert (copy.st_mode, copy.st_uid, copy.st_gid, copy.st_mtime_ns) == (
            source.st_mode,
            source.st_uid,
            source.st_gid,
            source.st_mtime_ns,
        )
    for name in ("medium", "large", "tiny"):
        assert os.lstat(staging / "etc" / name).st_ino == os.lstat(volume / "etc" / name).st_ino
    # A file that has several links on the volume keeps them in the image.
    assert os.lstat(staging / "etc/tiny.again").st_ino == os.lstat(staging / "etc/tiny").st_ino


def test_an_image_staged_partly_from_copies_holds_the_same_files(tmp_path):
    volume = tree_of_sizes(tmp_path / "volume")
    image = tmp_path / "image"
    cleanup = node.Cleanup()
    node.build_image(
        str(volume),
        str(image),
        exclusions=(),
        includes=(),
        no_filter=True,
        size_mb=None,
        volume_fs={},
        cleanup=cleanup,
        copy_up_to=4096,
    )
    cleanup.wait()
    entries = {e.path: e for e in list_image(image)}
    for name in ("empty", "tiny", "page", "small", "medium", "large"):
        inside = subprocess.run(
            ["debugfs", "-R", f"cat /etc/{name}", str(image)], capture_output=True, check=True
        ).stdout
        assert inside == (volume / "etc" / name).read_bytes(), name
        assert entries[f"/etc/{name}"].mode == 0o640
    assert entries["/etc/tiny"].inode == entries["/etc/tiny.again"].inode


def test_the_check_counts_the_copies_bundle_would_make(tmp_path, monkeypatch):
    volume = tree_of_sizes(tmp_path / "volume")
    destination = tmp_path / "out"
    destination.mkdir()
    linked_only = node.measure_selection(
        node.walk_volume(str(volume), (), (), False), os.lstat(volume).st_dev
    )
    monkeypatch.setattr(node, "STAGING_LINKS", 0)
    # Room for everything but the copies: bundle would refuse, so the check must too.
    monkeypatch.setattr(node, "_free_bytes", lambda directory: node.needed_bytes(linked_only, True))
    with pytest.raises(node.NodeError, match=r"destination_dir .* MB free but bundling"):
        node.command_check({"volume": str(volume), "destination_dir": str(destination)})
