"""The VM test's node: a bootable Debian 12 disk made from the boot test's tree, built once and cached.

The disk is what a small server's disk is: an MBR, one ext4 partition found by UUID, GRUB 2 for BIOS,
systemd, OpenSSH, python3 and e2fsprogs, DHCP on a virtio NIC, the kernel on the serial console. amidsl
makes it itself, with its node program's `build_image` (the code that makes every hvm image): a
staging tree of hard links, `mke2fs -d` and GRUB's core image written after the MBR. No loop device,
no mount.

It lives beside the tree in `${XDG_CACHE_HOME:-~/.cache}/amidsl/`, under a name made from a hash of
the tree's recipe and this one, so a changed recipe builds a new disk. To build tree and disk ahead of
the tests (as root; debootstrap needs the Debian mirror once):

    python -m tests.vm.node_disk

The disk file is never written after it is built: every VM boots it with QEMU's `-snapshot`, which
keeps the run's writes in a temporary overlay. So the login key is made once with the disk and kept
beside it (0600; its public half is root's authorized_keys on the disk): a key per run would have to
be written into the disk or an overlay before each boot. The VM is reachable only through a port
forward on 127.0.0.1 that lives as long as the test, so the fixed key opens nothing else. The disk's
SSH host key is the tree's, and its public half is kept beside the disk for known_hosts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amidsl.node import amidsl_node
from tests.boot import rootfs

# The filesystem's size: room for the build on the node (the image of the root, then its bundle
# parts) beside the root itself. The disk file is sparse: it takes about what the root holds.
DISK_MB = 2048
NODE_MACHINE_ID = "0123456789abcdef0123456789abcdef"
NODE_HOSTNAME = "amidsl-vm-node"
NODE_FLAG_TEXT = "This machine is the VM test's build node: the boot test's marker unit stays quiet.\n"

RECIPE = "\n".join([rootfs.RECIPE, str(DISK_MB), NODE_MACHINE_ID, NODE_HOSTNAME, NODE_FLAG_TEXT])


@dataclass(frozen=True)
class NodeDisk:
    """The cached disk, root's login key for it, the SSH host key it presents, and its kernel."""

    path: Path
    login_key: Path
    host_key: str  # "ssh-ed25519 AAAA..."
    kernel: Path  # a copy of the disk's kernel, for the KVM probe (see tests/vm/machine.py)


def disk_dir() -> Path:
    """The cached disk's directory for this recipe (it may not exist yet)."""
    digest = hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
    return rootfs.cache_dir() / f"debian-{rootfs.SUITE}-vm-node-{digest}"


def cached_disk() -> NodeDisk | None:
    """The cached disk, or None if it was not built yet."""
    folder = disk_dir()
    if not (folder / "disk.raw").is_file():
        return None
    host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
    return NodeDisk(folder / "disk.raw", folder / "login_key", host_key, folder / "vmlinuz")


def _replace(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a new file at path: the old one may be a hard link into the cached tree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _node_tree(tree: Path, into: Path, login_public_key: str) -> None:
    """A copy of the tree (hard links) with what makes it this node: its identity and root's login."""
    copied = subprocess.run(["cp", "-al", str(tree), str(into)], capture_output=True, check=False)
    if copied.returncode != 0:  # the cache on another filesystem than the tree: a real copy
        shutil.rmtree(into, ignore_errors=True)
        subprocess.run(["cp", "-a", str(tree), str(into)], check=True)
    _replace(into / rootfs.NODE_FLAG.lstrip("/"), NODE_FLAG_TEXT)
    _replace(into / "etc/machine-id", NODE_MACHINE_ID + "\n", 0o444)
    _replace(into / "etc/hostname", NODE_HOSTNAME + "\n")
    ssh = into / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    _replace(ssh / "authorized_keys", login_public_key, 0o600)


def build_disk() -> NodeDisk:
    """The cached disk, built (with the tree, if needed) first if it is not there yet."""
    cached = cached_disk()
    if cached is not None:
        return cached
    tree = rootfs.build_rootfs()
    target = disk_dir()
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    login_key = building / "login_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "amidsl-vm-test", "-f", str(login_key)],
        check=True,
    )
    node_tree = building / "root"
    _node_tree(tree, node_tree, (building / "login_key.pub").read_text())
    shutil.copy(node_tree / "etc/ssh/ssh_host_ed25519_key.pub", building / "host_key.pub")
    shutil.copy(sorted((node_tree / "boot").glob("vmlinuz-*"))[-1], building / "vmlinuz")
    grub = amidsl_node.find_grub(str(node_tree))
    if grub is None:
        raise RuntimeError(amidsl_node.no_grub_message(str(node_tree)))
    cleanup = amidsl_node.Cleanup()
    try:
        amidsl_node.build_image(
            str(node_tree),
            str(building / "disk.raw"),
            exclusions=(),
            includes=(),
            no_filter=True,  # the node's disk keeps all it has: the build's filter is under test
            size_mb=DISK_MB - amidsl_node.PARTITION_START // amidsl_node.MiB,
            volume_fs={"type": "ext4", "uuid": rootfs.ROOT_UUID, "label": ""},
            cleanup=cleanup,
            grub=grub,
        )
        cleanup.forget(str(building / "disk.raw"))
    finally:
        cleanup.remove_all()
    shutil.rmtree(node_tree)
    os.replace(building, target)
    return build_disk()


if __name__ == "__main__":
    print(build_disk().path)
