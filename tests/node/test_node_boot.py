"""The node program's hvm layout (MBR, root partition at 1 MiB, GRUB 2 for BIOS) and its boot checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from amidsl.bundle.ls import describe_layout, list_image
from amidsl.node import amidsl_node as node
from tests.node.conftest import bundle_request, run_node
from tests.node.test_node_bundle import restore_with_openssl

HOST_GRUB = Path("/usr/lib/grub/i386-pc")
UUID = "5b2d7c1e-9a40-4f3e-8d21-c0ffee123456"
needs_grub = pytest.mark.skipif(
    not (HOST_GRUB / "boot.img").is_file() or shutil.which("grub-mkimage") is None,
    reason="needs GRUB 2 for BIOS on this machine (apt-get install grub-pc-bin)",
)


def make_bootable(volume: Path, grub: bool = True) -> Path:
    """Give a scratch volume a kernel, an initramfs, an fstab by UUID, a grub.cfg and GRUB's files."""
    (volume / "boot/grub").mkdir(parents=True, exist_ok=True)
    (volume / "boot/vmlinuz-6.1.0-test").write_bytes(b"\x00" * 4096)
    (volume / "boot/initrd.img-6.1.0-test").write_bytes(b"\x00" * 4096)
    (volume / "boot/grub/grub.cfg").write_text("linux /boot/vmlinuz-6.1.0-test\n")
    (volume / "boot/grub/menu.lst").write_text("title Debian\nroot (hd0)\nkernel /boot/vmlinuz-6.1.0-test\n")
    (volume / "etc/fstab").write_text(f"# the root\nUUID={UUID} / ext4 errors=remount-ro 0 1\n")
    if grub:
        shutil.copytree(HOST_GRUB, volume / "usr/lib/grub/i386-pc")
    return volume


@needs_grub
def test_an_hvm_bundle_is_a_disk_with_a_bootable_linux_partition_at_1_mib_and_grub(
    volume, destination, tmp_path
):
    make_bootable(volume)
    (volume / "boot/grub/i386-pc").mkdir()
    (volume / "boot/grub/i386-pc/stale.mod").write_bytes(b"an older grub-install's module")
    run = run_node("bundle", bundle_request(volume, destination, virtualization_type="hvm"))
    assert run.returncode == 0, run.stderr
    assert run.result["virtualization_type"] == "hvm" and run.result["grub"]
    if os.geteuid() == 0:  # root reads the volume through a view, with GRUB's modules put in it
        assert "through a private view" in run.stderr and "staging the volume" not in run.stderr
    disk = restore_with_openssl(destination, run.result, tmp_path / "restored")

    with open(disk, "rb") as f:
        head = f.read(node.MiB)
    [root] = node.read_partition_table(head[:512])
    assert (root.number, root.bootable, root.kind, root.start) == (1, True, 0x83, 2048)
    assert os.path.getsize(disk) == node.PARTITION_START + root.sectors * 512
    assert node.boot_loader_state(head).startswith(
        "GRUB 2 for BIOS: boot code in the MBR, core image at sector 1"
    )
    # The filesystem in the partition carries the fstab's UUID, and GRUB's modules are in it.
    header = subprocess.run(
        ["dumpe2fs", "-h", f"{disk}?offset={node.PARTITION_START}"], capture_output=True, text=True
    ).stdout
    assert f"Filesystem UUID:          {UUID}" in header
    paths = {e.path for e in list_image(disk)}
    assert {"/etc/hostname", "/boot/grub/i386-pc/normal.mod", "/boot/grub/i386-pc/boot.img"} <= paths
    assert "/boot/grub/i386-pc/stale.mod" not in paths and (volume / "boot/grub/i386-pc/stale.mod").exists()
    assert "/home/alice/.ssh/authorized_keys" not in paths
    assert describe_layout(disk)[1].startswith("partition 1: Linux (0x83), bootable, from sector 2048")


@needs_grub
def test_an_hvm_disk_of_a_given_size_is_that_size(volume, destination, tmp_path):
    make_bootable(volume)
    run = run_node("bundle", bundle_request(volume, destination, virtualization_type="hvm", image_size_mb=64))
    assert run.returncode == 0, run.stderr
    assert run.result["image_size"] == 64 * node.MiB


