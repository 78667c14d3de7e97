"""A real running node: `amidsl build` images the live root of a booted Debian 12 VM, and what it built boots.

The node is a QEMU VM booted from the cached disk (tests/vm/node_disk.py) with the settings' defaults:
`bundler = "native"`, hvm, `volume = "/"`. Its only network is a forward of its sshd to a random port
on 127.0.0.1; moto's server (S3 and EC2 on 127.0.0.1) reaches it through an SSH reverse tunnel on the
same port, so the URLs the controller presigns for `[live] endpoint_url` work inside the guest as they
do here. The build runs through the public command; the bundle is then downloaded, verified, registered
again with the simulator's strict region (which checks the bundle as EC2 does), unbundled, and the disk
booted in a second VM, whose console reports what the boot test's marker finds. The node itself is
checked after the build: nothing of amidsl's is left, its mount table is as it was.

Each step's time is printed (run with -s). Build the cache ahead with `python -m tests.vm.node_disk`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from amidsl.bundle.ls import describe_layout
from amidsl.settings import load_toml, resolve
from simulator import FakeRegion
from tests.boot import rootfs
from tests.live.node_settings import (
    ACCOUNT,
    BUCKET,
    aws_client,
    download_and_verify,
    unbundle_with_cli,
    write_toml,
)
from tests.serial import qemu_guests
from tests.vm import machine, node_disk

pytestmark = qemu_guests

BUILD_TIMEOUT = 1500  # seconds; a TCG build of the ~250 MB root takes a few minutes on 2 busy cores

# What the node looks like, from inside: its mount table (without what comes and goes with logins),
# every path of its root filesystem, /run and /dev/shm, and the processes that mention amidsl (the
# script's own process and its shell are left out: their command lines are this script).
NODE_STATE = r"""
import json, os
skip = ("/run/user/", "/proc/sys/fs/binfmt_misc")
mounts = []
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    point, rest = fields[4], fields[fields.index("-") + 1 :]
    if not point.startswith(skip):
        mounts.append(" ".join([point, fields[5], *rest]))
paths = []
for top in ("/", "/run", "/dev/shm"):
    device = os.lstat(top).st_dev
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
        paths += [os.path.join(folder, name) for name in dirs + files]
mine = {os.getpid(), os.getppid()}
processes = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        continue
    if int(pid) not in mine and "amidsl" in argv:
        processes.append(argv.strip())
