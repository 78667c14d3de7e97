"""Benchmark: an EBS-backed build's path against the instance-store path, in the same run.

On the native benchmark's tree (~900 MB of real library files, made bootable with a stand-in kernel
and this machine's GRUB for BIOS, so both paths make the same hvm disk), from "node ready" to "image
registered", against moto's server on 127.0.0.1:

  (a) instance-store: the node program's `bundle` (disk, tar, gzip, AES, 10 MiB parts), its `upload`
      of the parts to presigned S3 URLs (4 at a time), the manifest's PUT, RegisterImage
  (b) EBS: the node program's `bundle` with output "disk" (the same disk, kept whole), its `blocks`
      stream read by the controller, which uploads the blocks holding data with the EBS direct APIs
      (4 at a time), completes the snapshot and waits for it; RegisterImage on the snapshot

It prints wall seconds per step and end to end, the blocks sent and the zero blocks skipped, and the
node processes' peak RSS. The node program runs here as a local process: the SSH channel a live build
streams the blocks through is not part of the figures.

Usage: python3 benchmarks/ebs_benchmark.py [--size-mb 900] [--workdir DIR] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bundle_benchmark import MB, make_tree, measured, read_usage
from native_benchmark import PROGRAM, upload_seconds

from amidsl.node.amidsl_node import EBS_BLOCK_SIZE
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import upload_snapshot

HOST_GRUB = Path("/usr/lib/grub/i386-pc")
KERNEL = "6.1.0-bench"
UUID = "0b0e7e4e-5a1f-4c2b-9d3e-6f7a8b9c0d1e"


def make_bootable(tree: Path) -> None:
    """A stand-in kernel and initramfs, fstab and grub.cfg by UUID, GRUB's BIOS files, nvme and ena."""
    (tree / "boot/grub").mkdir(parents=True)
    for name in (f"vmlinuz-{KERNEL}", f"initrd.img-{KERNEL}"):
        (tree / "boot" / name).write_bytes(
            os.urandom(8 * MB)
        )  # as large, and as incompressible, as real ones
    (tree / "boot/grub/grub.cfg").write_text(f"linux /boot/vmlinuz-{KERNEL} root=UUID={UUID}\n")
    (tree / "etc").mkdir(exist_ok=True)
    (tree / "etc/fstab").write_text(f"UUID={UUID} / ext4 errors=remount-ro 0 1\n")
    shutil.copytree(HOST_GRUB, tree / "usr/lib/grub/i386-pc")
    modules = tree / "lib/modules" / KERNEL
    modules.mkdir(parents=True)
    built_in = ("kernel/drivers/nvme/host/nvme.ko", "kernel/drivers/net/ethernet/amazon/ena/ena.ko")
    (modules / "modules.builtin").write_text("".join(f"{m}\n" for m in built_in))


