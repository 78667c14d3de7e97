"""A bootable Debian 12 root filesystem tree for the boot test, built once with debootstrap and cached.

The tree lives outside the repository, in `${XDG_CACHE_HOME:-~/.cache}/amidsl/`, under a name made from
a hash of the recipe below, so a changed recipe builds a new tree and an unchanged one is reused. Run
`python -m tests.boot.rootfs` to build it ahead of the tests (it needs root, debootstrap and the
network once; the test itself runs offline). The VM test (tests/vm) makes its node disk from this tree.

The tree boots as an HVM disk once amidsl has imaged it: its fstab and grub.cfg name the root
filesystem by ROOT_UUID (amidsl carries it over from the fstab, as the tree is not a mount point), the
kernel logs to the serial console, and a systemd unit prints MARKER with what it finds at the end of
boot, then powers the machine off (unless NODE_FLAG says the machine is a build node that stays up).
systemd-networkd configures a virtio NIC by DHCP, and python3 is there for amidsl's node program.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("AMIDSL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# openssh-server: its host keys (made as it installs) are what image hygiene must replace;
# ca-certificates: the hashed links the filter's *.pem pattern used to leave dangling; python3: amidsl's
# node program, when the tree is the VM test's node.
PACKAGES = (
    "linux-image-amd64",
    "grub-pc",
    "systemd-sysv",
    "udev",
    "kmod",
    "openssh-server",
    "ca-certificates",
    "python3",
)
ROOT_UUID = "3f1c9a52-7d1e-4b0a-9c63-a5d0b1e2c4f7"
MARKER = "AMIDSL-BOOT-MARKER"
# What the marker unit looks for in the booted system (the test puts files there before building).
CHECKED_DIR = "/opt/amidsl-boot-test"
TOOLS_DIR = f"{CHECKED_DIR}/tools"
CREDENTIAL_DIR = f"{CHECKED_DIR}/credentials"
KEPT_FILE = f"{CHECKED_DIR}/kept.txt"
# On a machine booted to be built from (the VM test's node), the marker unit stays quiet and the machine up.
NODE_FLAG = "/etc/amidsl-boot-test-node"
# amidsl's default install_dir and its state directory: neither may be in an image.
INSTALL_DIR = "/opt/ami-tools"
STATE_DIR = "/var/lib/amidsl"

FSTAB = f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"

GRUB_CFG = """set timeout=0
set default=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry "Debian" {{
    linux /boot/{kernel} root=UUID={uuid} ro console=ttyS0,115200 panic=10
    initrd /boot/{initrd}
}}
"""

# Secrets the test plants in the node's tree; none may reach the booted image.
PLANTED_SECRETS = ("/root/.ssh/id_ed25519", "/root/.bash_history", "/root/.aws/credentials", "/var/tmp/notes")
MARKER_LINE = (
    f"{MARKER} tools=$(state {TOOLS_DIR}) credentials=$(state {CREDENTIAL_DIR}) kept=$kept "
    "sshd=$sshd hostkey=$hostkey machineid=$machineid secrets=$secrets keyring=$keyring tmp=$tmp "
    "certs=$certs dangling=$dangling installdir=$(state {INSTALL_DIR}) statedir=$(state {STATE_DIR}) "
    "authorized=$(state /root/.ssh/authorized_keys)"
)
MARKER_SCRIPT = f"""#!/bin/sh
# Prints what the boot test checks to the serial console, then powers the machine off.
[ -e {NODE_FLAG} ] && exit 0
state() {{ if [ -e "$1" ]; then echo present; else echo absent; fi; }}
kept=$(cat {KEPT_FILE} 2>/dev/null || echo missing)
sshd=$(systemctl is-active ssh.service)
hostkey=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | cut -d' ' -f2)
machineid=$(cat /etc/machine-id)
secrets=absent
for planted in {" ".join(PLANTED_SECRETS)}; do [ -e "$planted" ] && secrets="present:$planted"; done
keyring=$(state /usr/share/keyrings/debian-archive-keyring.gpg)
tmp=$(stat -c %a /tmp)
certs=$(find /etc/ssl/certs -name '*.pem' | wc -l)
dangling=$(find /etc/ssl/certs -xtype l | wc -l)
# A line of its own: the serial getty's login prompt may be on the console, without a line break.
printf '\n%s\n' "{MARKER_LINE}" > /dev/ttyS0
systemctl --no-block poweroff
"""

MARKER_UNIT = """[Unit]
Description=amidsl boot test marker (end of boot)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/amidsl-boot-marker

