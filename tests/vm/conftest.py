"""Fixtures of the VM test: the cached node disk and the QEMU accelerator that works on this machine."""

from __future__ import annotations

import os
import time

import pytest

from tests.boot import rootfs
from tests.vm import machine, node_disk


@pytest.fixture(scope="session")
def vm_node_disk() -> tuple[node_disk.NodeDisk, float, bool]:
    """The cached node disk (built first if needed), the seconds that took, and whether it was built."""
    missing = machine.missing_tools()
    if missing:
        pytest.skip(f"the VM test needs {', '.join(missing)}; apt-get install them (.ci/run does)")
    cached = node_disk.cached_disk()
    if cached is not None:
        return cached, 0.0, False
    if os.geteuid() != 0:
        pytest.skip("building the VM test's node disk needs root (debootstrap, owners in the image)")
    if not rootfs.rootfs_path().is_dir() and rootfs.missing_tools():
        pytest.skip("debootstrap is not installed and no Debian tree is cached (apt-get install debootstrap)")
    started = time.monotonic()
    disk = node_disk.build_disk()
    return disk, time.monotonic() - started, True


@pytest.fixture(scope="session")
def qemu_accel(vm_node_disk, tmp_path_factory) -> str:
    """kvm if a Linux guest runs under it here, else tcg (probed once per session)."""
    disk = vm_node_disk[0]
    started = time.monotonic()
    accel = machine.accelerator(disk.kernel, tmp_path_factory.mktemp("kvm-probe"))
    print(f"\nQEMU accelerator: {accel} (chosen in {time.monotonic() - started:.0f} s)")
    return accel
