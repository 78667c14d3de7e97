"""mke2fs reads the volume through a private, read-only view of bind mounts, not a staging tree.

Only root may mount; elsewhere (and when asked with staging = "links") the program stages a tree of
hard links, so every test here compares the two ways or checks the view's safety.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amidsl.bundle import list_image
from amidsl.node import PROGRAM_PATH
from amidsl.node import amidsl_node as node
from tests.node.conftest import bundle_request, make_volume, run_node
from tests.node.test_node_bundle import restore_with_openssl
from tests.serial import host_mounts

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="only root may mount"), host_mounts]

# Directories changed within two seconds before the walk are covered rather than watched (QUIET_NS):
# waiting this long makes the volume look like a real one, most of whose directories are shown as
# they are.
SETTLE_SECONDS = 2.1


def bundled_entries(volume: Path, destination: Path, scratch: Path, **request: object) -> tuple:
    """Bundle the volume: (the image's entries by path, the report, the program's stderr, the image)."""
    run = run_node("bundle", bundle_request(volume, destination, **request))
    assert run.returncode == 0, run.stderr
    image = restore_with_openssl(destination, run.result, scratch)
    return {e.path: e for e in list_image(image)}, run.result, run.stderr, image


def described(entries: dict) -> dict:
    """What a user sees of each entry, hard links as the paths sharing its inode."""
    by_inode: dict = {}
    for e in entries.values():
        by_inode.setdefault(e.inode, []).append(e.path)
    return {
        path: (e.type, e.mode, e.uid, e.gid, e.size, e.target, tuple(sorted(by_inode[e.inode])))
        for path, e in entries.items()
    }


def mtime_in_image(image: Path, path: str) -> int:
    """The seconds of an entry's mtime, as debugfs reads it from the image."""
    out = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True).stdout
    return int(re.search(r"mtime: (0x[0-9a-f]+)", out).group(1), 16)


def snapshot(root: Path) -> dict:
    """Every entry of a tree with what changes when anything writes to it."""
    found = {}
    for directory, names, files in os.walk(root):
        for name in [*names, *files, "."]:
            st = os.lstat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


@pytest.mark.parametrize("settled", [False, True], ids=["fresh volume", "settled volume"])
def test_the_view_and_a_staging_tree_make_the_same_image(tmp_path, settled):
    volume = make_volume(tmp_path / "volume")
    (tmp_path / "out-view").mkdir()
    (tmp_path / "out-links").mkdir()
    if settled:
        time.sleep(SETTLE_SECONDS)
    view, view_report, view_log, view_image = bundled_entries(volume, tmp_path / "out-view", tmp_path / "a")
    links, links_report, links_log, _ = bundled_entries(
        volume, tmp_path / "out-links", tmp_path / "b", staging="links"
    )
    assert "through a private view" in view_log and "staging the volume" not in view_log
    assert "staging the volume" in links_log
    assert described(view) == described(links)
    assert view_report["left_out"] == links_report["left_out"]
    assert view["/etc/passwd"].inode == view["/etc/passwd.hardlink"].inode
    assert "/home/alice/server.pem" not in view and "/proc" in view and "/proc/1" not in view
    # A directory shown with something left out keeps its own times, not the moment it was covered.
    assert mtime_in_image(view_image, "/home/alice") == int(os.lstat(volume / "home/alice").st_mtime)
    assert sorted(os.listdir(tmp_path / "out-view")) == [p["filename"] for p in view_report["parts"]]


def test_the_view_leaves_the_volume_and_the_node_mount_table_as_they_were(tmp_path):
    volume = make_volume(tmp_path / "volume")
    (tmp_path / "out").mkdir()
    before, mounts = snapshot(volume), Path("/proc/self/mountinfo").read_text()
    _, report, log, _ = bundled_entries(volume, tmp_path / "out", tmp_path / "r")
    assert "through a private view" in log
    assert snapshot(volume) == before
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert sorted(os.listdir(tmp_path / "out")) == [p["filename"] for p in report["parts"]]


def test_a_file_made_in_a_shown_directory_while_mke2fs_reads_sends_the_build_to_a_staging_tree(tmp_path):
    volume = make_volume(tmp_path / "volume")
    (tmp_path / "out").mkdir()
    # An mke2fs that, when it builds the image, first writes a key into /etc: as a certificate
    # renewal might, after the walk that applied the filter.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    wrapper = bin_dir / "mke2fs"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" -d "*) touch {volume}/etc/late.pem ;; esac\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    time.sleep(SETTLE_SECONDS)  # so that /etc is shown as it is, and watched
    run = run_node("bundle", bundle_request(volume, tmp_path / "out"), path=f"{bin_dir}:{os.environ['PATH']}")
    assert run.returncode == 0, run.stderr
    assert "changed while mke2fs read them" in run.stderr and "staging the volume" in run.stderr
    entries = {e.path for e in list_image(restore_with_openssl(tmp_path / "out", run.result, tmp_path / "r"))}
    assert "/etc/late.pem" not in entries and "/etc/hostname" in entries
    assert ["/etc/late.pem", "filter pattern"] in run.result["left_out"]
    assert sorted(os.listdir(tmp_path / "out")) == [p["filename"] for p in run.result["parts"]]


