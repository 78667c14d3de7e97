"""Benchmark: an EBS-backed build's block stream over SSH, as a live build reads it.

A live EBS-backed build runs the node program's `blocks` command over its SSH connection and reads the
disk's data blocks from the channel (`SshNode.stream`, parsed by `BlockStream`) before uploading them.
This measures that part alone, against an OpenSSH sshd started for it on 127.0.0.1 (throwaway keys,
its own config): a disk of `--size-mb` MB whose every other 512 KiB block holds random data (the others
are holes, which the node program skips), streamed once with amidsl's own code. It prints MB/s and the
controller's CPU per block, beside the raw channel (`cat` of the same data into the same reads) as the
baseline measured in the same run.

Loopback only: the network between a node in EC2 and the controller is not here. What the figures say
is what the controller's side costs (paramiko's decryption and amidsl's parsing); over a real network
the link's bandwidth comes on top, twice (in from the node, out to EBS).

Needs root (sshd's privilege separation) and OpenSSH's sshd.

Usage: python3 benchmarks/ssh_stream_benchmark.py [--size-mb 1100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from amidsl.live.ssh import SshNode, SshTarget
from amidsl.node.amidsl_node import EBS_BLOCK_SIZE
from amidsl.run.block_stream import BlockStream

SSHD = "/usr/sbin/sshd"
PROGRAM = Path(__file__).resolve().parent.parent / "amidsl" / "node" / "amidsl_node.py"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_sshd(workdir: Path) -> tuple[subprocess.Popen, SshTarget]:
    """An sshd on 127.0.0.1 that takes root with a throwaway key; the target that reaches it."""
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", workdir / name], check=True)
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    port = free_port()
    (workdir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\n"
        f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {workdir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    host_key = (workdir / "host_key.pub").read_text().split()
    (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    target = SshTarget(
        "benchmark",
        "127.0.0.1",
        port,
        "root",
        identity_files=(str(workdir / "client_key"),),
        known_hosts=str(workdir / "known_hosts"),
    )
    return process, target


def make_disk(path: Path, size_mb: int) -> int:
    """A sparse disk of size_mb MB, random data in every other block; the blocks holding data."""
    blocks = size_mb * 1024 * 1024 // EBS_BLOCK_SIZE
    with path.open("wb") as disk:
        for index in range(0, blocks, 2):
            disk.seek(index * EBS_BLOCK_SIZE)
            disk.write(os.urandom(EBS_BLOCK_SIZE))
        disk.truncate(blocks * EBS_BLOCK_SIZE)
    return len(range(0, blocks, 2))


def timed(run) -> tuple[float, float, int]:
    """(wall s, this process's CPU s, bytes) of run(), which returns the bytes it read."""
    wall, cpu = time.monotonic(), time.process_time()
    got = run()
    return time.monotonic() - wall, time.process_time() - cpu, got


def main() -> None:
    """Stream the disk's blocks over SSH with amidsl's code, and the raw data as the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1100)
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        sys.exit("needs root and OpenSSH's sshd (apt-get install openssh-server)")
    workdir = Path(tempfile.mkdtemp(prefix="amidsl-ssh-bench-"))
    process, target = start_sshd(workdir)
    try:
        disk = workdir / "image.disk"
        expected = make_disk(disk, args.size_mb)
        data_file = workdir / "data.bin"  # the same bytes as the blocks, without holes or frames
        with disk.open("rb") as source, data_file.open("wb") as out:
            for index in range(0, args.size_mb * 1024 * 1024 // EBS_BLOCK_SIZE, 2):
                source.seek(index * EBS_BLOCK_SIZE)
                out.write(source.read(EBS_BLOCK_SIZE))
        node = SshNode(target)
        node.connect()

        def raw() -> int:
            read, finish, _ = node.stream(f"cat {data_file}")
            total = 0
            while chunk := read(EBS_BLOCK_SIZE):
                total += len(chunk)
            finish()
            return total

        def blocks() -> int:
            read, finish, stop = node.stream(
                f"python3 {PROGRAM} blocks", json.dumps({"disk": str(disk)}).encode()
            )
            stream = BlockStream(read, finish, stop)
            count = sum(1 for _ in stream)
            if count != expected:
                sys.exit(f"the stream gave {count} blocks, not {expected}")
            return count * EBS_BLOCK_SIZE

        print(f"disk: {args.size_mb} MB, {expected} blocks holding data, over SSH on 127.0.0.1")
        print(f"{'read':34} {'wall s':>7} {'MB/s':>7} {'controller CPU s':>17} {'CPU ms per block':>17}")
        for name, run in (("raw channel (cat, baseline)", raw), ("amidsl block stream (blocks)", blocks)):
            wall, cpu, got = timed(run)
            print(f"{name:34} {wall:7.2f} {got / 1e6 / wall:7.0f} {cpu:17.2f} {cpu * 1000 / expected:17.2f}")
        node.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
