"""The node program's bundle command: an image of the volume, bundled into encrypted parts."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amidsl.bundle import list_image, unbundle, verify_bundle
from amidsl.bundle.keys import encrypt_for_certificate, load_certificate, load_private_key
from amidsl.bundle.manifest import EncryptedKeys, Manifest, ManifestPart, sign_manifest
from amidsl.keypairs import self_signed_pair
from amidsl.node import PROGRAM_PATH
from amidsl.node import amidsl_node as node
from tests.node.conftest import IV, KEY, bundle_request, run_node, start_node, work_dir_contents
from tests.serial import host_mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners and mounts need root")


def restore_with_openssl(destination: Path, report: dict, into: Path) -> Path:
    """cat parts | openssl enc -d | gunzip | tar x, as a person would by hand."""
    parts = [str(destination / p["filename"]) for p in report["parts"]]
    into.mkdir()
    pipeline = (
        f"cat {' '.join(parts)} | openssl enc -d -aes-128-cbc -K {KEY} -iv {IV} | gunzip | "
        f"tar -x -S -C {into}"
    )
    subprocess.run(["sh", "-c", pipeline], check=True)
    return into / report["prefix"]


def write_signed_manifest(destination: Path, report: dict, user_key: str, user_cert: str) -> Path:
    """The manifest the controller builds and signs from the node's report."""
    cert = load_certificate(user_cert)
    keys = EncryptedKeys(
        user_encrypted_key=encrypt_for_certificate(cert, KEY.encode()).hex(),
        ec2_encrypted_key=encrypt_for_certificate(cert, KEY.encode()).hex(),
        user_encrypted_iv=encrypt_for_certificate(cert, IV.encode()).hex(),
        ec2_encrypted_iv=encrypt_for_certificate(cert, IV.encode()).hex(),
    )
    unsigned = Manifest(
        name=report["prefix"],
        user="123456789012",
        architecture="x86_64",
        digest=report["digest"],
        size=report["image_size"],
        bundled_size=report["bundled_size"],
        keys=keys,
        parts=tuple(ManifestPart(i, p["filename"], p["sha1"]) for i, p in enumerate(report["parts"])),
        signature="",
    )
    manifest = sign_manifest(unsigned, load_private_key(user_key))
    path = destination / f"{report['prefix']}.manifest.xml"
    path.write_text(manifest.xml)
    return path


def test_the_parts_decrypt_with_openssl_into_an_ext4_image_of_the_volume(volume, destination, tmp_path):
    run = run_node("bundle", bundle_request(volume, destination))
    assert run.returncode == 0, run.stderr
    report = run.result
    assert sorted(os.listdir(destination)) == [p["filename"] for p in report["parts"]]
    assert report["bundled_size"] == sum(p["size"] for p in report["parts"])
    assert all(p["size"] == 256 * 1024 for p in report["parts"][:-1])
    assert set(report["seconds"]) == {"check", "stage", "mke2fs", "bundle", "remove"}

    image = restore_with_openssl(destination, report, tmp_path / "restored")
    assert image.stat().st_size == report["image_size"]
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)
    entries = {e.path: e for e in list_image(image)}
    assert entries["/etc/hostname"].size == 5
    assert entries["/etc/passwd"].inode == entries["/etc/passwd.hardlink"].inode
    assert entries["/etc/localtime"].target == "../srv/zone"
    assert entries["/srv/sparse"].size == 8 * 1024 * 1024
    assert entries["/srv/run.sh"].mode == 0o4750
    if os.geteuid() == 0:
        assert (entries["/home/alice"].uid, entries["/home/alice"].gid) == (1000, 1000)
        assert (entries["/home/alice/notes.txt"].uid, entries["/home/alice/notes.txt"].gid) == (1000, 1001)
        assert entries["/srv/run.sh"].gid == 50
    # Always-excluded directories stay, empty; the default filter keeps secrets out.
    assert "/proc" in entries and "/mnt" in entries
    assert not any(p.startswith(("/proc/", "/mnt/")) for p in entries)
    for secret in ("/home/alice/.ssh/authorized_keys", "/home/alice/.bash_history", "/home/alice/server.pem"):
        assert secret not in entries
    assert ["/proc/*", "always-excluded directory"] in report["left_out"]
    assert ["/home/alice/server.pem", "filter pattern"] in report["left_out"]