def node(command: str, request: dict, rss: Path) -> tuple[dict, float, int]:
    """Run the node program; its result, wall seconds and peak RSS (KiB)."""
    started = time.perf_counter()
    done = subprocess.run(
        measured(rss, "python3", str(PROGRAM), command),
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"node program {command} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.splitlines()[-1]), time.perf_counter() - started, read_usage(rss)[0]


def bundle_request(tree: Path, out: Path, **more: object) -> dict:
    """The bundle request both paths send (hvm: the same disk)."""
    return {
        "volume": str(tree),
        "exclude": [],
        "filter": False,
        "destination_dir": str(out),
        "prefix": "image",
        "image_size_mb": None,
        "workers": 0,
        "virtualization_type": "hvm",
        **more,
    }


def stream_blocks(disk: str, rss: Path) -> BlockStream:
    """The node program's `blocks` run, read as the controller reads it over SSH."""
    process = subprocess.Popen(
        measured(rss, "python3", str(PROGRAM), "blocks"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(json.dumps({"disk": disk}).encode())
    process.stdin.close()
    stderr = process.stderr

    def finish() -> tuple[int, str]:
        said = stderr.read().decode("utf-8", "replace")
        return process.wait(), said

    return BlockStream(process.stdout.read, finish)


def main() -> None:
    """Make the tree, run both paths against moto on 127.0.0.1, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=900, help="MB of files in the tree")
    parser.add_argument("--workdir", help="directory for the temporary files (default: $TMPDIR)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel uploads on both paths")
    args = parser.parse_args()
    if not (HOST_GRUB / "boot.img").is_file():
        raise SystemExit("needs GRUB 2 for BIOS on this machine (apt-get install grub-pc-bin)")
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="amidsl-ebs-bench-") as tmp:
        work = Path(tmp)
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"

        def client(service: str):
            return boto3.client(
                service,
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="benchmark",
                aws_secret_access_key="benchmark",
                config=Config(signature_version="s3v4", retries={"max_attempts": 2}),
            )

        tree = work / "tree"
        data = make_tree(tree, args.size_mb * MB)
        make_bootable(tree)
        subprocess.run(f"find {tree} -type f -exec cat {{}} + > /dev/null", shell=True, check=True)
        print(f"tree: {data / MB:.0f} MB of files, bootable (stand-in kernel, this machine's GRUB)")
        ec2, s3 = client("ec2"), client("s3")

        # (a) instance-store
        parts_dir = work / "parts"
        parts_dir.mkdir()
        key = {"key": os.urandom(16).hex(), "iv": os.urandom(16).hex(), "part_size": 10 * 1024 * 1024}
        started = time.perf_counter()
        report, bundle_a, rss_a = node("bundle", bundle_request(tree, parts_dir, **key), work / "rss-a")
        upload_a = upload_seconds(parts_dir, report, endpoint, args.concurrency, "parallel")
        s3.put_object(Bucket="bench", Key="parallel/image.manifest.xml", Body=b"<manifest/>")
        ec2.register_image(Name="bench-s3", ImageLocation="bench/parallel/image.manifest.xml")
        total_a = time.perf_counter() - started
        shutil.rmtree(parts_dir)

        # (b) EBS
        disk_dir = work / "disk"
        disk_dir.mkdir()
        started = time.perf_counter()
        disk, bundle_b, rss_b = node("bundle", bundle_request(tree, disk_dir, output="disk"), work / "rss-b")
        uploading = time.perf_counter()
        uploaded = upload_snapshot(
            client("ebs"),
            stream_blocks(disk["disk"], work / "rss-blocks"),
            ec2=ec2,
            volume_size_gib=disk["volume_size_gib"],
            concurrency=args.concurrency,
        )
        upload_b = time.perf_counter() - uploading
        ec2.register_image(
            Name="bench-ebs",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": uploaded.snapshot_id}}],
            VirtualizationType="hvm",
        )
        total_b = time.perf_counter() - started
        rss_blocks = read_usage(work / "rss-blocks")[0]
    server.stop()

    all_blocks = -(-disk["image_size"] // EBS_BLOCK_SIZE)
    sent = uploaded.blocks_written
    assert (sent, uploaded.checksum) == (disk["blocks"], disk["checksum"]), "the snapshot is not the disk"
    print(f"\ncores: {len(os.sched_getaffinity(0))}, {args.concurrency} uploads at a time on both paths")
    print(
        f"{'path':<16}{'bundle s':>10}{'upload s':>10}{'total s':>10}{'sent MB':>10}{'node peak RSS MB':>18}"
    )
    print(
        f"{'instance-store':<16}{bundle_a:>10.2f}{upload_a:>10.2f}{total_a:>10.2f}"
        f"{report['bundled_size'] / MB:>10.0f}{rss_a / 1024:>18.1f}"
    )
    print(
        f"{'ebs':<16}{bundle_b:>10.2f}{upload_b:>10.2f}{total_b:>10.2f}"
        f"{sent * EBS_BLOCK_SIZE / MB:>10.0f}{max(rss_b, rss_blocks) / 1024:>18.1f}"
    )
    print(
        f"\nebs: a {disk['image_size'] / MB:.0f} MB disk of {all_blocks} blocks: {sent} sent, "
        f"{all_blocks - sent} zero blocks skipped; on the node's disk it took "
        f"{disk['allocated'] / MB:.0f} MB, written once"
    )
    print(
        f"end to end, ebs / instance-store: {total_b / total_a:.2f}   [target <= 1.00]; "
        f"node peak RSS: bundle {rss_b / 1024:.0f} MB, blocks {rss_blocks / 1024:.0f} MB   [target <= 256 MB]"
    )


if __name__ == "__main__":
    main()