def test_the_boot_sectors_are_patched_as_grub_bios_setup_does():
    boot_img = bytes(range(256)) * 2
    core_img = b"\x01" * (3 * 512 + 100)  # four sectors once padded
    record, core = node.grub_boot_sectors(boot_img, core_img, b"\xaa\xbb\xcc\xdd", fs_sectors=4096)
    assert len(record) == 512 and record[510:] == b"\x55\xaa"
    assert record[:0x5C] == boot_img[:0x5C]  # the boot code itself is GRUB's
    assert int.from_bytes(record[0x5C:0x64], "little") == 1  # the core image's first sector
    assert record[0x66:0x68] == b"\x90\x90"  # a hard disk: no drive check
    assert record[0x1B8:0x1BC] == b"\xaa\xbb\xcc\xdd"
    [partition] = node.read_partition_table(record)
    assert partition == node.Partition(1, True, 0x83, 2048, 4096)
    assert len(core) == 4 * 512
    # diskboot's blocklist: the remaining three sectors, from sector 2, loaded at 0x820:0.
    assert core[500:512] == (2).to_bytes(8, "little") + (3).to_bytes(2, "little") + (0x820).to_bytes(
        2, "little"
    )


def test_a_core_image_larger_than_the_gap_before_the_partition_is_refused():
    with pytest.raises(node.NodeError, match="more than the 2047 before the partition"):
        node.grub_boot_sectors(b"\x00" * 512, b"\x00" * 2048 * 512, b"\x00" * 4, fs_sectors=8)


