"""Images from a directory: ec2-bundle-vol's exclusions, and everything else survives intact."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amidsl.bundle import (
    ALWAYS_EXCLUDED,
    DEFAULT_FILTER,
    ImageError,
    Reason,
    build_image,
    list_image,
)
from amidsl.bundle.e2fs import debugfs
from amidsl.bundle.selection import non_local_mounts
from tests.node.test_node_private_files import listing_mke2fs, readable_by_others
from tests.node.test_node_staging import (
    scandir_that_swaps,
    swap_for_a_link,
    volume_with_a_swappable_directory,
)


def can_give_files_away() -> bool:
    """Whether this process may chown files to other users (root with CAP_CHOWN)."""
    with tempfile.NamedTemporaryFile() as probe:
        try:
            os.chown(probe.name, 4321, 4321)
        except PermissionError:
            return False
    return True


def read_from_image(image: Path, path: str, scratch: Path) -> bytes:
    """A file's bytes as stored in the image, dumped with debugfs."""
    target = scratch / "dumped"
    target.unlink(missing_ok=True)
    debugfs(image, [f'dump "{path}" {target}'])
    return target.read_bytes()


def paths(image: Path) -> set[str]:
    return {entry.path for entry in list_image(image)}


def fsck_clean(image: Path) -> bool:
    return subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0


# One file per default filter pattern, each of which must stay out of the image.
FILTERED_FILES = {
    "*/#*#": "home/u/#draft#",
    "*/.#*": "home/u/.#lock",
    "*.sw": "home/u/notes.sw",
    "*.swo": "home/u/notes.swo",
    "*.swp": "home/u/notes.swp",
    "*~": "etc/hosts~",
    "*.pem": "etc/ssl/server.pem",
    "*.priv": "etc/app.priv",
    "*id_rsa*": "home/u/.ssh/id_rsa.pub",
    "*id_dsa*": "home/u/.ssh/id_dsa",
    "*.gpg": "home/u/secret.gpg",
    "*.jks": "opt/app/keystore.jks",
    "*/.ssh/authorized_keys": "home/u/.ssh/authorized_keys",
    "*/.bash_history": "root/.bash_history",
}


@pytest.fixture
def tree(tmp_path) -> Path:
    """A small root filesystem tree with secrets, mount-point contents and ordinary files."""
    root = tmp_path / "root"
    for pattern, relative in FILTERED_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"FILTERED-SECRET {pattern} {os.urandom(8).hex()}")
    for directory in ALWAYS_EXCLUDED:
        (root / directory.lstrip("/") / "sub").mkdir(parents=True)
        (root / directory.lstrip("/") / "sub" / "data").write_text(f"MOUNTED {directory}")
    (root / "opt/ami-tools/credentials").mkdir(parents=True)
    (root / "opt/ami-tools/credentials/pk").write_text("CREDENTIAL-PK " + os.urandom(8).hex())
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho KEPT-CONTENT\n")
    return root


def test_default_filter_patterns_keep_secrets_out(tree, tmp_path):
    report = build_image(tree, tmp_path / "image")
    inside = paths(tmp_path / "image")
    for relative in FILTERED_FILES.values():
        assert "/" + relative not in inside
    assert {(x.path, x.rule) for x in report.left_out if x.reason is Reason.FILTER} == {
        ("/" + relative, pattern) for pattern, relative in FILTERED_FILES.items()
    }
    assert set(DEFAULT_FILTER) == set(FILTERED_FILES)
    assert {"/etc/hosts", "/usr/bin/tool", "/home/u/.ssh"} <= inside


def test_always_excluded_directories_stay_as_empty_mount_points(tree, tmp_path):
    report = build_image(tree, tmp_path / "image")
    inside = paths(tmp_path / "image")
    for directory in ALWAYS_EXCLUDED:
        assert directory in inside
        assert not any(p.startswith(directory + "/") for p in inside)
    assert {x.rule for x in report.left_out if x.reason is Reason.ALWAYS_EXCLUDED} == set(ALWAYS_EXCLUDED)


def test_caller_exclusions_remove_the_whole_path(tree, tmp_path):
    report = build_image(tree, tmp_path / "image", exclusions=["/opt/ami-tools", "etc/hosts"])
    inside = paths(tmp_path / "image")
    assert "/opt" in inside
    assert "/opt/ami-tools" not in inside and "/etc/hosts" not in inside
    assert {(x.path, x.reason) for x in report.left_out if x.reason is Reason.EXCLUSION} == {
        ("/opt/ami-tools", Reason.EXCLUSION),
        ("/etc/hosts", Reason.EXCLUSION),
    }


