"""An image amidsl builds boots: a debootstrapped Debian 12 is built natively over the sshd node on
127.0.0.1, uploaded to moto's S3, downloaded, verified, restored with `amidsl unbundle` and booted from
the restored disk in QEMU (TCG, serial console), which must reach the rootfs's end-of-boot marker.

The root filesystem tree is cached outside the repository (see tests/boot/rootfs.py); building it the
first time needs debootstrap and the Debian mirror, afterwards the test runs offline.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from amidsl.bundle.ls import describe_layout
from amidsl.run.ebs_upload import download_snapshot
from tests.boot import rootfs
from tests.live.node_settings import (
    aws_client,
    build_over_ssh,
    build_settings,
    download_and_verify,
    unbundle_with_cli,
)
from tests.serial import qemu_guests
from tests.vm.machine import QEMU, boot_until_poweroff

pytestmark = qemu_guests

NODE_MACHINE_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def debian_tree() -> Path:
    """The cached Debian 12 tree, debootstrapped first if needed."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    if shutil.which("grub-mkimage") is None:
        pytest.skip("grub-mkimage is not installed on this node (apt-get install grub-pc-bin)")
    if not rootfs.rootfs_path().is_dir() and rootfs.missing_tools():
        pytest.skip("debootstrap is not installed and no Debian tree is cached (apt-get install debootstrap)")
    return rootfs.build_rootfs()


@pytest.fixture
def marked_tree(debian_tree: Path, tmp_path: Path):
    """This run's copy of the tree (hard links where it can), with a file to keep and one in the
    credential dir; the tools dir (install_dir) is inside it too, where the build puts the node program.

    The cached tree itself is never changed, so that test runs on one machine do not disturb each other.
    """
    tree = tmp_path / "tree"
    copied = subprocess.run(["cp", "-al", str(debian_tree), str(tree)], capture_output=True, check=False)
    if copied.returncode != 0:  # another filesystem: a real copy
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["cp", "-a", str(debian_tree), str(tree)], check=True)
    checked = tree / rootfs.CHECKED_DIR.lstrip("/")
    token = secrets.token_hex(8)
    (checked / "credentials").mkdir(parents=True)
    (checked / "kept.txt").write_text(token + "\n")
    (checked / "credentials" / "pk").write_text("a signing key that must stay out of the image\n")
    for planted in rootfs.PLANTED_SECRETS:
        path = tree / planted.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"a builder's secret {token}\n")
    # A machine id of the node's own (a new file: the tree's may be a hard link into the cache).
    (tree / "etc/machine-id").unlink(missing_ok=True)
    (tree / "etc/machine-id").write_text(NODE_MACHINE_ID + "\n")
    yield tree, token
    shutil.rmtree(tree, ignore_errors=True)


def host_key_fingerprint(public_key: Path) -> str:
    """The SHA256 fingerprint of an SSH public key, as ssh-keygen -l prints it."""
    done = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True)
    return done.stdout.split()[1]


def native_build_config(tmp_path, node, fake_tools, credentials, aws_endpoint, ec2_certificate_file, tree):
    """A native build of the tree over the sshd node on 127.0.0.1."""
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    config["ami"] |= {
        "bundler": "native",
        "volume": str(tree),
        "install_dir": f"{tree}{rootfs.TOOLS_DIR}",
        "credential_dir": f"{tree}{rootfs.CREDENTIAL_DIR}",
        "ec2_certificate_source": {"local_file": str(ec2_certificate_file)},
        "image_name": f"amidsl boot test {secrets.token_hex(4)}",
    }
    return config


