"""Node templates: realistic starting content that exercises ec2-bundle-vol's exclusions and filters.

The template node is bootable as a Debian server is: a kernel and an initramfs in /boot, a grub.cfg and
an fstab naming the root filesystem by UUID, and GRUB 2 for BIOS (simulator.grub), so that an hvm
build (the default) runs as on a real node. The kernel and initramfs are stand-ins: nothing boots them.
"""

from __future__ import annotations

import random
from pathlib import Path

from simulator import grub, programs
from simulator.fake_ami_tools import bundle_vol, tools_version, upload_bundle
from simulator.node import CommandResult, FakeNode, Program, new_node_root

DEFAULT_PAYLOAD_MB = 4

# (path, text, mode): what a small Debian-like server holds, including files the default filter drops.
TEMPLATE_FILES = (
    ("/etc/hostname", "node-1\n", 0o644),
    ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n", 0o644),
    ("/etc/group", "root:x:0:\nadmin:x:1000:\n", 0o644),
    ("/etc/apt/sources.list", "deb http://deb.debian.org/debian bookworm main\n", 0o644),
    (
        "/etc/ssl/certs/ca-local.crt",
        "-----BEGIN CERTIFICATE-----\nMIIBlocal\n-----END CERTIFICATE-----\n",
        0o644,
    ),
    (
        "/etc/ssl/private/node.pem",
        "-----BEGIN NODE KEY-----\nnode-tls-key-material\n-----END NODE KEY-----\n",
        0o600,
    ),
    ("/etc/nginx/nginx.conf", "worker_processes auto;\n", 0o644),
    (
        "/home/admin/.ssh/authorized_keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAtemplate admin@laptop\n",
        0o600,
    ),
    ("/home/admin/.bash_history", "sudo systemctl restart nginx\n", 0o600),
    ("/home/admin/notes.txt", "deploy notes for the web tier\n", 0o644),
    ("/home/admin/#draft.txt#", "emacs autosave\n", 0o644),
    ("/home/admin/config.yml.swp", "vim swap\n", 0o644),
    (
        "/root/.ssh/id_rsa",
        "-----BEGIN OPENSSH KEY-----\nroot-ssh-key-material\n-----END OPENSSH KEY-----\n",
        0o600,
    ),
    ("/root/.bash_history", "apt-get upgrade\n", 0o600),
    ("/var/log/syslog", "Nov 26 00:00:01 node-1 systemd[1]: Started Daily apt upgrade.\n" * 200, 0o640),
    ("/var/www/html/index.html", "<h1>It works</h1>\n", 0o644),
    ("/proc/cpuinfo", "processor : 0\n", 0o444),
    ("/sys/kernel/hostname", "node-1\n", 0o444),
    ("/dev/console.placeholder", "", 0o600),
    ("/mnt/data/backup.tar", "a mounted data disk\n", 0o644),
)
EMPTY_DIRS = ("/tmp", "/media", "/opt", "/srv", "/var/lib", "/run")
KERNEL_VERSION = "6.1.0-28-amd64"
# What update-grub writes for one kernel, cut down: the root filesystem found and mounted by its UUID.
GRUB_CFG = """\
# written by update-grub (the simulator's template node)
set default=0
set timeout=5
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry 'Debian GNU/Linux' {{
\tlinux /boot/vmlinuz-{kernel} root=UUID={uuid} ro quiet
\tinitrd /boot/initrd.img-{kernel}
}}
"""


