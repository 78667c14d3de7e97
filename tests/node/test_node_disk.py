"""An EBS-backed image's disk: kept whole by `bundle` (output "disk"), its data blocks streamed by
`blocks` in the EBS direct APIs' 512 KiB blocks, for the controller to upload (no AWS key on the node)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from amidsl.node import PROGRAM_PATH
from amidsl.node import amidsl_node as node
from tests.node.conftest import bundle_request, run_node
from tests.node.test_node_boot import make_bootable, needs_grub

BLOCK = node.EBS_BLOCK_SIZE
MODULES = "lib/modules/6.1.0-test"  # of make_bootable's kernel
NVME, ENA = "kernel/drivers/nvme/host/nvme.ko", "kernel/drivers/net/ethernet/amazon/ena/ena.ko"


def make_nitro_ready(volume: Path) -> Path:
    """A bootable volume whose kernel has the nvme and ena drivers built in."""
    make_bootable(volume)
    (volume / MODULES).mkdir(parents=True)
    (volume / MODULES / "modules.builtin").write_text(f"kernel/fs/ext4/ext4.ko\n{NVME}\n{ENA}\n")
    return volume


def check(volume: Path, destination: Path, path: str | None = None):
    """The node check of an EBS-backed build (output disk)."""
    request = {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"}
    return run_node("check", {**request, "output": "disk"}, path=path)


def read_blocks(disk: str, start: int = 0) -> tuple[list[tuple[int, bytes]], dict]:
    """Run `blocks` and parse its frames and its result, as the controller does."""
    done = subprocess.run(
        ["python3", str(PROGRAM_PATH), "blocks"],
        input=json.dumps({"disk": disk, "start": start}).encode(),
        capture_output=True,
        check=True,
    )
    out, frames = done.stdout, []
    while True:
        index = int.from_bytes(out[:8], "big")
        if index == node.END_OF_BLOCKS:
            return frames, json.loads(out[8:])
        frames.append((index, out[8 : 8 + BLOCK]))
        out = out[8 + BLOCK :]


def test_disk_blocks_yields_only_blocks_holding_data_and_pads_the_last(tmp_path):
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.write(b"\x01" * 10)  # block 0
        f.seek(3 * BLOCK)
        f.write(bytes(BLOCK))  # block 3: written, but zeros
        f.seek(5 * BLOCK + 7)
        f.write(b"\x02")  # block 5
        f.seek(9 * BLOCK + 100)
        f.write(b"end")  # block 9, cut short by the file's end
    fd = os.open(disk, os.O_RDONLY)
    try:
        blocks = list(node.disk_blocks(fd, os.path.getsize(disk)))
    finally:
        os.close(fd)
    assert [index for index, _ in blocks] == [0, 5, 9]
    assert all(len(data) == BLOCK for _, data in blocks)
    assert blocks[2][1][100:103] == b"end" and blocks[2][1][103:] == bytes(BLOCK - 103)


@needs_grub
def test_a_disk_bundle_keeps_the_hvm_disk_private_and_its_blocks_rebuild_it_exactly(
    volume, destination, tmp_path
):
    make_nitro_ready(volume)
    request = bundle_request(volume, destination, virtualization_type="hvm", output="disk")
    del request["key"], request["iv"]  # nothing is encrypted: no key is sent
    run = run_node("bundle", request)
    assert run.returncode == 0, run.stderr
    report = run.result
    disk = destination / "image.disk"
    assert report["disk"] == str(disk) and report["output"] == "disk"
    assert stat.S_IMODE(disk.stat().st_mode) == 0o600
    assert sorted(p.name for p in destination.iterdir()) == ["image.disk"]  # no parts, no work directory
    assert report["image_size"] == disk.stat().st_size
    assert report["volume_size_gib"] == 1

    frames, result = read_blocks(str(disk))
    assert result["sent"] == report["blocks"] == len(frames) > 0
    linear = hashlib.sha256(b"".join(hashlib.sha256(data).digest() for _, data in frames)).digest()
    assert base64.b64encode(linear).decode() == report["checksum"]
    # The blocks, written at their places in a file of the disk's size, are the disk.
    rebuilt = tmp_path / "rebuilt"
    with open(rebuilt, "wb") as f:
        f.truncate(report["image_size"])
        for index, data in frames:
            f.seek(index * BLOCK)
            f.write(data[: max(0, report["image_size"] - index * BLOCK)])
    assert rebuilt.read_bytes() == disk.read_bytes()
    assert node.boot_loader_state(rebuilt.read_bytes()[: node.MiB]).startswith("GRUB 2 for BIOS")

    # A resumed upload starts at a block: the ones before it are not sent again.
    later, _ = read_blocks(str(disk), start=frames[-1][0])
    assert later == frames[-1:]


def test_a_disk_is_only_for_an_hvm_image(volume, destination):
    run = run_node(
        "bundle", bundle_request(volume, destination, virtualization_type="paravirtual", output="disk")
    )
    assert run.returncode == 1
    assert "output 'disk' is a bootable disk: it needs virtualization_type 'hvm'" in run.stderr
    assert list(destination.iterdir()) == []


def test_blocks_refuses_a_link_in_place_of_the_disk(tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"root's secret")
    (tmp_path / "image.disk").symlink_to(target)
    done = subprocess.run(
        ["python3", str(PROGRAM_PATH), "blocks"],
        input=json.dumps({"disk": str(tmp_path / "image.disk")}).encode(),
        capture_output=True,
    )
    assert done.returncode == 1 and b"root's secret" not in done.stdout


@needs_grub
def test_the_check_refuses_a_kernel_without_the_drivers_nitro_types_need(volume, destination):
    make_bootable(volume)
    run = check(volume, destination)
    assert run.returncode == 1
    assert "kernel 6.1.0-test has no nvme driver" in run.stderr and "NVMe root volume" in run.stderr
    assert "kernel 6.1.0-test has no ena driver" in run.stderr and "linux-image-amd64" in run.stderr
    # The S3 path's check does not ask: Xen instance types need neither driver.
    assert (
        run_node(
            "check",
            {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"},
        ).returncode
        == 0
    )


@needs_grub
def test_the_check_passes_built_in_drivers_and_the_newest_kernel_counts(volume, destination):
    make_nitro_ready(volume)
    (volume / "boot/vmlinuz-6.1.0-9-old").write_bytes(
        b"\x00" * 4096
    )  # older: its missing drivers do not count
    run = check(volume, destination)
    assert run.returncode == 0, run.stderr


@needs_grub
def test_nvme_as_a_module_must_be_in_the_initramfs(volume, destination, tmp_path):
    make_nitro_ready(volume)
    (volume / MODULES / "modules.builtin").write_text(f"{ENA}\n")
    (volume / MODULES / "kernel/drivers/nvme/host").mkdir(parents=True)
    (volume / MODULES / "kernel/drivers/nvme/host/nvme.ko.zst").write_bytes(b"module")
    # What the node's initramfs lister says of the kernel's initramfs (Debian's lsinitramfs).
    tools = tmp_path / "tools"
    tools.mkdir()
    lister = tools / "lsinitramfs"
    lister.write_text('#!/bin/sh\ncat "$LISTING"\n')
    lister.chmod(0o755)
    path = f"{tools}:{os.environ['PATH']}"
    listing = tmp_path / "listing"
    os.environ["LISTING"] = str(listing)
    try:
        listing.write_text("usr/lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko\n")
        without = check(volume, destination, path=path)
        listing.write_text(f"usr/lib/modules/6.1.0-test/{NVME}.zst\n")
        with_it = check(volume, destination, path=path)
    finally:
        del os.environ["LISTING"]
    assert without.returncode == 1
    assert "the initramfs of kernel 6.1.0-test does not hold the nvme module" in without.stderr
    assert (
        "update-initramfs -u -k 6.1.0-test" in without.stderr
        and "dracut --add-drivers nvme" in without.stderr
    )
    assert with_it.returncode == 0, with_it.stderr
    # No lister on the node: it cannot tell, and says so (a warning, not a refusal).
    unknown = check(volume, destination, path="/usr/bin:/bin:/usr/sbin:/sbin")
    assert unknown.returncode == 0 and "could not list the initramfs of kernel 6.1.0-test" in unknown.stderr
