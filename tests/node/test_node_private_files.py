"""Nothing the node program writes is readable by another user, whatever destination_dir and umask are.

The program runs as root and its image holds the volume's secrets (/etc/shadow, private keys): every
file it makes is created 0600 in a private 0700 directory of its own, and never through a symbolic
link someone planted at a name it would use.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from amidsl.node import PROGRAM_PATH
from tests.node.conftest import bundle_request, make_volume, run_node
from tests.serial import host_mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the program images a volume as root")

# Runs the node program with the umask most systems give root, as a login shell or cron would.
UMASK_022 = ("sh", "-c", 'umask 022 && exec "$@"', "sh")
DEAD_PID = 2**22 + 1  # above Linux's largest pid: no such process


def volume_with_a_secret(root: Path) -> Path:
    """A small volume holding a file only root may read."""
    volume = make_volume(root)
    secret = volume / "etc/shadow"
    secret.write_text("root:$6$salt$hash-an-attacker-wants:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    return volume


def listing_mke2fs(bin_dir: Path, listed: Path, listing: Path) -> str:
    """A PATH whose mke2fs runs the real one, then lists a directory as '<mode> <path>' lines."""
    real = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    bin_dir.mkdir()
    stand_in = bin_dir / "mke2fs"
    stand_in.write_text(
        f'#!/bin/sh\n{real} "$@"\nstatus=$?\ncase " $* " in *" -d "*)\n'
        f"  find {listed} -mindepth 1 -printf '%m %p\\n' >> {listing} ;;\nesac\nexit $status\n"
    )
    stand_in.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def readable_by_others(listing: str, top: Path) -> list[str]:
    """Paths of a listing that another user could reach: no private (go-rwx) directory above them in top."""
    modes = {}
    for line in listing.splitlines():
        mode, path = line.split(" ", 1)
        modes[Path(path)] = int(mode, 8)
    exposed = []
    for path, mode in modes.items():
        below_top = [p for p in [path, *path.parents] if top in p.parents]
        if not any(modes.get(p, 0o777) & 0o077 == 0 for p in below_top):
            exposed.append(f"{mode:o} {path}")
    return exposed


@needs_root
@pytest.mark.parametrize("staging", ["auto", "links"], ids=["private view", "staging tree"])
def test_nothing_the_bundle_makes_in_destination_dir_is_readable_by_others_while_mke2fs_runs(
    tmp_path, staging
):
    volume = volume_with_a_secret(tmp_path / "volume")
    destination = tmp_path / "out"
    destination.mkdir()
    listing = tmp_path / "listing"
    path = listing_mke2fs(tmp_path / "bin", destination, listing)

    run = run_node(
        "bundle", bundle_request(volume, destination, staging=staging), wrapper=UMASK_022, path=path
    )

    assert run.returncode == 0, run.stderr
    assert listing.read_text().strip(), "mke2fs never listed destination_dir"
    assert readable_by_others(listing.read_text(), destination) == []


@needs_root
@host_mounts
def test_a_staging_tree_on_the_volume_is_not_readable_by_others_while_mke2fs_runs(tmp_path):
    volume = volume_with_a_secret(tmp_path / "volume")
    # destination_dir on another filesystem: the staging tree goes on the volume's, for its hard links.
    destination = tmp_path / "out"
    destination.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "amidsl-test", str(destination)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    listing = tmp_path / "listing"
    try:
        path = listing_mke2fs(tmp_path / "bin", volume, listing)
        run = run_node(
            "bundle", bundle_request(volume, destination, staging="links"), wrapper=UMASK_022, path=path
        )
    finally:
        subprocess.run(["umount", str(destination)], check=False)

    assert run.returncode == 0, run.stderr
    staged = [line for line in listing.read_text().splitlines() if f"{volume}/.amidsl-staging-" in line]
    assert staged, "mke2fs never saw a staging tree in the volume"
    assert readable_by_others("\n".join(staged), volume) == []


@needs_root
def test_the_finished_parts_are_readable_by_their_owner_only(tmp_path):
    volume = volume_with_a_secret(tmp_path / "volume")
    destination = tmp_path / "out"
    destination.mkdir()

    run = run_node("bundle", bundle_request(volume, destination), wrapper=UMASK_022)

    assert run.returncode == 0, run.stderr
    modes = {
        p["filename"]: stat.S_IMODE(os.lstat(destination / p["filename"]).st_mode)
        for p in run.result["parts"]
    }
    assert set(modes.values()) == {0o600}


@needs_root
@pytest.mark.parametrize(
    "planted",
    [".image.part.$$.tmp0", ".image.ahead.$$", ".image.image.$$", "image.part.0"],
    ids=["temporary part", "chunks deflated ahead", "image", "finished part"],
)
def test_a_symlink_planted_at_a_name_the_run_would_use_is_not_followed(tmp_path, planted):
    volume = volume_with_a_secret(tmp_path / "volume")
    destination = tmp_path / "out"
    destination.mkdir()
    target = tmp_path / "victim"
    target.write_bytes(b"a file the symlink points at")
    # The shell execs the program, so $$ is the program's own pid: the names it would use.
    plant = ("sh", "-c", f'ln -s {target} "{destination}/{planted}" && exec "$@"', "sh")

    run = run_node("bundle", bundle_request(volume, destination), wrapper=plant)

    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == b"a file the symlink points at"
    for part in run.result["parts"]:
        assert stat.S_ISREG(os.lstat(destination / part["filename"]).st_mode)


def test_the_cleanup_command_removes_a_dead_runs_private_work_directory(tmp_path):
    destination = tmp_path / "out"
    work = destination / f".image.work.{DEAD_PID}-k3j9"
    work.mkdir(parents=True, mode=0o700)
    (work / "image").write_bytes(b"half an image")

    run = run_node(
        "cleanup", {"volume": str(tmp_path), "destination_dir": str(destination), "prefix": "image"}
    )

    assert run.returncode == 0, run.stderr
    assert run.result["removed"] == [str(work)]
    assert os.listdir(destination) == []


def test_the_cleanup_command_keeps_the_private_work_directory_of_a_run_still_going(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    # A process whose command line names the node program stands in for a run that is going.
    with subprocess.Popen(["sh", "-c", "sleep 60", str(PROGRAM_PATH)]) as going:
        try:
            work = destination / f".image.work.{going.pid}-k3j9"
            work.mkdir(mode=0o700)
            run = run_node("cleanup", {"volume": str(tmp_path), "destination_dir": str(destination)})
        finally:
            going.kill()

    assert run.returncode == 0, run.stderr
    assert run.result["removed"] == []
    assert f"kept {work}: the run with pid {going.pid} is still going" in run.stderr


def test_upload_refuses_a_part_that_is_a_symbolic_link(tmp_path):
    (tmp_path / "secret").write_bytes(b"not a part")
    (tmp_path / "image.part.0").symlink_to(tmp_path / "secret")
    request = {
        "destination_dir": str(tmp_path),
        "parts": [{"filename": "image.part.0", "url": "http://127.0.0.1:9/never-used"}],
        "concurrency": 1,
        "retries": 0,
    }

    run = run_node("upload", request)

    assert run.returncode == 1
    assert "part image.part.0 is not a regular file" in run.stderr