[Install]
WantedBy=multi-user.target
"""

# DHCP on the virtio NIC (QEMU's user-mode network), by systemd-networkd (no wait-online: a machine
# without a NIC must not wait for one).
NETWORK_FILE = "/etc/systemd/network/80-amidsl-dhcp.network"
NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""

# Left out to keep the tree small.
PRUNED = ("usr/share/doc", "usr/share/locale", "usr/share/man", "var/cache/apt", "var/lib/apt/lists")
# The only kernel modules kept: the initramfs already holds the disk drivers (nvme too) and ext4; after
# it, the machine needs only its virtio NIC (and systemd its automounts). An EBS-backed build's node check
# looks for the drivers today's instance types need on the disk: nvme (its root) and ena (its network).
KEPT_MODULES = (
    "drivers/net/virtio_net.ko",
    "drivers/net/net_failover.ko",
    "net/core/failover.ko",
    "fs/autofs/autofs4.ko",
    "drivers/nvme/host/nvme.ko",
    "drivers/nvme/host/nvme-core.ko",
    "drivers/net/ethernet/amazon/ena/ena.ko",
)

RECIPE = "\n".join(
    [SUITE, MIRROR, *PACKAGES, FSTAB, GRUB_CFG, MARKER_SCRIPT, MARKER_UNIT, NETWORK, *PRUNED, *KEPT_MODULES]
)


def marker_facts(console: str) -> dict[str, str] | None:
    """The facts of the marker line on a console (name -> value), or None if there is no marker line."""
    found = re.search(rf"{MARKER} .*", console)
    if found is None:
        return None
    return dict(field.split("=", 1) for field in found.group(0).split()[1:])


def cache_dir() -> Path:
    """Where cached trees live: outside the repository, per user."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amidsl"


def rootfs_path() -> Path:
    """The cached tree for this recipe (it may not exist yet)."""
    return cache_dir() / f"debian-{SUITE}-boot-{hashlib.sha256(RECIPE.encode()).hexdigest()[:12]}"


def missing_tools() -> list[str]:
    """The programs building the tree needs that this machine lacks."""
    return [
        t
        for t in ("debootstrap",)
        if shutil.which(t) is None and shutil.which(t, path="/usr/sbin:/sbin") is None
    ]


def _customise(root: Path) -> None:
    """Make the debootstrapped tree boot from an amidsl disk image and report at the end of boot."""
    boot = root / "boot"
    kernel = sorted(p.name for p in boot.glob("vmlinuz-*"))[-1]
    initrd = sorted(p.name for p in boot.glob("initrd.img-*"))[-1]
    (root / "etc" / "fstab").write_text(FSTAB)
    (root / "etc" / "hostname").write_text("amidsl-boot-test\n")
    (boot / "grub").mkdir(exist_ok=True)
    (boot / "grub" / "grub.cfg").write_text(GRUB_CFG.format(uuid=ROOT_UUID, kernel=kernel, initrd=initrd))
    script = root / "usr" / "local" / "sbin" / "amidsl-boot-marker"
    script.write_text(MARKER_SCRIPT)
    script.chmod(0o755)
    unit = root / "etc" / "systemd" / "system" / "amidsl-boot-marker.service"
    unit.write_text(MARKER_UNIT)
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / unit.name).unlink(missing_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    network = root / NETWORK_FILE.lstrip("/")
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text(NETWORK)
    (wants / "systemd-networkd.service").unlink(missing_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    for pattern in PRUNED:
        for path in root.glob(pattern):
            shutil.rmtree(path)
    for modules in (root / "usr" / "lib" / "modules").iterdir():
        kernel = modules / "kernel"
        for module in [p for p in kernel.rglob("*") if p.is_file()]:
            if str(module.relative_to(kernel)) not in KEPT_MODULES:
                module.unlink()
        subprocess.run(["chroot", str(root), "depmod", modules.name], check=True)


def build_rootfs(show_output: bool = False) -> Path:
    """The cached tree, built with debootstrap first if it is not there yet."""
    target = rootfs_path()
    if target.is_dir():
        return target
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root")
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    argv = [
        shutil.which("debootstrap") or "/usr/sbin/debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(building),
        MIRROR,
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = None if show_output else subprocess.PIPE
    done = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stdout or b"").decode("utf-8", "replace").splitlines()[-10:]
        raise RuntimeError(f"debootstrap failed (exit {done.returncode}):\n" + "\n".join(tail))
    _customise(building)
    os.replace(building, target)
    return target


if __name__ == "__main__":
    print(build_rootfs(show_output=True))