def test_excluded_content_bytes_are_absent_from_the_image_file(tree, tmp_path):
    build_image(tree, tmp_path / "image", exclusions=["/opt/ami-tools"])
    raw = (tmp_path / "image").read_bytes()
    assert b"KEPT-CONTENT" in raw  # the search itself works
    assert b"CREDENTIAL-PK" not in raw
    assert b"FILTERED-SECRET" not in raw
    assert b"MOUNTED" not in raw


def test_includes_override_the_filter_per_file(tree, tmp_path):
    build_image(tree, tmp_path / "image", includes=["/etc/ssl/server.pem", "*/.bash_history"])
    inside = paths(tmp_path / "image")
    assert {"/etc/ssl/server.pem", "/root/.bash_history"} <= inside
    assert "/home/u/.ssh/authorized_keys" not in inside
    content = read_from_image(tmp_path / "image", "/etc/ssl/server.pem", tmp_path)
    assert content == (tree / "etc/ssl/server.pem").read_bytes()


def test_includes_do_not_override_exclusions(tree, tmp_path):
    build_image(
        tree,
        tmp_path / "image",
        exclusions=["/opt/ami-tools"],
        includes=["/opt/ami-tools/credentials/pk"],
    )
    assert "/opt/ami-tools/credentials/pk" not in paths(tmp_path / "image")


def test_no_filter_keeps_every_filtered_file(tree, tmp_path):
    report = build_image(tree, tmp_path / "image", no_filter=True)
    inside = paths(tmp_path / "image")
    assert {"/" + relative for relative in FILTERED_FILES.values()} <= inside
    assert not [x for x in report.left_out if x.reason is Reason.FILTER]
    # Always-excluded directories are still emptied.
    assert "/proc/sub" not in inside


def test_links_modes_empty_dirs_and_sparse_files_survive(tmp_path, sparse_file):
    root = tmp_path / "root"
    (root / "empty/nested-empty").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin/suid").write_bytes(b"x")
    os.chmod(root / "bin/suid", 0o4711)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "private").write_text("p")
    os.chmod(root / "private", 0o600)
    os.symlink("bin/suid", root / "short-link")
    long_target = "/" + "/".join(["a-long-directory-name"] * 8)
    os.symlink(long_target, root / "long-link")
    os.symlink("does-not-exist", root / "dangling")
    os.link(root / "private", root / "private-hardlink")
    os.mkfifo(root / "fifo")
    sparse_file(root / "sparse", 64 * 1024 * 1024, [(40 * 1024 * 1024, b"middle of nowhere")])

    build_image(root, tmp_path / "image")
    entries = {e.path: e for e in list_image(tmp_path / "image")}
    assert entries["/empty/nested-empty"].type == "dir"
    assert entries["/bin/suid"].mode == 0o4711
    assert entries["/tmp"].mode == 0o1777
    assert entries["/private"].mode == 0o600
    assert (entries["/short-link"].type, entries["/short-link"].target) == ("symlink", "bin/suid")
    assert entries["/long-link"].target == long_target
    assert entries["/dangling"].target == "does-not-exist"
    assert entries["/private-hardlink"].inode == entries["/private"].inode
    assert entries["/fifo"].type == "fifo"
    assert entries["/sparse"].size == 64 * 1024 * 1024
    stat_text = debugfs(tmp_path / "image", [f"stat <{entries['/sparse'].inode}>"])
    blocks = int(re.search(r"Blockcount: (\d+)", stat_text).group(1))
    assert blocks * 512 <= 64 * 1024  # the holes are not allocated
    content = read_from_image(tmp_path / "image", "/sparse", tmp_path)
    assert content == (root / "sparse").read_bytes()
    assert fsck_clean(tmp_path / "image")
    # The source tree is left as it was: copies, not links, went into the image.
    assert os.stat(root / "private").st_nlink == 2