def test_a_node_that_does_not_allow_mounts_gets_a_staging_tree(tmp_path):
    volume = make_volume(tmp_path / "volume")
    (tmp_path / "out").mkdir()
    no_mounts = ("setpriv", "--bounding-set", "-sys_admin")  # root, but without CAP_SYS_ADMIN
    run = run_node("bundle", bundle_request(volume, tmp_path / "out"), wrapper=no_mounts)
    assert run.returncode == 0, run.stderr
    assert "cannot be shown through mounts" in run.stderr and "Operation not permitted" in run.stderr
    entries = {e.path for e in list_image(restore_with_openssl(tmp_path / "out", run.result, tmp_path / "r"))}
    assert {"/etc/hostname", "/home/alice/notes.txt"} <= entries and "/home/alice/server.pem" not in entries
    assert sorted(os.listdir(tmp_path / "out")) == [p["filename"] for p in run.result["parts"]]


def test_an_unknown_staging_is_refused(tmp_path):
    volume = make_volume(tmp_path / "volume")
    (tmp_path / "out").mkdir()
    run = run_node("bundle", bundle_request(volume, tmp_path / "out", staging="copy"))
    assert run.returncode != 0
    assert "staging 'copy' is not one of auto, links" in run.stderr
    assert os.listdir(tmp_path / "out") == []


# The view's safety, checked in a program of its own: mounting moves the process that mounts into a
# mount namespace of its own, which the test run must not be.
VIEW_PROBE = """
import errno, importlib.util, json, os, shutil, sys
spec = importlib.util.spec_from_file_location("amidsl_node", sys.argv[1])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
volume, view, swap = sys.argv[2], sys.argv[3], sys.argv[4]
plan = node.plan_view(node.walk_volume(volume, [], [], False), volume, node.SizeTally(-1))
if swap == "swap":  # a directory replaced by a symbolic link to elsewhere after the walk
    os.rename(os.path.join(volume, "home/alice"), os.path.join(volume, "home/alice.old"))
    os.symlink("/etc", os.path.join(volume, "home/alice"))
if swap == "swap-parent":  # a parent directory replaced by a symbolic link to itself, moved aside
    os.rename(os.path.join(volume, "home"), os.path.join(volume, "home.old"))
    os.symlink("home.old", os.path.join(volume, "home"))
try:
    node.mount_view(view, volume, plan)
except OSError as exc:
    print(json.dumps({"mounted": False, "errno": exc.errno}))
    node.unmount_view(view)
    sys.exit(0)
found = {"mounted": True, "listing": sorted(os.listdir(os.path.join(view, "home/alice")))}
for name, attempt in [
    ("write", lambda: open(os.path.join(view, "etc/hostname"), "w")),
    ("create", lambda: open(os.path.join(view, "srv/new"), "w")),
    ("unlink", lambda: os.unlink(os.path.join(view, "home/alice/notes.txt"))),
]:
    try:
        attempt()
        found[name] = "done"
    except OSError as exc:
        found[name] = errno.errorcode[exc.errno]
shutil.rmtree(view, ignore_errors=True)  # the worst a mistake could do: it must not reach the volume
node.unmount_view(view)
print(json.dumps(found))
"""


def probe_view(tmp_path: Path, volume: Path, swap: str = "-") -> dict:
    view = tmp_path / "view"
    view.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            VIEW_PROBE,
            str(PROGRAM_PATH),
            str(volume),
            str(view),
            swap,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_nothing_written_or_removed_through_the_view_reaches_the_volume(tmp_path):
    volume = make_volume(tmp_path / "volume")
    before = snapshot(volume)
    found = probe_view(tmp_path, volume)
    assert found["mounted"]
    assert found["listing"] == [".ssh", "notes.txt"]  # the filtered files are not shown
    assert (found["write"], found["create"]) == ("EROFS", "EROFS")
    assert found["unlink"] in ("EROFS", "EBUSY")
    assert snapshot(volume) == before


def test_a_directory_replaced_by_a_symlink_after_the_walk_is_not_shown(tmp_path):
    volume = make_volume(tmp_path / "volume")
    found = probe_view(tmp_path, volume, swap="swap")
    assert found["mounted"] is False
    # Not the directory the walk saw: a symbolic link (ENOTDIR, ELOOP), or another inode (ESTALE).
    assert found["errno"] in (errno.ENOTDIR, errno.ELOOP, errno.ESTALE)