def test_a_manifest_signed_from_the_report_verifies_and_unbundles(volume, destination, tmp_path):
    run = run_node("bundle", bundle_request(volume, destination, prefix="web"))
    assert run.returncode == 0, run.stderr
    key_pem, cert_pem = self_signed_pair("amidsl node test", days=1)
    manifest = write_signed_manifest(destination, run.result, key_pem, cert_pem)

    verify_bundle(manifest, cert_pem)
    image = unbundle(manifest, key_pem, tmp_path / "unbundled", user_cert_pem=cert_pem)
    assert image.name == "web"
    assert "/home/alice/notes.txt" in {e.path for e in list_image(image)}


def test_exclusions_and_the_filter_switch_are_honoured(volume, destination, tmp_path):
    request = bundle_request(volume, destination, exclude=["/var/cache", "/etc/hostname"], filter=False)
    run = run_node("bundle", request)
    assert run.returncode == 0, run.stderr
    paths = {e.path for e in list_image(restore_with_openssl(destination, run.result, tmp_path / "r"))}
    assert "/var" in paths
    assert "/var/cache" not in paths and "/etc/hostname" not in paths
    assert "/home/alice/server.pem" in paths  # no filter
    assert "/home/alice/.ssh/authorized_keys" not in paths  # hygiene is not the filter: it still applies
    assert ["/var/cache", "caller exclusion"] in run.result["left_out"]


def test_includes_bring_back_filtered_files(volume, destination, tmp_path):
    run = run_node("bundle", bundle_request(volume, destination, includes=["/home/alice/server.pem"]))
    assert run.returncode == 0, run.stderr
    paths = {e.path for e in list_image(restore_with_openssl(destination, run.result, tmp_path / "r"))}
    assert "/home/alice/server.pem" in paths
    assert "/home/alice/.bash_history" not in paths


@pytest.fixture
def mounted_ext4(tmp_path):
    """An ext4 filesystem with a known UUID and label, loop-mounted (skips where we cannot)."""
    image, point = tmp_path / "fs.img", tmp_path / "mounted"
    point.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    uuid, label = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "cloudimg-rootfs"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-U", uuid, "-L", label, str(image)], check=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-o", "loop", str(image), str(point)]).returncode:
        pytest.skip("cannot loop-mount a filesystem here")
    try:
        yield point, uuid, label
    finally:
        subprocess.run(["umount", str(point)], check=False)


@needs_root
@host_mounts
def test_the_volume_filesystem_uuid_and_label_are_carried_over(mounted_ext4, tmp_path):
    point, uuid, label = mounted_ext4
    (point / "etc").mkdir()
    (point / "etc/fstab").write_text(f"UUID={uuid} / ext4 defaults 0 1\n")
    destination = tmp_path / "out"
    destination.mkdir()
    run = run_node("bundle", bundle_request(point, destination))
    assert run.returncode == 0, run.stderr
    assert run.result["volume_fs"] == {"type": "ext4", "uuid": uuid, "label": label}
    image = restore_with_openssl(destination, run.result, tmp_path / "r")
    header = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert f"Filesystem UUID:          {uuid}" in header
    assert f"Filesystem volume name:   {label}" in header
    assert not [p for p in os.listdir(point) if p.startswith(".amidsl-staging")]