def populate(node: FakeNode, payload_mb: int = DEFAULT_PAYLOAD_MB, seed: int = 1) -> None:
    """Fill a node with the template's files and `payload_mb` MB of program binaries."""
    for path in EMPTY_DIRS:
        node.make_dirs(path)
    node.host_path("/tmp").chmod(0o1777)
    for path, text, mode in TEMPLATE_FILES:
        node.make_dirs(path.rsplit("/", 1)[0])
        owner = ("admin", "admin") if path.startswith("/home/admin") else ("root", "root")
        node.write_bytes(path, text.encode(), mode=mode, owner=owner)
    node.host_path("/").chmod(0o755)  # a temporary directory starts private; a volume's root is not
    node.set_owner("/home/admin", ("admin", "admin"))
    node.set_owner("/home/admin/.ssh", ("admin", "admin"))
    rng = random.Random(seed)
    node.make_dirs("/usr/bin")
    node.make_dirs("/usr/lib/x86_64-linux-gnu")
    # Binaries: half noise, half repeated structure, so they compress about as real code does.
    for number in range(max(payload_mb, 0) * 4):
        block = rng.randbytes(128 * 1024) + (b"\x7fELF\x02\x01\x01" + bytes(57)) * 2048
        folder = "/usr/bin" if number % 2 == 0 else "/usr/lib/x86_64-linux-gnu"
        node.write_bytes(f"{folder}/program-{number:03d}", block, mode=0o755)
    Path(node.host_path("/bin")).symlink_to("usr/bin")
    make_bootable(node)


def make_bootable(node: FakeNode) -> None:
    """A kernel and initramfs (stand-ins), fstab and grub.cfg by the root's UUID, and GRUB 2 for BIOS."""
    uuid = node.root_filesystem[2]
    node.write_bytes("/etc/fstab", f"UUID={uuid} / ext4 errors=remount-ro 0 1\n".encode())
    node.make_dirs("/boot/grub")
    for name in (f"vmlinuz-{KERNEL_VERSION}", f"initrd.img-{KERNEL_VERSION}"):
        stand_in = f"amidsl simulator: stand-in for /boot/{name}, not a Linux kernel or initramfs\n"
        node.write_bytes(f"/boot/{name}", stand_in.encode() * 64)
    node.write_bytes("/boot/grub/grub.cfg", GRUB_CFG.format(uuid=uuid, kernel=KERNEL_VERSION).encode())
    # The stand-in kernel has what today's (Nitro) instance types need built in: the nvme driver for an
    # EBS root and ena for the network (the node check of an EBS-backed build looks for them).
    node.make_dirs(f"/lib/modules/{KERNEL_VERSION}")
    builtin = ("fs/ext4/ext4.ko", "drivers/nvme/host/nvme.ko", "drivers/net/ethernet/amazon/ena/ena.ko")
    listed = "".join(f"kernel/{module}\n" for module in builtin)
    node.write_bytes(f"/lib/modules/{KERNEL_VERSION}/modules.builtin", listed.encode())
    grub.install(node)


def template_node(
    root: Path | None = None,
    os_family: str = "debian",
    payload_mb: int = DEFAULT_PAYLOAD_MB,
    **kwargs: object,
) -> FakeNode:
    """A new FakeNode holding the template's content."""
    kwargs.setdefault("programs", standard_programs())
    node = FakeNode(root or new_node_root(), os_family=os_family, **kwargs)  # type: ignore[arg-type]
    populate(node, payload_mb)
    return node


def standard_programs() -> dict[str, Program]:
    """The command models a template node runs: the standard programs and the ec2-ami-tools."""
    return {
        "install": programs.install,
        "mkdir": programs.mkdir,
        "rm": programs.rm,
        "rmdir": programs.rmdir,
        "find": programs.find,
        "mv": programs.mv,
        "chown": programs.chown,
        "printf": programs.printf,
        "true": lambda ctx: programs.ok(),
        "false": lambda ctx: CommandResult(1),
        "runuser": programs.runuser,
        "apt-get": programs.package_manager,
        "apt-cache": programs.apt_cache,
        "ln": programs.ln,
        "dnf": programs.package_manager,
        "yum": programs.package_manager,
        "curl": programs.curl,
        "unzip": programs.unzip,
        "git": programs.git,
        "rbenv": programs.rbenv,
        "ruby": programs.ruby,
        "python3": programs.python3,
        "ec2-bundle-vol": bundle_vol,
        "ec2-upload-bundle": upload_bundle,
        "ec2-ami-tools-version": tools_version,
    }