@pytest.mark.skipif(not can_give_files_away(), reason="giving files to other owners needs root")
def test_numeric_owners_and_device_nodes_survive(tmp_path):
    root = tmp_path / "root"
    (root / "home/app").mkdir(parents=True)
    (root / "home/app/data").write_text("d")
    os.chown(root / "home/app", 1500, 1600)
    os.chown(root / "home/app/data", 4000000, 12345)  # beyond 16 bits: ext4's high uid field
    os.symlink("data", root / "home/app/link")
    os.lchown(root / "home/app/link", 1500, 1600)
    os.mkdir(root / "lib")
    os.mknod(root / "lib/zero", 0o20640, os.makedev(1, 5))
    os.chown(root / "lib/zero", 0, 6)

    build_image(root, tmp_path / "image")
    entries = {e.path: e for e in list_image(tmp_path / "image")}
    assert (entries["/home/app"].uid, entries["/home/app"].gid) == (1500, 1600)
    assert (entries["/home/app/data"].uid, entries["/home/app/data"].gid) == (4000000, 12345)
    assert (entries["/home/app/link"].uid, entries["/home/app/link"].gid) == (1500, 1600)
    zero = entries["/lib/zero"]
    assert (zero.type, zero.mode, zero.gid) == ("char", 0o640, 6)
    assert "Device major/minor number: 01:05" in debugfs(tmp_path / "image", [f"stat <{zero.inode}>"])
    assert fsck_clean(tmp_path / "image")


def test_the_image_file_inside_the_source_is_left_out(tree, tmp_path):
    report = build_image(tree, tree / "image.img")
    assert "/image.img" not in paths(tree / "image.img")
    assert [x.path for x in report.left_out if x.reason is Reason.IMAGE_FILE] == []  # not yet there
    report = build_image(tree, tree / "image.img")  # now the old image is in the tree
    assert [x.path for x in report.left_out if x.reason is Reason.IMAGE_FILE] == ["/image.img"]
    assert not any(".staging-" in p or ".building" in p for p in paths(tree / "image.img"))


def test_size_mb_sets_the_image_size(tree, tmp_path):
    report = build_image(tree, tmp_path / "image", size_mb=48)
    assert report.size_mb == 48
    assert (tmp_path / "image").stat().st_size == 48 * 1024 * 1024