def test_an_hvm_check_without_grub_on_the_node_is_an_error_naming_the_packages(volume, destination):
    make_bootable(volume, grub=False)
    run = run_node(
        "check", {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"}
    )
    assert run.returncode == 1
    assert "an hvm image boots through GRUB 2 for BIOS" in run.stderr
    assert "grub-pc-bin" in run.stderr and 'virtualization_type = "paravirtual"' in run.stderr


def test_an_hvm_check_of_a_volume_without_a_kernel_is_an_error(volume, destination):
    run = run_node(
        "check", {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"}
    )
    assert run.returncode == 1
    assert "holds no kernel (vmlinuz-*)" in run.stderr and "linux-image-amd64" in run.stderr


@needs_grub
def test_an_hvm_check_of_a_volume_whose_kernel_the_exclude_patterns_leave_out_is_an_error(
    volume, destination
):
    # The volume holds a kernel, but the image made from it would not: it boots no better than a volume
    # without one, and the build would register it.
    make_bootable(volume)
    request = {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"}
    assert run_node("check", request).returncode == 0
    run = run_node("check", request | {"exclude_patterns": ["/boot/vmlinuz*"]})
    assert run.returncode == 1, run.stderr
    assert "no kernel (vmlinuz-*)" in run.stderr


@needs_grub
def test_an_hvm_check_of_a_volume_whose_grub_cfg_the_exclude_patterns_leave_out_warns_of_the_prompt(
    volume, destination
):
    make_bootable(volume)
    request = {"volume": str(volume), "destination_dir": str(destination), "virtualization_type": "hvm"}
    run = run_node("check", request | {"exclude_patterns": ["/boot/grub"]})
    assert run.returncode == 0, run.stderr
    assert any("grub.cfg, so GRUB stops at its prompt" in w for w in run.result["warnings"])


def test_a_paravirtual_volume_without_a_kernel_is_only_a_warning(volume, destination):
    run = run_node("check", {"volume": str(volume), "destination_dir": str(destination)})
    assert run.returncode == 0, run.stderr
    assert run.result["virtualization_type"] == "paravirtual"
    [warning] = run.result["warnings"]
    assert "holds no kernel" in warning
    assert f"amidsl-node: warning: {warning}" in run.stderr


def problems(volume: Path, fstab: str, identity: dict | None = None, kind: str = "paravirtual"):
    (volume / "etc/fstab").write_text(fstab)
    return node.boot_problems(str(volume), kind, identity or node.volume_identity(str(volume)), None)


def test_fstab_entries_the_image_cannot_resolve_are_warnings_naming_the_fix(volume):
    make_bootable(volume, grub=False)
    fstab = (
        f"UUID={UUID} / ext4 defaults 0 1\n"
        "UUID=1111-2222 /boot/efi vfat umask=0077 0 1\n"
        "/dev/nvme1n1 /data xfs nofail 0 2\n"
        "proc /proc proc defaults 0 0\n"
        "server:/export /srv/nfs nfs noauto 0 0\n"
    )
    errors, warnings = problems(volume, fstab)
    assert errors == []
    [efi] = warnings
    assert "mounts UUID=1111-2222 on /boot/efi" in efi and "add nofail" in efi


def test_a_root_named_by_another_uuid_or_a_device_name_is_a_warning(volume):
    make_bootable(volume, grub=False)
    identity = {"type": "ext4", "uuid": UUID, "label": "root"}
    _, warnings = problems(
        volume, "UUID=0000aaaa-0000-4000-8000-000000000000 / ext4 defaults 0 1\n", identity
    )
    assert len(warnings) == 1 and f"UUID={UUID} LABEL=root" in warnings[0]
    _, warnings = problems(volume, "/dev/xvda1 / ext4 defaults 0 1\n", identity)
    assert len(warnings) == 1 and f"use UUID={UUID} instead" in warnings[0]
    assert problems(volume, "LABEL=root / ext4 defaults 0 1\n", identity) == ([], [])


def test_a_root_filesystem_that_is_not_ext_is_a_warning_saying_what_happens(volume):
    make_bootable(volume, grub=False)
    _, warnings = problems(
        volume, f"UUID={UUID} / ext4 defaults 0 1\n", {"type": "xfs", "uuid": UUID, "label": ""}
    )
    [warning] = warnings
    assert "the volume's filesystem is xfs, but the image's is ext4" in warning


def test_a_tree_that_is_not_a_mount_point_takes_its_identity_from_its_fstab(volume):
    (volume / "etc/fstab").write_text(
        f"UUID={UUID.upper()} / ext4 defaults 0 1\nLABEL=data /data ext4 nofail 0 2\n"
    )
    assert node.volume_identity(str(volume))["uuid"] == UUID
    assert node.volume_identity(str(volume))["label"] == ""


def test_an_image_larger_than_the_instance_store_limit_is_an_error_before_any_work(volume):
    size = node.VolumeSize(allocated=11 * 1024 * node.MiB, entries=1000, copied=0)
    with pytest.raises(
        node.NodeError, match="more than the 10240 MB an S3-backed AMI may have; exclude more"
    ):
        node.check_boot(str(volume), "paravirtual", size)


@needs_grub
def test_an_hvm_build_without_a_grub_cfg_warns_that_grub_stops_at_its_prompt(volume):
    make_bootable(volume)
    (volume / "boot/grub/grub.cfg").unlink()
    grub = node.find_grub(str(volume))
    _, warnings = node.boot_problems(str(volume), "hvm", node.volume_identity(str(volume)), grub)
    assert any("no /boot/grub/grub.cfg, so GRUB stops at its prompt" in w for w in warnings)


@needs_grub
def test_a_grub_directory_that_is_a_symbolic_link_is_refused_not_written_through(
    volume, destination, tmp_path
):
    make_bootable(volume)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(volume / "boot/grub")
    (volume / "boot/grub").symlink_to(outside)
    run = run_node("bundle", bundle_request(volume, destination, virtualization_type="hvm"))
    assert run.returncode == 1
    assert "/boot/grub is a symbolic link in the volume" in run.stderr
    assert list(outside.iterdir()) == []


@needs_grub
def test_a_grub_cfg_booting_a_root_the_image_does_not_carry_is_a_warning(volume):
    make_bootable(volume)
    grub = node.find_grub(str(volume))
    identity = node.volume_identity(str(volume))
    assert node.boot_problems(str(volume), "hvm", identity, grub) == ([], [])
    (volume / "boot/grub/grub.cfg").write_text(
        f"linux /boot/vmlinuz root=UUID={UUID} ro\nlinux /boot/vmlinuz root=PARTUUID=1234abcd-01 ro\n"
        "linux /boot/vmlinuz root=UUID=0000aaaa-0000-4000-8000-000000000000 ro\n"
    )
    _, warnings = node.boot_problems(str(volume), "hvm", identity, grub)
    assert len(warnings) == 2
    assert any(
        "root=PARTUUID=1234abcd-01, a partition id the image's new disk does not have" in w for w in warnings
    )
    assert any(
        f"root=UUID=0000aaaa-0000-4000-8000-000000000000, but the image's root filesystem has UUID={UUID}"
        in w
        for w in warnings
    )


def test_a_paravirtual_volume_without_a_pv_grub_menu_is_a_warning(volume):
    make_bootable(volume, grub=False)
    identity = node.volume_identity(str(volume))
    assert node.boot_problems(str(volume), "paravirtual", identity, None) == ([], [])
    (volume / "boot/grub/menu.lst").unlink()
    _, warnings = node.boot_problems(str(volume), "paravirtual", identity, None)
    [warning] = warnings
    assert "pv-grub, which reads /boot/grub/menu.lst" in warning