def test_a_parent_directory_replaced_by_a_symlink_after_the_walk_is_not_followed(tmp_path):
    volume = make_volume(tmp_path / "volume")
    time.sleep(SETTLE_SECONDS)  # so that /home is shown as it is, and only /home/alice is covered
    # /home moves aside and a link to it takes its place: the same files, reached through a link.
    found = probe_view(tmp_path, volume, swap="swap-parent")
    assert found["mounted"] is False
    assert found["errno"] in (errno.ENOTDIR, errno.ELOOP, errno.ESTALE)


def planned(volume: Path) -> node.VolumeView:
    return node.plan_view(node.walk_volume(str(volume), [], [], False), str(volume), node.SizeTally(-1))


def test_a_settled_volume_is_shown_as_it_is_but_where_something_is_left_out(tmp_path):
    volume = make_volume(tmp_path / "volume")
    time.sleep(SETTLE_SECONDS)
    plan = planned(volume)
    covered = {s.path: [c.path for c in s.children] for s in plan.shadows}
    # The filter leaves keys out of /home/alice and its .ssh; /proc and /mnt are kept empty.
    assert covered == {
        "/home/alice": ["/home/alice/.ssh", "/home/alice/notes.txt"],
        "/home/alice/.ssh": [],
        "/proc": [],
        "/mnt": [],
    }
    assert str(volume / "etc") in plan.watched and str(volume / "home/alice") not in plan.watched
    assert plan.mounts == 1 + 3 + 1 + 2  # the volume, /home/alice and its two entries, .ssh, two kept empty


def test_directories_changed_just_before_the_walk_are_covered_not_watched(tmp_path):
    volume = make_volume(tmp_path / "volume")
    plan = planned(volume)  # everything was just made
    assert {"/", "/etc", "/srv", "/var/cache/big"} <= {s.path for s in plan.shadows}
    assert plan.watched == {}


def test_a_view_of_more_than_view_mounts_is_not_planned(tmp_path, monkeypatch):
    volume = make_volume(tmp_path / "volume")
    monkeypatch.setattr(node, "VIEW_MOUNTS", 5)
    plan = planned(volume)
    assert plan.mounts > 5 and plan.shadows == [] and plan.binds == []
    assert plan.size.entries == planned(volume).size.entries  # the count is whole


# Mounts under the volume. The walk reads what is mounted (as the system sees it, and as ec2-bundle-vol
# did); so must mke2fs through the view, whether the mount is of another filesystem or a bind mount of
# the same one (same device: only the mount table tells), of a directory or of a file.


@contextlib.contextmanager
def bind_mounted(source: Path, target: Path):
    """source bind-mounted at target for the duration, always unmounted after."""
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)


def volume_with_secrets_under_a_mount_point(root: Path) -> Path:
    """make_volume, with keys in /srv/data and a motd in /etc, both to be mounted over."""
    volume = make_volume(root)
    (volume / "srv/data").mkdir()
    (volume / "srv/data/.bash_history").write_text("mysql -p hunter2\n")
    (volume / "srv/data/server.pem").write_text("under the mount point\n")
    (volume / "srv/other").mkdir()
    (volume / "srv/other/shared.txt").write_text("mounted content\n")
    (volume / "etc/motd").write_text("under\n")
    (volume / "srv/motd.mounted").write_text("the motd mounted over /etc/motd\n")
    return volume


def test_a_bind_mount_of_a_directory_of_the_same_filesystem_is_imaged_as_mounted_in_both_ways(tmp_path):
    volume = volume_with_secrets_under_a_mount_point(tmp_path / "volume")
    (tmp_path / "out-view").mkdir()
    (tmp_path / "out-links").mkdir()
    with bind_mounted(volume / "srv/other", volume / "srv/data"):
        time.sleep(SETTLE_SECONDS)  # so that /srv is shown as it is, not covered
        view, view_report, view_log, _ = bundled_entries(volume, tmp_path / "out-view", tmp_path / "a")
        links, links_report, _, _ = bundled_entries(
            volume, tmp_path / "out-links", tmp_path / "b", staging="links"
        )
    assert "through a private view" in view_log
    assert "/srv/data/.bash_history" not in view and "/srv/data/server.pem" not in view
    assert "/srv/data/shared.txt" in view
    assert described(view) == described(links)
    assert view_report["left_out"] == links_report["left_out"]