def test_too_small_size_is_a_clear_error(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root/big").write_bytes(os.urandom(20 * 1024 * 1024))
    with pytest.raises(ImageError, match=r"could not build a 8 MB image.*larger size_mb"):
        build_image(tmp_path / "root", tmp_path / "image", size_mb=8)
    assert not (tmp_path / "image").exists()


@pytest.mark.parametrize("size_mb", [0, 10241])
def test_sizes_outside_the_ami_limit_are_refused(tmp_path, size_mb):
    (tmp_path / "root").mkdir()
    with pytest.raises(ImageError, match=r"1\.\.10240 MB"):
        build_image(tmp_path / "root", tmp_path / "image", size_mb=size_mb)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        build_image(tmp_path / "nope", tmp_path / "image")


def test_list_image_refuses_a_file_that_is_not_a_filesystem(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x00" * 100_000)
    with pytest.raises(ImageError, match=r"cannot read .* as an ext2/3/4 filesystem image"):
        list_image(tmp_path / "junk")


def is_filtered(name: str) -> bool:
    return any(fnmatch.fnmatchcase("/dir/" + name, pattern) for pattern in DEFAULT_FILTER)


names = st.text(
    alphabet=st.characters(blacklist_characters="/\x00\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
).filter(lambda n: n not in (".", "..") and not is_filtered(n))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.dictionaries(names, st.binary(max_size=20_000), min_size=1, max_size=8))
def test_random_file_contents_round_trip_through_the_image(tmp_path_factory, files):
    work = tmp_path_factory.mktemp("img")
    (work / "root/dir").mkdir(parents=True)
    for name, content in files.items():
        (work / "root/dir" / name).write_bytes(content)
    build_image(work / "root", work / "image")
    entries = {e.path: e for e in list_image(work / "image")}
    for name, content in files.items():
        entry = entries["/dir/" + name]
        assert entry.size == len(content)
        debugfs(work / "image", [f"dump <{entry.inode}> {work}/out"])
        assert (work / "out").read_bytes() == content


def test_non_local_mounts_under_the_source_are_found(tmp_path):
    table = "\n".join(
        [
            "/dev/vda1 / ext4 rw 0 0",
            f"proc {tmp_path}/root/proc proc rw 0 0",
            f"server:/export {tmp_path}/root/home/shared\\040data nfs4 rw 0 0",
            f"tmpfs {tmp_path}/root/run tmpfs rw 0 0",
            f"/dev/vdb1 {tmp_path}/root/boot ext4 rw 0 0",
            f"tmpfs {tmp_path}/elsewhere tmpfs rw 0 0",
        ]
    )
    assert non_local_mounts(tmp_path / "root", table) == {
        "/proc": "proc",
        "/home/shared data": "nfs4",
        "/run": "tmpfs",
    }


# A local user may swap a directory or file they own for a symbolic link to one they cannot read
# (/root/.ssh) between the walk that selects it and the copy that stages it. Nothing behind the link
# may reach the image. (The same race, for the node program: tests/node/test_node_staging.py.)


def scandir_that_swaps_the_directory_once_listed(monkeypatch, directory: Path, target: Path) -> None:
    """Make the walk's scan of directory, once its entries are read, swap it for a link to target."""
    real_scandir = os.scandir
    wanted = os.path.realpath(directory)

    class Scan:
        def __init__(self, scan) -> None:
            self.scan = scan

        def __enter__(self):
            return self.scan.__enter__()

        def __exit__(self, *exc) -> None:
            self.scan.__exit__(*exc)
            swap_for_a_link(directory, target)

    def scandir(where=None):
        scan = real_scandir(where) if where is not None else real_scandir()
        shown = os.readlink(f"/proc/self/fd/{where}") if isinstance(where, int) else os.path.realpath(where)
        return Scan(scan) if shown == wanted else scan

    monkeypatch.setattr(os, "scandir", scandir)


def files_holding(image: Path, text: bytes) -> list[str]:
    """Paths of the image's regular files whose contents hold text."""
    found = []
    for entry in list_image(image):
        if entry.type == "file":
            inside = subprocess.run(
                ["debugfs", "-R", f"cat {entry.path}", str(image)], capture_output=True, check=True
            ).stdout
            if text in inside:
                found.append(entry.path)
    return found


def test_a_directory_swapped_for_a_link_after_the_walk_puts_nothing_behind_the_link_in_the_image(
    tmp_path, monkeypatch
):
    volume, keys = volume_with_a_swappable_directory(tmp_path)
    scandir_that_swaps_the_directory_once_listed(monkeypatch, volume / "home/alice/docs", keys)

    report = build_image(volume, tmp_path / "image")

    assert files_holding(tmp_path / "image", b"ROOT SECRET") == []
    unreadable = {x.path for x in report.left_out if x.reason is Reason.UNREADABLE}
    assert unreadable == {"/home/alice/docs/authorized_keys", "/home/alice/docs/id_ed25519"}


def test_a_file_swapped_for_a_link_after_the_walk_puts_nothing_behind_the_link_in_the_image(
    tmp_path, monkeypatch
):
    volume, keys = volume_with_a_swappable_directory(tmp_path)
    scandir_that_swaps(monkeypatch, volume / "home/alice/docs", "id_ed25519", keys / "id_ed25519")

    report = build_image(volume, tmp_path / "image")

    assert files_holding(tmp_path / "image", b"ROOT SECRET") == []
    assert {(x.path, x.reason) for x in report.left_out} >= {
        ("/home/alice/docs/id_ed25519", Reason.UNREADABLE)
    }
    assert files_holding(tmp_path / "image", b"the user's own") == ["/home/alice/docs/authorized_keys"]


def test_nothing_the_build_makes_beside_the_image_is_readable_by_others_while_mke2fs_runs(
    tmp_path, monkeypatch
):
    volume = tmp_path / "volume"
    (volume / "etc").mkdir(parents=True)
    (volume / "etc/shadow").write_text("root:$6$salt$hash-an-attacker-wants:19000:0:99999:7:::\n")
    (volume / "etc/shadow").chmod(0o600)
    destination = tmp_path / "out"
    destination.mkdir()
    destination.chmod(0o755)
    listing = tmp_path / "listing"
    monkeypatch.setenv("PATH", listing_mke2fs(tmp_path / "bin", destination, listing))
    umask = os.umask(0o022)  # what most systems give a login shell
    try:
        build_image(volume, destination / "image")
    finally:
        os.umask(umask)

    assert listing.read_text().strip(), "mke2fs never listed the image's directory"
    assert readable_by_others(listing.read_text(), destination) == []
    assert stat.S_IMODE(os.lstat(destination / "image").st_mode) == 0o600
    assert sorted(os.listdir(destination)) == ["image"]