print(json.dumps({"mounts": sorted(mounts), "paths": sorted(set(paths)), "processes": processes}))
"""
# New paths that come with any login or with time, not from the build.
NOISE = ("/var/log/", "/var/lib/systemd/", "/run/systemd/", "/run/user/", "/run/log/", "/var/cache/")


@dataclass
class VmBuild:
    """What one run of the pipeline found, for the tests below to judge."""

    token: str
    node_host_key: str
    build: subprocess.CompletedProcess
    before: dict
    after: dict
    node_console: str
    reached_without_tunnel: str  # what of moto's port the node reached before the tunnel was up
    restored_console: str = ""
    layout: str = ""
    strict_image_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def prepare_node(vm: machine.NodeVm, token: str) -> None:
    """Make the node a used server: a file the image must keep (this run's token), the builder's
    secrets that it must not, and no marker flag (the image boots to its marker and powers off)."""
    planted = " ".join(rootfs.PLANTED_SECRETS)
    vm.run(
        f"set -e; rm {rootfs.NODE_FLAG}; mkdir -p {rootfs.CHECKED_DIR}; echo {token} > {rootfs.KEPT_FILE}; "
        f"for p in {planted}; do mkdir -p $(dirname $p); echo 'a builder secret {token}' > $p; done"
    )


def build_config(tmp_path: Path, vm: machine.NodeVm, endpoint: str, token: str, keys: dict) -> Path:
    """[ami] with the defaults where it matters (native, hvm, volume /) and [live] for the VM."""
    ami = {
        "image_name": f"amidsl vm test {token}",
        "image_description": "built from the live root of a QEMU VM",
        "region": "us-east-1",
        "user_id": ACCOUNT,
        "s3_bucket": BUCKET,
        "s3_path": f"images/vm-{token}",
        "access_key": "AKIAAMIDSLVM" + secrets.token_hex(4).upper(),
        "secret_key": "sk/" + secrets.token_urlsafe(30),
        **keys,
    }
    live = {
        "port": vm.port,
        "user": "root",
        "identity_file": str(vm.login_key),
        "known_hosts": str(vm.known_hosts),
        "ssh_config": str(tmp_path / "no-ssh-config"),
        "endpoint_url": endpoint,
        "wait_seconds": 60,
    }
    return write_toml(tmp_path / "build.toml", {"ami": ami, "live": live})


@pytest.fixture(scope="module")
def vm_build(vm_node_disk, qemu_accel, aws_endpoint, key_and_cert, tmp_path_factory) -> VmBuild:
    """The whole pipeline, once for the module's tests."""
    disk, disk_seconds, built = vm_node_disk
    timings = {f"node disk ({'built' if built else 'cached'})": disk_seconds}
    work = tmp_path_factory.mktemp("vm")
    token = secrets.token_hex(8)
    # The strict region first: its moto starts afresh, and moto's server on 127.0.0.1 (the build's
    # S3 and EC2) shares its state with this process.
    region = FakeRegion("us-east-1")
    try:
        aws_client("s3", aws_endpoint).create_bucket(Bucket=BUCKET)
        key_pem, cert_pem = key_and_cert
        files = {"pk.pem": key_pem, "cert.pem": cert_pem, "cert-ec2.pem": region.ec2_cert_pem}
        for name, text in files.items():
            (work / name).write_text(text)
        keys = {
            "private_key_source": {"local_file": str(work / "pk.pem")},
            "certificate_source": {"local_file": str(work / "cert.pem")},
            "ec2_certificate_source": {"local_file": str(work / "cert-ec2.pem")},
        }
        moto_port = int(aws_endpoint.rsplit(":", 1)[1])

        started = time.monotonic()
        with machine.running_node(disk.path, disk.login_key, disk.host_key, qemu_accel, work) as vm:
            timings[f"node boot to sshd ({qemu_accel})"] = time.monotonic() - started
            prepare_node(vm, token)
            before = json.loads(vm.run("python3 -", stdin=NODE_STATE))
            reached = reachable(vm, moto_port)
            config = build_config(work, vm, aws_endpoint, token, keys)
            started = time.monotonic()
            with vm.reverse_tunnel(moto_port):
                build = subprocess.run(
                    [sys.executable, "-m", "amidsl", "build", "--config", str(config), "--host", "127.0.0.1"],
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
            timings["amidsl build"] = time.monotonic() - started
            (work / "build.out").write_text(build.stdout + build.stderr)
            after = json.loads(vm.run("python3 -", stdin=NODE_STATE))
            node_console = vm.console.read_text(errors="replace")
        node_host_key = disk.host_key
        found = VmBuild(token, node_host_key, build, before, after, node_console, reached, timings=timings)
        if build.returncode != 0:
            return found

        started = time.monotonic()
        settings = resolve(load_toml(config))
        download = work / "download"
        download.mkdir()
        download_and_verify(aws_endpoint, settings, download)
        region.register_signing_certificate(cert_pem)
        found.strict_image_id = region.register_image(
            {
                "Name": f"{settings.image_name} (strict region)",
                "ImageLocation": settings.s3_manifest_path,
                "Architecture": "x86_64",
                "VirtualizationType": "hvm",
            }
        )["ImageId"]
        restored = unbundle_with_cli(
            download / "image.manifest.xml", work / "pk.pem", work / "cert.pem", work / "restored"
        )
        found.layout = "\n".join(describe_layout(restored))
        timings["download, verify, strict register, unbundle"] = time.monotonic() - started

        started = time.monotonic()
        serial = work / "restored-console.log"
        machine.boot_until_poweroff(restored, serial, qemu_accel)
        found.restored_console = serial.read_text(errors="replace")
        timings[f"restored disk boot to power-off ({qemu_accel})"] = time.monotonic() - started
        # Hundreds of MB each; the consoles stay for a look after the run.
        shutil.rmtree(download)
        shutil.rmtree(work / "restored")
        return found
    finally:
        region.close()
        print(
            "\nVM test timings: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items())
        )


def reachable(vm: machine.NodeVm, port: int) -> str:
    """Which of moto's port on this machine (127.0.0.1 in the guest, the gateway 10.0.2.2) the
    guest can open, without the tunnel: user-mode networking with restrict=on should allow neither."""
    probe = "timeout 5 bash -c 'exec 3<>/dev/tcp/{}/{}' 2>/dev/null && echo {}"
    both = [probe.format(address, port, address) for address in ("127.0.0.1", "10.0.2.2")]
    return vm.run("; ".join(both) + "; true").strip()


def fingerprint(public_key: str) -> str:
    """The SHA256 fingerprint of an SSH public key, as ssh-keygen -l prints it."""
    done = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=public_key, capture_output=True, text=True, check=True
    )
    return done.stdout.split()[1]


def tail(text: str, count: int = 12) -> str:
    return "\n".join(text.splitlines()[-count:])


def test_amidsl_build_with_the_default_settings_images_the_live_root_of_a_running_vm(vm_build):
    build = vm_build.build
    print(f"\namidsl build (exit {build.returncode}):\n{tail(build.stdout)}\n{tail(build.stderr)}")
    print(f"node console, last lines:\n{tail(vm_build.node_console)}")
    assert build.returncode == 0, build.stderr
    assert "Traceback" not in build.stderr
    assert f"(amidsl vm test {vm_build.token}) from s3://" in build.stdout
    # The guest reached S3 only through the tunnel: without it, neither loopback nor the host.
    assert vm_build.reached_without_tunnel == ""
    # mke2fs read the live root through the node program's private view (its own mount namespace over
    # a root with /proc, /sys, /dev, /run and their submounts), not a fallback staging tree.
    assert "showing mke2fs the volume / through a private view" in build.stdout
    assert "staging a tree instead" not in build.stdout


def test_the_strict_region_accepts_the_bundle_the_vm_uploaded(vm_build):
    assert vm_build.build.returncode == 0, "the build failed"
    assert vm_build.strict_image_id.startswith("ami-")
    assert "partition 1: Linux (0x83), bootable, from sector 2048" in vm_build.layout
    assert "GRUB 2 for BIOS" in vm_build.layout


def test_the_restored_disk_boots_with_the_run_s_files_and_a_fresh_identity(vm_build):
    assert vm_build.build.returncode == 0, "the build failed"
    console = vm_build.restored_console
    print(f"\nrestored disk's console, last lines:\n{tail(console)}")
    facts = rootfs.marker_facts(console)
    assert facts is not None, f"no end-of-boot marker on the console; its last lines:\n{tail(console, 25)}"
    print(" ".join([rootfs.MARKER, *(f"{name}={value}" for name, value in facts.items())]))
    assert facts["kept"] == vm_build.token
    assert (facts["installdir"], facts["statedir"]) == ("absent", "absent")
    assert facts["sshd"] == "active"
    assert facts["hostkey"].startswith("SHA256:") and facts["hostkey"] != fingerprint(vm_build.node_host_key)
    assert len(facts["machineid"]) == 32 and facts["machineid"] != node_disk.NODE_MACHINE_ID
    assert (facts["secrets"], facts["authorized"]) == ("absent", "absent")
    assert (facts["keyring"], facts["tmp"], facts["dangling"]) == ("present", "1777", "0")
    assert int(facts["certs"]) > 100
    assert "reboot: Power down" in console


def test_the_node_is_left_as_it_was_after_the_build(vm_build):
    assert vm_build.build.returncode == 0, "the build failed"
    before, after = vm_build.before, vm_build.after
    assert after["processes"] == []
    assert after["mounts"] == before["mounts"]
    new = sorted(set(after["paths"]) - set(before["paths"]))
    print(f"\nnew paths on the node after the build: {new}")
    # amidsl's record of the directories it created goes with the last of them (it once stayed, empty).
    assert [p for p in new if not p.startswith(NOISE) or "amidsl" in p] == []


def test_an_ami_tools_build_on_the_vm_honours_endpoint_url():
    if not os.environ.get("AMIDSL_TEST_AMI_TOOLS_ZIP"):
        pytest.skip(
            "Amazon's ec2-ami-tools.zip cannot be downloaded offline: set AMIDSL_TEST_AMI_TOOLS_ZIP to a "
            'copy of it to build with bundler = "ami-tools" on the VM'
        )
    pytest.skip("the node disk has no Ruby for the real ec2-ami-tools yet (a second recipe would add it)")