def test_a_bind_mount_of_a_file_is_imaged_as_mounted_in_both_ways(tmp_path):
    volume = volume_with_secrets_under_a_mount_point(tmp_path / "volume")
    (tmp_path / "out-view").mkdir()
    (tmp_path / "out-links").mkdir()
    with bind_mounted(volume / "srv/motd.mounted", volume / "etc/motd"):
        time.sleep(SETTLE_SECONDS)  # so that /etc is shown as it is, not covered
        view, _, view_log, view_image = bundled_entries(volume, tmp_path / "out-view", tmp_path / "a")
        links, _, _, _ = bundled_entries(volume, tmp_path / "out-links", tmp_path / "b", staging="links")
    assert "through a private view" in view_log
    inside = subprocess.run(["debugfs", "-R", "cat /etc/motd", str(view_image)], capture_output=True).stdout
    assert inside == b"the motd mounted over /etc/motd\n"
    assert described(view) == described(links)


# Any tree, any mounts: the two ways to image a volume must agree, and neither may hold a filtered path.

NAMES = ["a", "b", "notes", ".ssh", "authorized_keys", ".bash_history", "key.pem", "x.swp", "id_rsa", "old~"]
# What image hygiene takes: a key, a history, credentials, and /tmp's contents (kept empty).
NAMES += ["id_ed25519", ".zsh_history", ".aws", "credentials", "tmp"]
KINDS = ["dir", "dir", "file", "symlink"]


@st.composite
def trees_with_mounts(draw) -> tuple:
    """(entries as (path, kind), bind mounts as (source, target)) of a small volume."""
    entries: dict = {}
    directories = [""]
    for _ in range(draw(st.integers(2, 14))):
        parent = draw(st.sampled_from(directories))
        path = f"{parent}/{draw(st.sampled_from(NAMES))}"
        if path in entries:
            continue
        entries[path] = draw(st.sampled_from(KINDS))
        if entries[path] == "dir":
            directories.append(path)
    files = [p for p, kind in entries.items() if kind == "file"]

    def apart(one: str, other: str) -> bool:
        return not (one + "/").startswith(other + "/") and not (other + "/").startswith(one + "/")

    mounts: list = []
    for pool in (directories[1:], files):  # a bind mount of a directory, then of a file
        # Apart from each other and from an earlier mount, which changes what is under its target.
        pairs = [
            (a, b)
            for a in pool
            for b in pool
            if a != b and apart(a, b) and all(apart(a, m) and apart(b, m) for mount in mounts for m in mount)
        ]
        if pairs and draw(st.booleans()):
            mounts.append(draw(st.sampled_from(pairs)))
    return sorted(entries.items()), mounts


def make_tree(volume: Path, entries: list) -> None:
    volume.mkdir()
    for path, kind in entries:  # sorted: parents first
        where = volume / path.lstrip("/")
        if kind == "dir":
            where.mkdir()
        elif kind == "file":
            where.write_text(f"{path}\n")
        else:
            where.symlink_to("/root/.ssh/id_ed25519" if "ssh" in path else "../a")


def filtered_paths(paths) -> list:
    """The paths the filter or image hygiene would have left out (emptied files aside)."""
    left_out = [item for item in node.HYGIENE if item.treatment == node.HYGIENE_LEAVE_OUT]
    leave_out = [pattern for item in left_out for pattern in item.patterns]
    patterns = [*node.DEFAULT_FILTER, *leave_out, "/tmp/*", "/var/tmp/*"]
    return [p for p in paths for pattern in patterns if fnmatch.fnmatchcase(p, pattern)]


@settings(max_examples=10, deadline=None)
@given(trees_with_mounts())
@example(  # issue 19's case: keys under a bind mount point in a directory shown as it is
    (
        [
            ("/a", "dir"),
            ("/a/b", "dir"),
            ("/a/b/.bash_history", "file"),
            ("/a/b/key.pem", "file"),
            ("/a/notes", "dir"),
            ("/a/notes/a", "file"),
        ],
        [("/a/notes", "/a/b")],
    )
)
def test_the_view_and_a_staging_tree_agree_on_any_tree_with_mounts_and_hold_nothing_filtered(tree):
    # The node program applies every hygiene item when the request keeps none, as here.
    entries, mounts = tree
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as mounted:
        work = Path(scratch)
        volume = work / "volume"
        make_tree(volume, entries)
        for source, target in mounts:
            mounted.enter_context(bind_mounted(volume / source.lstrip("/"), volume / target.lstrip("/")))
        (work / "out-view").mkdir()
        (work / "out-links").mkdir()
        time.sleep(SETTLE_SECONDS)  # so that most directories are shown as they are
        view, view_report, view_log, _ = bundled_entries(volume, work / "out-view", work / "a")
        links, links_report, _, _ = bundled_entries(volume, work / "out-links", work / "b", staging="links")
    assert "through a private view" in view_log
    assert described(view) == described(links)
    assert view_report["left_out"] == links_report["left_out"]
    assert filtered_paths(view) == [] and filtered_paths(links) == []