def assert_boots_clean(
    disk: Path, tmp_path: Path, tree: Path, token: str, node_host_key: str, nvme: bool
) -> None:
    """Boot the disk to its end-of-boot marker and check what the booted system says of itself."""
    serial = tmp_path / "serial.log"
    started = time.monotonic()
    booted = boot_until_poweroff(disk, serial, "tcg", nvme=nvme)
    console = serial.read_text(errors="replace")
    last_lines = "\n".join(console.splitlines()[-15:])
    print(f"boot {time.monotonic() - started:.0f} s")
    print(last_lines)
    assert booted.returncode == 0, booted.stderr
    facts = rootfs.marker_facts(console)
    seen = [line for line in console.splitlines() if "AMIDSL" in line]
    assert facts is not None, f"no end-of-boot marker on the console ({seen}); its last lines:\n{last_lines}"
    print(seen[-1])
    assert (facts["tools"], facts["credentials"], facts["kept"]) == ("absent", "absent", token)
    # Image hygiene: the instance made its own SSH host keys and machine id, and runs sshd with them;
    # the builder's secrets are gone; package keyrings, CA certificates (no dangling link) and /tmp work.
    assert facts["sshd"] == "active"
    assert facts["hostkey"].startswith("SHA256:") and facts["hostkey"] != node_host_key
    assert re.fullmatch(r"[0-9a-f]{32}", facts["machineid"]) and facts["machineid"] != NODE_MACHINE_ID
    assert facts["secrets"] == "absent"
    assert (facts["keyring"], facts["tmp"], facts["dangling"]) == ("present", "1777", "0")
    assert int(facts["certs"]) > 100
    assert "reboot: Power down" in console


def test_a_native_hvm_build_of_debian_boots_in_qemu_without_the_build_files(
    node, fake_tools, aws_endpoint, bucket, credentials, ec2_certificate_file, marked_tree, tmp_path
):
    tree, token = marked_tree
    node_host_key = host_key_fingerprint(tree / "etc/ssh/ssh_host_ed25519_key.pub")
    config = native_build_config(
        tmp_path, node, fake_tools, credentials, aws_endpoint, ec2_certificate_file, tree
    )
    started = time.monotonic()
    recorded = build_over_ssh(config)
    assert recorded.result.image_id, recorded.progress
    settings = recorded.result.settings
    assert settings.virtualization_type == "hvm"
    built = time.monotonic()

    download = tmp_path / "download"
    download.mkdir()
    download_and_verify(aws_endpoint, settings, download)
    disk = unbundle_with_cli(
        download / "image.manifest.xml", credentials.key_path, credentials.cert_path, tmp_path / "restored"
    )
    layout = "\n".join(describe_layout(disk))
    assert "partition 1: Linux (0x83), bootable, from sector 2048" in layout
    assert "GRUB 2 for BIOS" in layout
    print(f"build {built - started:.0f} s, restore {time.monotonic() - built:.0f} s")
    assert_boots_clean(disk, tmp_path, tree, token, node_host_key, nvme=False)


def test_an_ebs_backed_build_read_back_from_its_snapshot_boots_from_nvme(
    node, fake_tools, aws_endpoint, bucket, credentials, ec2_certificate_file, marked_tree, tmp_path
):
    tree, token = marked_tree
    node_host_key = host_key_fingerprint(tree / "etc/ssh/ssh_host_ed25519_key.pub")
    config = native_build_config(
        tmp_path, node, fake_tools, credentials, aws_endpoint, ec2_certificate_file, tree
    )
    config["ami"]["backing"] = "ebs"
    started = time.monotonic()
    recorded = build_over_ssh(config)
    assert recorded.result.image_id, recorded.progress
    snapshot_id = recorded.result.settings.snapshot_id
    assert snapshot_id and snapshot_id.startswith("snap-")
    # (moto's RegisterImage keeps no mapping; the strict fake region's checks are in tests/simulator.)
    built = time.monotonic()

    # The snapshot, read back block by block (GetSnapshotBlock; never-written blocks stay holes).
    disk = tmp_path / "disk"
    blocks = download_snapshot(aws_client("ebs", aws_endpoint), snapshot_id, str(disk))
    assert blocks > 0
    layout = "\n".join(describe_layout(disk))
    assert "partition 1: Linux (0x83), bootable, from sector 2048" in layout and "GRUB 2 for BIOS" in layout
    print(f"build {built - started:.0f} s, {blocks} blocks read back in {time.monotonic() - built:.0f} s")
    # The node's disk held the image once: the disk file, allocated as its data, no parts beside it.
    bundled = next(
        r for r in recorded.result.transcript if r.phase == "ami-bundle" and '"allocated"' in r.output
    )
    report = json.loads(bundled.output[bundled.output.index('{"') :].splitlines()[0])
    print(
        f"on the node: a {report['image_size'] / 1e6:.0f} MB disk taking {report['allocated'] / 1e6:.0f} MB"
    )
    assert report["allocated"] <= report["image_size"]
    assert_boots_clean(disk, tmp_path, tree, token, node_host_key, nvme=True)
