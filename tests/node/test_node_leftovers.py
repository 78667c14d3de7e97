"""What a node program killed with SIGKILL (or lost with its node's connection) leaves: the next bundle and
the cleanup command find it and remove it, saying so, and never touch a run that is still going."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from amidsl.node import amidsl_node as node
from tests.node.conftest import bundle_request, run_node, start_node, work_dir_contents


def start_a_bundle_with_parts_on_disk(volume: Path, destination: Path) -> subprocess.Popen[bytes]:
    """A bundle that is writing parts (so image, chunks deflated ahead and a part are all on disk)."""
    (volume / "srv/filler").write_bytes(os.urandom(48 * 1024 * 1024))
    process = start_node("bundle", bundle_request(volume, destination, part_size=1024 * 1024, workers=1))
    deadline = time.monotonic() + 60
    while not any(name.startswith("part.") for name in work_dir_contents(destination)):
        assert process.poll() is None and time.monotonic() < deadline, "bundling never started"
        time.sleep(0.01)
    return process


def killed_run(volume: Path, destination: Path) -> int:
    """A bundle killed with SIGKILL halfway; return its pid."""
    process = start_a_bundle_with_parts_on_disk(volume, destination)
    process.kill()
    process.communicate(timeout=30)
    return process.pid


def test_a_killed_bundle_leaves_its_files_in_a_work_directory_named_with_its_pid(volume, destination):
    pid = killed_run(volume, destination)
    [work_dir] = os.listdir(destination)
    assert work_dir.startswith(f".image.work.{pid}-")
    # (The staging tree, .amidsl-staging-PID-*, is being removed by then: see the live tests.)
    assert {"image", "deflated-ahead", "part.0"} <= set(os.listdir(destination / work_dir))


def test_the_next_bundle_removes_what_a_killed_run_left_and_says_so(volume, destination):
    pid = killed_run(volume, destination)
    left = sorted(os.listdir(destination))
    (volume / "srv/filler").unlink()

    run = run_node("bundle", bundle_request(volume, destination))

    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(destination)) == sorted(p["filename"] for p in run.result["parts"])
    for name in left:
        assert f"removed {destination / name}, left by a run (pid {pid}) that ended" in run.stderr


def test_the_cleanup_command_removes_what_a_killed_run_left(volume, destination):
    pid = killed_run(volume, destination)
    left = sorted(str(destination / name) for name in os.listdir(destination))
    (destination / "image.part.0").write_bytes(b"a finished part: not a temporary file")

    run = run_node("cleanup", {"volume": str(volume), "destination_dir": str(destination), "prefix": "image"})

    assert run.returncode == 0, run.stderr
    assert sorted(run.result["removed"]) == left
    assert os.listdir(destination) == ["image.part.0"]
    assert f"(pid {pid})" in run.stderr


def test_cleanup_keeps_the_files_of_a_run_that_is_still_going(volume, destination):
    process = start_a_bundle_with_parts_on_disk(volume, destination)
    try:
        run = run_node("cleanup", {"volume": str(volume), "destination_dir": str(destination)})
        assert run.returncode == 0, run.stderr
        assert run.result["removed"] == []
        assert f"the run with pid {process.pid} is still going" in run.stderr
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err  # its image and parts were all there to finish with
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)


def test_files_whose_pid_now_belongs_to_another_program_are_a_dead_runs(volume, destination):
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            for name in (f".image.image.{other.pid}", f".image.ahead.{other.pid}"):
                (destination / name).write_bytes(b"left by a run that died")
            run = run_node("cleanup", {"volume": str(volume), "destination_dir": str(destination)})
        finally:
            other.kill()
    assert run.returncode == 0, run.stderr
    assert len(run.result["removed"]) == 2
    assert os.listdir(destination) == []


def test_cleanup_leaves_other_programs_files_and_other_prefixes_alone(volume, destination):
    dead = 2**22 + 1  # above Linux's largest pid: no such process
    mine = [f".image.image.{dead}", f".amidsl-staging-{dead}-x1y2"]
    others = [f".other.image.{dead}", ".image.image.notapid", "image.part.0", f".amidsl-staging-{dead}"]
    for name in mine + others:
        (destination / name).write_bytes(b"")
    run = run_node("cleanup", {"volume": str(volume), "destination_dir": str(destination)})
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(destination)) == sorted(others)


def test_a_second_bundle_of_the_same_prefix_refuses_while_the_first_is_going(volume, destination):
    process = start_a_bundle_with_parts_on_disk(volume, destination)
    try:
        run = run_node("bundle", bundle_request(volume, destination))
        assert run.returncode == 1
        assert f"another bundle of image (pid {process.pid}) is running in {destination}" in run.stderr
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err  # the first one's files were left alone
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=60)


def test_the_grub_scratch_dir_is_named_with_the_runs_pid(tmp_path):
    # A stand-in grub-mkimage that records where its config is (the scratch dir) and writes a core image.
    mkimage = tmp_path / "grub-mkimage"
    mkimage.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -c) dirname "$2" > "$0.seen";; -o) echo core > "$2";;'
        " esac; shift; done\n"
    )
    mkimage.chmod(0o755)
    grub = node.Grub(str(mkimage), str(tmp_path), "/boot/grub", "2.06")
    workdir = tmp_path / "work"
    workdir.mkdir()

    assert node.make_core_image(grub, "5b2d7c1e-9a40-4f3e-8d21-c0ffee123456", str(workdir)) == b"core\n"

    scratch = Path((tmp_path / "grub-mkimage.seen").read_text().strip())
    assert scratch.parent == workdir and scratch.name.startswith(f".amidsl-grub-{os.getpid()}-")
    assert os.listdir(workdir) == []


def test_the_cleanup_command_removes_a_dead_runs_grub_scratch_dir(volume, destination):
    dead = 2**22 + 1  # above Linux's largest pid: no such process
    scratch = destination / f".amidsl-grub-{dead}-k3j9"
    scratch.mkdir()
    (scratch / "core.img").write_bytes(b"GRUB's core image, half written")
    (destination / f".amidsl-grub-{dead}").mkdir()  # no run's name: not amidsl's to remove

    run = run_node("cleanup", {"volume": str(volume), "destination_dir": str(destination)})

    assert run.returncode == 0, run.stderr
    assert run.result["removed"] == [str(scratch)]
    assert os.listdir(destination) == [f".amidsl-grub-{dead}"]
    assert f"removed {scratch}, left by a run (pid {dead})" in run.stderr