def command_lines(root: int) -> list[bytes]:
    """The argument lists of process `root` and its descendants, as /proc shows them to every user.

    Only that tree: a test running beside this one (pytest -n) may restore a bundle with the openssl
    command line, the test key in its argv.
    """
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # /proc/PID/stat: "pid (comm) state ppid ...", and comm may hold spaces or parentheses.
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def in_tree(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    found = []
    for pid in filter(in_tree, parents):
        with contextlib.suppress(OSError):
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return found


def test_key_and_iv_never_reach_any_argv_nor_any_file(volume, destination):
    (volume / "srv/filler").write_bytes(os.urandom(20 * 1024 * 1024))
    request = bundle_request(volume, destination)
    process = start_node("bundle", request)
    seen_program = False
    secrets = (KEY.encode(), IV.encode(), KEY.upper().encode(), IV.upper().encode())
    while process.poll() is None:
        for line in command_lines(process.pid):
            seen_program |= str(PROGRAM_PATH).encode() in line
            assert not any(s in line for s in secrets), line
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert seen_program
    raw = (bytes.fromhex(KEY), bytes.fromhex(IV))
    for name in os.listdir(destination):
        data = (destination / name).read_bytes()
        assert not any(s in data for s in secrets + raw)
    assert not any(s in out + err for s in secrets)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs as destination_dir (skips where we cannot mount)."""
    point = tmp_path / "small"
    point.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "t", str(point)]).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


@host_mounts
def test_too_little_space_is_a_clear_error_before_any_work(volume, small_tmpfs):
    (volume / "srv/filler").write_bytes(os.urandom(6 * 1024 * 1024))
    run = run_node("bundle", bundle_request(volume, small_tmpfs))
    assert run.returncode == 1
    # The scratch volume has no kernel: a warning line may come after the pid line.
    [line] = [line for line in run.stderr.splitlines()[1:] if "warning" not in line]
    assert line.startswith(f"amidsl-node: error: destination_dir {small_tmpfs} has 2 MB free")
    assert "needs about" in line and "choose another destination_dir" in line
    assert os.listdir(small_tmpfs) == []
    assert not [p for p in os.listdir(volume) if p.startswith(".amidsl-staging")]


def test_the_check_refuses_too_little_space_with_the_figures(volume, small_tmpfs):
    (volume / "srv/filler").write_bytes(os.urandom(6 * 1024 * 1024))
    run = run_node("check", {"volume": str(volume), "destination_dir": str(small_tmpfs)})
    assert run.returncode == 1
    # The first line says the program's pid; a scratch volume without a kernel adds a warning.
    [line] = [line for line in run.stderr.splitlines()[1:] if "warning" not in line]
    assert line.startswith(f"amidsl-node: error: destination_dir {small_tmpfs} has 2 MB free")
    assert "needs about" in line and "choose another destination_dir" in line


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_bundle_leaves_no_parts_image_or_staging_tree(volume, destination, signum, code):
    (volume / "srv/filler").write_bytes(os.urandom(48 * 1024 * 1024))
    request = bundle_request(volume, destination, part_size=1024 * 1024, workers=1)
    process = start_node("bundle", request)
    deadline = time.monotonic() + 60
    while not any(name.startswith("part.") for name in work_dir_contents(destination)):
        assert process.poll() is None and time.monotonic() < deadline, "bundling never started"
        time.sleep(0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "removed the partial image, staging tree and parts" in err.decode()
    assert os.listdir(destination) == []
    assert not [p for p in os.listdir(volume) if p.startswith(".amidsl-staging")]


def test_a_bad_key_is_refused_without_echoing_it(volume, destination):
    secret_looking = "zz" + KEY[2:]
    run = run_node("bundle", bundle_request(volume, destination, key=secret_looking))
    assert run.returncode == 1
    assert run.stderr.splitlines()[1:] == [
        "amidsl-node: error: the request's 'key' must be 32 hex digits (16 bytes)"
    ]
    assert secret_looking not in run.stderr
    assert os.listdir(destination) == []


def test_check_reports_what_the_node_has(volume, destination):
    run = run_node("check", {"volume": str(volume), "destination_dir": str(destination)})
    assert run.returncode == 0, run.stderr
    assert run.result["mke2fs"].startswith("1.")
    assert "crypto" in run.result["libcrypto"]
    assert run.result["free_bytes"] > 0
    assert 150_000 < run.result["volume_bytes"] < 20 * 1024 * 1024
    assert set(run.result["volume_fs"]) == {"type", "uuid", "label"}


def test_a_request_that_is_not_json_gets_one_clear_line():
    done = subprocess.run(
        ["python3", str(PROGRAM_PATH), "check"], input="volume=/", capture_output=True, text=True
    )
    assert done.returncode == 1
    first, line = done.stderr.splitlines()
    assert first.startswith("amidsl-node: check runs as pid ")
    assert line.startswith("amidsl-node: error: standard input is not one JSON object")


@given(st.text(alphabet="/.#~abdhijkmoprsvwy_", max_size=40))
def test_the_quick_filter_search_finds_every_path_a_filter_pattern_matches(path):
    # The walk matches the patterns only where the quick search finds one of their pieces.
    if any(fnmatch.fnmatchcase(path, p) for p in node.DEFAULT_FILTER):
        assert node._ANY_FILTER_PIECE(path)
