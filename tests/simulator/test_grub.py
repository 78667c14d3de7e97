"""The simulated node is bootable: a kernel, an initramfs and GRUB 2 for BIOS, this machine's or stand-ins."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from amidsl.node.amidsl_node import GRUB_FILES
from simulator import grub, grub_stand_in
from simulator.template import template_node
from tests.node.test_node_boot import HOST_GRUB, needs_grub

HVM_BOOT = [
    "layout: a disk with an MBR partition table (1 partition(s))",
    "partition 1: Linux (0x83), bootable, from sector 2048",
]


@pytest.fixture
def without_host_grub(monkeypatch, tmp_path):
    """This machine as if it had no GRUB 2 for BIOS (no grub-pc-bin): nodes made now get stand-ins."""
    monkeypatch.setattr(grub, "HOST_MODULES", tmp_path / "no-grub-here" / "i386-pc")


def hvm(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key != "virtualization-type"}


def test_the_template_node_has_a_kernel_an_initramfs_and_a_grub_cfg_naming_its_root_by_uuid(node):
    uuid = node.root_filesystem[2]
    assert node.glob("/boot", "vmlinuz-*") and node.glob("/boot", "initrd.img-*")
    assert node.read_bytes("/etc/fstab").decode().startswith(f"UUID={uuid} / ext4 ")
    assert f"root=UUID={uuid} ro" in node.read_bytes("/boot/grub/grub.cfg").decode()
    assert all(node.exists(f"/usr/lib/grub/i386-pc/{name}") for name in GRUB_FILES)
    assert "grub-pc-bin" in node.packages


def test_an_hvm_build_of_the_template_node_registers_a_bootable_disk_without_warnings(
    run, native_settings, region
):
    simulation = run(hvm(native_settings))
    assert simulation.error is None, simulation.error
    assert (
        region.ec2.describe_images(ImageIds=[simulation.image_id])["Images"][0]["VirtualizationType"] == "hvm"
    )
    check = next(r for r in simulation.transcript if "that the volume can boot" in r.description)
    assert "warning" not in check.output
    inspection = simulation.inspect_image()
    assert [line[: len(want)] for line, want in zip(inspection.layout, HVM_BOOT)] == HVM_BOOT
    assert {"/boot/vmlinuz-6.1.0-28-amd64", "/boot/grub/grub.cfg", "/boot/grub/i386-pc/normal.mod"} <= (
        inspection.paths()
    )
    assert inspection.modelled[0].startswith("modelled: the kernel and initramfs (stand-ins")


@needs_grub
def test_with_grub_on_this_machine_the_node_gets_its_files_and_the_image_grubs_real_boot_code(
    run, native_settings, node
):
    assert node.grub == grub.HOST
    assert node.read_bytes("/usr/lib/grub/i386-pc/boot.img") == (HOST_GRUB / "boot.img").read_bytes()
    inspection = run(hvm(native_settings)).inspect_image()
    assert inspection.layout[2].startswith("boot loader: GRUB 2 for BIOS: boot code in the MBR, core image")
    assert (
        inspection.modelled[1]
        == "GRUB 2 for BIOS: this machine's own (grub-pc-bin), so the boot code is GRUB's real one"
    )


def test_without_grub_on_this_machine_the_node_gets_stand_ins_that_say_what_they_are(without_host_grub):
    node = template_node(payload_mb=0)
    try:
        assert node.grub == grub.STAND_IN and "grub-pc-bin" in node.packages
        for name in [*(name for name in GRUB_FILES if name.endswith(".img")), "normal.mod"]:
            data = node.read_bytes(f"/usr/lib/grub/i386-pc/{name}")
            assert grub_stand_in.MARK.encode() in data and b"GRUB \x00" not in data
    finally:
        node.close()


def test_without_grub_on_this_machine_an_hvm_build_makes_the_disk_and_says_its_boot_code_is_modelled(
    without_host_grub, run, native_settings, node
):
    simulation = run(hvm(native_settings))
    assert simulation.error is None, simulation.error
    bundle = next(r for r in simulation.transcript if r.phase == "ami-bundle" and "GRUB" in r.output)
    assert "installing GRUB simulated-stand-in for BIOS boot" in bundle.output
    inspection = simulation.inspect_image()
    assert [line[: len(want)] for line, want in zip(inspection.layout, HVM_BOOT)] == HVM_BOOT
    # Never passed off as a boot sector: the image's MBR holds no GRUB boot code, and the note says why.
    assert inspection.layout[2] == "boot loader: boot code in the MBR is not GRUB 2's"
    assert inspection.modelled[1].startswith(
        "modelled: GRUB 2 for BIOS, as this machine has none (grub-pc-bin)"
    )
    assert "/boot/grub/i386-pc/normal.mod" in inspection.paths()


def test_a_node_without_grub_pc_bin_fails_an_hvm_build_naming_the_package(run, native_settings, node):
    node.packages.discard("grub-pc-bin")
    simulation = run(hvm(native_settings))
    assert "an hvm image boots through GRUB 2 for BIOS" in str(simulation.error)
    assert "install grub-pc-bin" in str(simulation.error)


def stand_in_mkimage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(grub.STAND_IN_MKIMAGE), *args], capture_output=True, text=True
    )


@pytest.fixture
def stand_in_modules(without_host_grub) -> Path:
    """The stand-in i386-pc directory of a node made on a machine without GRUB."""
    node = template_node(payload_mb=0)
    yield node.host_path("/usr/lib/grub/i386-pc")
    node.close()


def test_the_stand_in_grub_mkimage_writes_a_core_image_of_text_holding_the_early_config(
    stand_in_modules, tmp_path
):
    config = tmp_path / "early.cfg"
    config.write_text("search.fs_uuid 5b3c1b9e root hd0,msdos1\n")
    output = tmp_path / "core.img"
    done = stand_in_mkimage(
        "-O", "i386-pc", "-d", str(stand_in_modules), "-c", str(config), "-p", "(hd0,msdos1)/boot/grub",
        "-o", str(output), "biosdisk", "part_msdos", "ext2", "search_fs_uuid",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    core = output.read_bytes()
    assert len(core) % 512 == 0 and core.startswith(grub_stand_in.MARK.encode())
    text = core.decode("utf-8", "replace")
    assert "modules: biosdisk part_msdos fshelp ext2 search_fs_uuid" in text  # ext2 needs fshelp
    assert "search.fs_uuid 5b3c1b9e root hd0,msdos1" in text and "prefix: (hd0,msdos1)/boot/grub" in text
    assert stand_in_mkimage("--version").stdout.strip().endswith("simulated-stand-in")


@pytest.mark.parametrize(
    ("args", "status", "said"),
    [
        (["-O", "x86_64-efi"], 1, "unknown target format x86_64-efi"),
        ([], 1, "Target format not specified (use the -O option)."),
        (["-O", "i386-pc", "btrfs"], 1, "cannot open `{modules}/btrfs.mod': No such file or directory."),
        (["-O", "i386-pc", "--compress=xz"], 64, "unrecognized option '--compress=xz'"),
    ],
)
def test_the_stand_in_grub_mkimage_refuses_what_the_real_one_refuses(
    stand_in_modules, tmp_path, args, status, said
):
    done = stand_in_mkimage("-d", str(stand_in_modules), "-o", str(tmp_path / "core.img"), *args)
    assert done.returncode == status
    assert re.sub(r"\s+", " ", done.stderr).startswith("grub-mkimage: error: ")
    assert said.format(modules=stand_in_modules) in done.stderr
    assert not (tmp_path / "core.img").exists()
