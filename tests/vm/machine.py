"""QEMU for the tests: which accelerator works here, a node VM reachable over SSH, a boot to power-off.

KVM is used only when it works. On some machines /dev/kvm exists but a Linux guest hangs under it
(nested, paravirtualised KVM), so `accelerator` boots the tree's kernel once with KVM, with no root
filesystem: a working KVM reaches the kernel's panic and exits within seconds, a broken one prints
nothing. Otherwise QEMU emulates (TCG). `AMIDSL_TEST_QEMU_ACCEL=kvm|tcg` skips the probe.

The node VM's only network is QEMU's user-mode network with `restrict=on` (the guest reaches nothing)
and one forward from a random port on 127.0.0.1 to its sshd. What the guest must reach (S3) comes
through an SSH reverse tunnel on loopback, on the same port number on both sides.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
PROBE_SECONDS = 12  # a working KVM runs the probe in 1-2 s; even TCG needs only about 8 s on 2 busy cores
SSH_WAIT_SECONDS = 420  # a TCG boot to sshd takes 30-90 s on 2 busy cores
POWEROFF_SECONDS = 300


def missing_tools() -> list[str]:
    """The programs the VM test needs that this machine lacks (with their Debian packages)."""
    needed = {QEMU: "qemu-system-x86", "grub-mkimage": "grub-pc-bin", "ssh": "openssh-client"}
    return [f"{tool} ({package})" for tool, package in needed.items() if shutil.which(tool) is None]


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def qemu_argv(disk: Path, serial: Path, accel: str, memory_mb: int = 1024, nvme: bool = False) -> list[str]:
    """QEMU with disk as a virtio disk (or, with nvme, an NVMe one as Nitro instance types present an
    EBS root), the serial console to a file, and no other device."""
    # An emulated CPU gathers entropy slowly: without RDRAND (which the guest kernel trusts to seed its
    # random-number generator) a guest's getrandom(), sshd's start for one, has been seen to wait minutes.
    argv = [
        QEMU,
        "-machine",
        f"pc,accel={accel}",
        "-cpu",
        "qemu64,+rdrand",
        "-m",
        str(memory_mb),
        "-smp",
        "2",
    ]
    argv += ["-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot", "-serial", f"file:{serial}"]
    if nvme:
        return [
            *argv,
            "-drive",
            f"file={disk},format=raw,if=none,id=root",
            "-device",
            "nvme,drive=root,serial=amidsl",
        ]
    return [*argv, "-drive", f"file={disk},format=raw,if=virtio"]


def kvm_works(kernel: Path, workdir: Path) -> bool:
    """Whether a Linux kernel runs under KVM here (it reaches its panic without a root filesystem)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    console = workdir / "kvm-probe.log"
    argv = [QEMU, "-machine", "pc,accel=kvm", "-m", "256", "-nodefaults", "-display", "none"]
    argv += ["-monitor", "none", "-no-reboot", "-serial", f"file:{console}", "-kernel", str(kernel)]
    argv += ["-append", "console=ttyS0 panic=-1"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and "Kernel panic" in console.read_text(errors="replace")


def accelerator(kernel: Path, workdir: Path) -> str:
    """kvm where a Linux guest runs under it here, else tcg (see the module docstring)."""
    forced = os.environ.get("AMIDSL_TEST_QEMU_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_works(kernel, workdir) else "tcg"


def boot_until_poweroff(
    disk: Path, serial: Path, accel: str, nvme: bool = False
) -> subprocess.CompletedProcess:
    """Boot disk (writes go to a temporary overlay) until it powers off or the time is up."""
    argv = [*qemu_argv(disk, serial, accel, memory_mb=768, nvme=nvme), "-snapshot"]
    return subprocess.run(argv, capture_output=True, timeout=POWEROFF_SECONDS, check=False)


def last_lines(serial: Path, count: int = 15) -> str:
    """The console's last lines."""
    return "\n".join(serial.read_text(errors="replace").splitlines()[-count:])


@dataclass(frozen=True)
class NodeVm:
    """A running node VM: its forwarded SSH port, how to log in, its console."""

    port: int
    login_key: Path
    known_hosts: Path
    console: Path

    def ssh_argv(self, *options: str) -> list[str]:
        """ssh to the VM's root, trusting only its known host key, with no user configuration."""
        argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        argv += ["-i", str(self.login_key), "-o", f"UserKnownHostsFile={self.known_hosts}"]
        argv += ["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=30", "-p", str(self.port)]
        return [*argv, *options, "root@127.0.0.1"]

    def run(self, command: str, stdin: str = "", timeout: float = 120) -> str:
        """Run a shell command on the VM as root; its standard output (it must succeed)."""
        argv = [*self.ssh_argv(), command]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"on the VM, `{command}` exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    @contextlib.contextmanager
    def reverse_tunnel(self, port: int) -> Iterator[None]:
        """127.0.0.1:port inside the VM reaches 127.0.0.1:port here, while the context lasts."""
        forward = f"127.0.0.1:{port}:127.0.0.1:{port}"
        options = ("-N", "-o", "ExitOnForwardFailure=yes", "-R", forward)
        tunnel = subprocess.Popen(self.ssh_argv(*options), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
            wait = (
                f"for i in $(seq 100); do (bash -c '{probe}') 2>/dev/null && exit 0; sleep 0.2; done; exit 1"
            )
            self.run(wait)
            yield
        finally:
            tunnel.terminate()
            tunnel.wait(timeout=10)


def _wait_for_ssh(port: int, process: subprocess.Popen, console: Path) -> None:
    """Until sshd answers through the forward (QEMU accepts at once; the banner comes from sshd)."""
    deadline = time.monotonic() + SSH_WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"QEMU exited ({process.returncode}); console:\n{last_lines(console)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(10)
            if sock.recv(4) == b"SSH-":
                return
        time.sleep(1)
    raise RuntimeError(f"no SSH from the VM in {SSH_WAIT_SECONDS} s; console:\n{last_lines(console)}")


@contextlib.contextmanager
def running_node(disk: Path, login_key: Path, host_key: str, accel: str, workdir: Path) -> Iterator[NodeVm]:
    """Boot disk as a node (writes go to a temporary overlay); stop it at the end of the context."""
    port = free_port()
    console = workdir / "node-console.log"
    known_hosts = workdir / "node-known-hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    network = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"
    argv = [*qemu_argv(disk, console, accel), "-snapshot", "-netdev", network]
    argv += ["-device", "virtio-net-pci,netdev=n0"]
    with (workdir / "node-qemu.log").open("wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_for_ssh(port, process, console)
        yield NodeVm(port, login_key, known_hosts, console)
    finally:
        process.terminate()
        process.wait(timeout=30)
