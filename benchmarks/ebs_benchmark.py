"""Benchmark: an EBS-backed build's path against the instance-store path, in the same run.

On the native benchmark's tree (~900 MB of real library files, made bootable with a stand-in kernel
and this machine's GRUB for BIOS, so both paths make the same hvm disk), from "node ready" to "image
registered", against moto's server on 127.0.0.1:

  (a) instance-store: the node program's `bundle` (disk, tar, gzip, AES, 10 MiB parts), its `upload`
      of the parts to presigned S3 URLs (4 at a time), the manifest's PUT, RegisterImage
  (b) EBS: the node program's `bundle` with output "disk" (the same disk, kept whole), its `blocks`
      stream read by the controller, which uploads the blocks holding data with the EBS direct APIs
      (4 at a time), completes the snapshot and waits for it; RegisterImage on the snapshot
  (c) the upload of (b) again, the same blocks through the same code, against a minimal stand-in of the
      EBS direct APIs on 127.0.0.1 (it takes each block and answers; no storage, no checks beyond the
      size and the count): what the upload costs on this machine's side when the server costs nothing,
      as AWS's servers cost this machine nothing. Its total is (b)'s with this upload instead.

moto's server runs in a process of its own, as does the stand-in: neither uploader (the node program
for S3, this process as the controller for EBS) shares an interpreter with the server it sends to.
Each service moto serves is called once before the clocks start (it loads a service's code on its
first call). moto's server answers PutSnapshotBlock effectively one at a time (8 uploads at a time
take as long as 1), with milliseconds of CPU each on the same cores as the uploads, and closes the
connection after each; an S3 path of 10 MiB parts barely pays that, and AWS's servers cost this
machine nothing. So the figures say the server's CPU seconds per path, and (c) shows the EBS upload
without them.

It prints wall seconds per step and end to end, the blocks sent and the zero blocks skipped, the
node processes' peak RSS, the controller's and the server's CPU seconds. The node program runs here as
a local process: the SSH channel a live build streams the blocks through is not part of the figures.

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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bundle_benchmark import MB, make_tree, measured, read_usage
from native_benchmark import PROGRAM, upload_seconds

from amidsl.node.amidsl_node import EBS_BLOCK_SIZE
from amidsl.run.block_stream import BlockStream
from amidsl.run.ebs_upload import SnapshotUpload, upload_snapshot
from amidsl.settings import MAX_UPLOAD_CONCURRENCY

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


class StandInEbs(BaseHTTPRequestHandler):
    """The least an EBS direct APIs server does: StartSnapshot, PutSnapshotBlock (the whole block read,
    its size checked, counted), CompleteSnapshot (the count checked) and EC2's DescribeSnapshots."""

    protocol_version = "HTTP/1.1"  # connections kept, as AWS keeps them
    wbufsize = -1  # a response in one write
    server: Any

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def _reply(self, status: int, body: bytes = b"", kind: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_PUT(self) -> None:
        """PutSnapshotBlock: /snapshots/<id>/blocks/<index>."""
        size = int(self.headers["Content-Length"])
        self.rfile.read(size)
        if size != EBS_BLOCK_SIZE:
            self._reply(400, json.dumps({"Message": f"a block of {size} bytes"}).encode())
            return
        snapshot_id = self.path.split("/")[2]
        with self.server.lock:
            self.server.blocks[snapshot_id] += 1
        self._reply(201, x_amz_Checksum=self.headers["x-amz-Checksum"], x_amz_Checksum_Algorithm="SHA256")

    def do_POST(self) -> None:
        """StartSnapshot, CompleteSnapshot, or EC2's DescribeSnapshots (the snapshot is completed)."""
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/snapshots":
            with self.server.lock:
                snapshot_id = f"snap-{len(self.server.blocks):017x}"
                self.server.blocks[snapshot_id] = 0
            size = json.loads(body)["VolumeSize"]
            answer = {
                "SnapshotId": snapshot_id,
                "Status": "pending",
                "VolumeSize": size,
                "BlockSize": EBS_BLOCK_SIZE,
            }
            self._reply(201, json.dumps(answer).encode())
        elif self.path.startswith("/snapshots/completion/"):
            snapshot_id = self.path.split("/")[3]
            count = int(self.headers["x-amz-ChangedBlocksCount"])
            if count != self.server.blocks[snapshot_id]:
                said = f"{count} blocks claimed, {self.server.blocks[snapshot_id]} written"
                self._reply(
                    400, json.dumps({"Message": said}).encode(), x_amzn_ErrorType="ValidationException"
                )
                return
            self._reply(202, json.dumps({"Status": "completed"}).encode())
        else:
            snapshot_id = parse_qs(body.decode())["SnapshotId.1"][0]
            answer = (
                '<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                f"<snapshotSet><item><snapshotId>{snapshot_id}</snapshotId><status>completed</status>"
                "</item></snapshotSet></DescribeSnapshotsResponse>"
            )
            self._reply(200, answer.encode(), "text/xml")


def serve(kind: str) -> None:
    """Run moto's server or the stand-in on 127.0.0.1 in this process; say its port; stop at stdin's end."""
    if kind == "moto":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        port = moto.get_host_and_port()[1]
    else:
        stand_in = ThreadingHTTPServer(("127.0.0.1", 0), StandInEbs)
        stand_in.daemon_threads = True
        stand_in.lock, stand_in.blocks = threading.Lock(), {}  # type: ignore[attr-defined]
        threading.Thread(target=stand_in.serve_forever, daemon=True).start()
        port = stand_in.server_address[1]
    print(port, flush=True)
    sys.stdin.read()


class Server:
    """A server process of this file (--serve KIND): its endpoint and the CPU seconds it spent so far."""

    def __init__(self, kind: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.endpoint = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the server process so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """End the server process."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def client(service: str, endpoint: str) -> Any:
    """A boto3 client on the endpoint, its connection pool as a live build's (amidsl.live.aws)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="benchmark",
        aws_secret_access_key="benchmark",
        config=Config(
            signature_version="s3v4", retries={"max_attempts": 2}, max_pool_connections=MAX_UPLOAD_CONCURRENCY
        ),
    )


def upload_ebs(
    server: Server, disk: dict, rss: Path, concurrency: int
) -> tuple[SnapshotUpload, float, float, float]:
    """The controller's upload of the disk's blocks through `server`: the snapshot, wall seconds, this
    process's CPU seconds (the controller's) and the server's."""
    wall, cpu, served = time.perf_counter(), time.process_time(), server.cpu_seconds()
    uploaded = upload_snapshot(
        client("ebs", server.endpoint),
        stream_blocks(disk["disk"], rss),
        ec2=client("ec2", server.endpoint),
        volume_size_gib=disk["volume_size_gib"],
        concurrency=concurrency,
    )
    return (
        uploaded,
        time.perf_counter() - wall,
        time.process_time() - cpu,
        server.cpu_seconds() - served,
    )


def main() -> None:
    """Make the tree, run both paths against moto on 127.0.0.1 and (c) against the stand-in; print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=900, help="MB of files in the tree")
    parser.add_argument("--workdir", help="directory for the temporary files (default: $TMPDIR)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel uploads on both paths")
    args = parser.parse_args()
    if not (HOST_GRUB / "boot.img").is_file():
        raise SystemExit("needs GRUB 2 for BIOS on this machine (apt-get install grub-pc-bin)")
    moto, stand_in = Server("moto"), Server("stand-in")
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="amidsl-ebs-bench-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        data = make_tree(tree, args.size_mb * MB)
        make_bootable(tree)
        subprocess.run(f"find {tree} -type f -exec cat {{}} + > /dev/null", shell=True, check=True)
        print(f"tree: {data / MB:.0f} MB of files, bootable (stand-in kernel, this machine's GRUB)")
        ec2, s3 = client("ec2", moto.endpoint), client("s3", moto.endpoint)
        # moto loads a service's code on its first request: each once before the clocks start.
        s3.list_buckets()
        ec2.describe_snapshots(OwnerIds=["self"])
        client("ebs", moto.endpoint).start_snapshot(VolumeSize=1)

        # (a) instance-store
        parts_dir = work / "parts"
        parts_dir.mkdir()
        key = {"key": os.urandom(16).hex(), "iv": os.urandom(16).hex(), "part_size": 10 * 1024 * 1024}
        started = time.perf_counter()
        report, bundle_a, rss_a = node("bundle", bundle_request(tree, parts_dir, **key), work / "rss-a")
        served = moto.cpu_seconds()
        upload_a = upload_seconds(parts_dir, report, moto.endpoint, args.concurrency, "parallel")
        server_a = moto.cpu_seconds() - served
        s3.put_object(Bucket="bench", Key="parallel/image.manifest.xml", Body=b"<manifest/>")
        ec2.register_image(Name="bench-s3", ImageLocation="bench/parallel/image.manifest.xml")
        total_a = time.perf_counter() - started
        shutil.rmtree(parts_dir)

        # (b) EBS
        disk_dir = work / "disk"
        disk_dir.mkdir()
        started = time.perf_counter()
        disk, bundle_b, rss_b = node("bundle", bundle_request(tree, disk_dir, output="disk"), work / "rss-b")
        uploaded, upload_b, controller_b, server_b = upload_ebs(
            moto, disk, work / "rss-blocks", args.concurrency
        )
        ec2.register_image(
            Name="bench-ebs",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": uploaded.snapshot_id}}],
            VirtualizationType="hvm",
        )
        total_b = time.perf_counter() - started
        rss_blocks = read_usage(work / "rss-blocks")[0]

        # (c) the upload of (b) against the stand-in
        standing, upload_c, controller_c, server_c = upload_ebs(
            stand_in, disk, work / "rss-blocks-c", args.concurrency
        )
        total_c = total_b - upload_b + upload_c
    moto.stop()
    stand_in.stop()

    all_blocks = -(-disk["image_size"] // EBS_BLOCK_SIZE)
    sent = uploaded.blocks_written
    for done in (uploaded, standing):
        assert (done.blocks_written, done.checksum) == (disk["blocks"], disk["checksum"]), "not the disk"
    print(f"\ncores: {len(os.sched_getaffinity(0))}, {args.concurrency} uploads at a time on both paths")
    print(
        f"{'path':<24}{'bundle s':>10}{'upload s':>10}{'total s':>10}{'sent MB':>10}"
        f"{'node peak RSS MB':>18}{'server CPU s':>14}"
    )
    rows = [
        ("instance-store", bundle_a, upload_a, total_a, report["bundled_size"], rss_a, server_a),
        ("ebs", bundle_b, upload_b, total_b, sent * EBS_BLOCK_SIZE, max(rss_b, rss_blocks), server_b),
        (
            "ebs, stand-in server",
            bundle_b,
            upload_c,
            total_c,
            sent * EBS_BLOCK_SIZE,
            max(rss_b, rss_blocks),
            server_c,
        ),
    ]
    for name, bundled, upload, total, size, rss, server in rows:
        print(
            f"{name:<24}{bundled:>10.2f}{upload:>10.2f}{total:>10.2f}{size / MB:>10.0f}"
            f"{rss / 1024:>18.1f}{server:>14.2f}"
        )
    print(
        f"\nebs: a {disk['image_size'] / MB:.0f} MB disk of {all_blocks} blocks: {sent} sent, "
        f"{all_blocks - sent} zero blocks skipped; on the node's disk it took "
        f"{disk['allocated'] / MB:.0f} MB, written once"
    )
    ms = 1000 / sent  # seconds of the whole upload to milliseconds per PutSnapshotBlock
    print(
        f"per PutSnapshotBlock: moto's server {server_b * ms:.2f} ms of CPU, the stand-in "
        f"{server_c * ms:.2f} ms; the controller {controller_b * ms:.2f} ms against moto, "
        f"{controller_c * ms:.2f} ms against the stand-in; wall {upload_b * ms:.2f} ms against moto, "
        f"{upload_c * ms:.2f} ms against the stand-in"
    )
    print(f"the S3 path's {len(report['parts'])} parts cost moto's server {server_a:.2f} s of CPU")
    print(
        f"end to end, ebs / instance-store: {total_b / total_a:.2f} against moto, "
        f"{total_c / total_a:.2f} with the EBS upload against the stand-in   [target <= 1.00]; "
        f"node peak RSS: bundle {rss_b / 1024:.0f} MB, blocks {rss_blocks / 1024:.0f} MB   [target <= 256 MB]"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        main()
