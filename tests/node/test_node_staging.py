"""The staging tree mke2fs -d reads: hard links to the volume's files, and copies of small ones past a budget.

mke2fs looks every file with more than one link up in a list, one entry at a time, so a tree of
many hard links costs it time that grows with the square of their number (STAGING_LINKS).
"""

from __future__ import annotations

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


# A local user may swap a directory they own for a symbolic link to one they cannot read, between
# the moment the walk looks at it and the moment anything opens it. Nothing behind the link may
# reach the selection or the image.


def volume_with_a_swappable_directory(tmp_path: Path) -> tuple[Path, Path]:
    """A volume whose /home/alice/docs a user could swap, and root's keys elsewhere: (volume, keys)."""
    volume = tmp_path / "volume"
    (volume / "home/alice/docs").mkdir(parents=True)
    # The user names their files as root's keys are named, so that the staged names match.
    for name in ("authorized_keys", "id_ed25519"):
        (volume / "home/alice/docs" / name).write_text("the user's own\n")
    keys = tmp_path / "root-ssh"
    keys.mkdir(mode=0o700)
    for name in ("authorized_keys", "id_ed25519"):
        (keys / name).write_text(f"ROOT SECRET {name}\n")
    return volume, keys


def swap_for_a_link(directory: Path, target: Path) -> None:
    """What the user does: the directory moves aside, a symbolic link to target takes its place."""
    directory.rename(directory.with_name(directory.name + ".old"))
    directory.symlink_to(target)


class SwappingEntry:
    """A directory entry that, once the walk has looked at it, swaps itself for a link (see below)."""

    def __init__(self, entry: os.DirEntry, swap) -> None:
        self._entry, self._swap = entry, swap
        self.name, self.path = entry.name, entry.path

    def __getattr__(self, name: str):
        return getattr(self._entry, name)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        found = self._entry.stat(follow_symlinks=follow_symlinks)
        self._swap()
        return found


def scandir_that_swaps(monkeypatch, parent: Path, name: str, target: Path) -> None:
    """Make the walk's scan of parent swap its entry name for a link to target just after its lstat."""
    real_scandir = os.scandir
    wanted = os.path.realpath(parent)

    class Scan:
        def __init__(self, scan) -> None:
            self.scan = scan

        def __enter__(self):
            return (
                SwappingEntry(e, lambda: swap_for_a_link(parent / name, target)) if e.name == name else e
                for e in self.scan.__enter__()
            )

        def __exit__(self, *exc) -> None:
            self.scan.__exit__(*exc)

    def scandir(where=None):
        scan = real_scandir(where) if where is not None else real_scandir()
        shown = os.readlink(f"/proc/self/fd/{where}") if isinstance(where, int) else os.path.realpath(where)
        return Scan(scan) if shown == wanted else scan

    monkeypatch.setattr(node.os, "scandir", scandir)


def test_a_directory_swapped_for_a_link_while_walked_shows_nothing_behind_the_link(tmp_path, monkeypatch):
    volume, keys = volume_with_a_swappable_directory(tmp_path)
    scandir_that_swaps(monkeypatch, volume / "home/alice", "docs", keys)
    walked = list(node.walk_volume(str(volume), (), (), False))
    secret = {(os.lstat(keys / n).st_dev, os.lstat(keys / n).st_ino) for n in os.listdir(keys)}
    selected = [e for e in walked if isinstance(e, node.Selected)]
    assert not [e.path for e in selected if (e.st.st_dev, e.st.st_ino) in secret]
    assert "/home/alice/docs" in {e.path for e in selected}  # as the walk saw it: a directory


def test_a_directory_swapped_for_a_link_while_walked_puts_nothing_behind_the_link_in_the_image(
    tmp_path, monkeypatch
):
    volume, keys = volume_with_a_swappable_directory(tmp_path)
    scandir_that_swaps(monkeypatch, volume / "home/alice", "docs", keys)
    image = tmp_path / "image"
    cleanup = node.Cleanup()
    node.build_image(
        str(volume),
        str(image),
        exclusions=(),
        includes=(),
        no_filter=False,
        size_mb=None,
        volume_fs={},
        cleanup=cleanup,
    )
    cleanup.wait()
    for entry in list_image(image):
        if entry.type == "file":
            inside = subprocess.run(
                ["debugfs", "-R", f"cat {entry.path}", str(image)], capture_output=True, check=True
            ).stdout
            assert b"ROOT SECRET" not in inside, entry.path


def test_a_directory_swapped_for_a_link_after_the_walk_stages_nothing_behind_the_link(tmp_path):
    volume, keys = volume_with_a_swappable_directory(tmp_path)
    walked = list(node.walk_volume(str(volume), (), (), False))
    swap_for_a_link(volume / "home/alice/docs", keys)
    staging = tmp_path / "staging"
    staging.mkdir()
    left_out: list = []
    node.stage_volume(walked, str(staging), left_out)
    for name in ("authorized_keys", "id_ed25519"):
        staged_file = staging / "home/alice/docs" / name
        assert not staged_file.exists() or b"ROOT SECRET" not in staged_file.read_bytes(), name
    assert {e.path for e in left_out} >= {"/home/alice/docs/authorized_keys", "/home/alice/docs/id_ed25519"}
