"""Benchmark: the controller's CPU per block of an EBS-backed build's upload, this tree against a baseline
commit, in the same run.

What the controller does per 512 KiB block, and nothing else: a stream of the node program's frames
(random blocks, served from memory, so neither a node nor its pipe or SSH channel is in the figures) read
with `BlockStream`, uploaded by `upload_snapshot` through the EBS client a live build makes
(`amidsl.live.aws.Aws`), to the stand-in of the EBS direct APIs from ebs_benchmark.py (a process of its
own on 127.0.0.1, which costs this process nothing). Each version runs in a fresh process of its own,
taking turns (`--rounds` each), and says the CPU seconds (user and system, its put threads included) of
its upload; the baseline is the `amidsl` package of a commit (`--baseline`, default main, extracted with
git archive), so a change is measured against what it changes in one run.

It prints the median CPU milliseconds per block of each version and their ratio, then what one block costs
in parts measured here: the SHA-256 the controller must compute (the Checksum sent is the digest of the
bytes sent), one PutSnapshotBlock through boto3 without it, one raw HTTP PUT of the same bytes with
http.client (the floor of sending it) and reading one block from the stream. On a busy machine the CPU
column is the one to compare; wall time includes waiting for a core.

Usage: python3 benchmarks/ebs_controller_benchmark.py [--baseline REF] [--blocks 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BLOCK = 512 * 1024
DISTINCT = 16  # distinct random blocks, taken in turn: the stream stays small in memory
DEFAULT_BASELINE = "main"


class Frames:
    """read(n) over the frames of `count` blocks, as the node program's `blocks` writes them; each read a
    fresh bytes object, as a pipe's or a channel's read is."""

    def __init__(self, count: int, end_of_blocks: int) -> None:
        blocks = [os.urandom(BLOCK) for _ in range(DISTINCT)]
        pieces = [
            piece for index in range(count) for piece in (index.to_bytes(8, "big"), blocks[index % DISTINCT])
        ]
        self._frames = iter([*pieces, end_of_blocks.to_bytes(8, "big") + b'{"blocks": %d}\n' % count])
        self._frame = memoryview(b"")

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        if not self._frame:
            self._frame = memoryview(next(self._frames, b""))
        given, self._frame = self._frame[:size], self._frame[size:]
        return bytes(given)


def ebs_client(endpoint: str) -> tuple[Any, Any]:
    """The EBS and EC2 clients a live build's controller makes (amidsl.live.aws), on `endpoint`."""
    from amidsl.live.aws import Aws
    from amidsl.secrets import Secret

    settings = SimpleNamespace(
        access_key="benchmark", secret_key=Secret("benchmark"), session_token=None, region="us-east-1"
    )
    aws = Aws(settings, SimpleNamespace(profile=None, endpoint_url=endpoint))  # type: ignore[arg-type]
    return aws.client("ebs"), aws.client("ec2")


def measure(tree: str, endpoint: str, count: int, concurrency: int) -> None:
    """In a process of its own: upload `count` blocks with the amidsl package in `tree`; print its CPU."""
    sys.path.insert(0, tree)
    import resource

    from amidsl.node.amidsl_node import END_OF_BLOCKS
    from amidsl.run.block_stream import BlockStream
    from amidsl.run.ebs_upload import upload_snapshot

    assert Path(sys.modules["amidsl"].__file__ or "").is_relative_to(tree), "not the version asked for"
    ebs, ec2 = ebs_client(endpoint)

    def upload(blocks: int) -> None:
        stream = BlockStream(Frames(blocks, END_OF_BLOCKS).read, lambda: (0, ""))
        done = upload_snapshot(ebs, stream, ec2=ec2, volume_size_gib=1, concurrency=concurrency)
        assert done.blocks_written == blocks

    upload(2 * concurrency)  # the code loaded, the connections open
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    upload(count)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    faults = after.ru_minflt - before.ru_minflt
    print(json.dumps({"user": user, "system": system, "wall": wall, "faults": faults}))


def run_version(tree: Path, endpoint: str, count: int, concurrency: int) -> dict[str, float]:
    """One measurement of the version in `tree`, in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--measure", str(tree), endpoint, str(count), str(concurrency)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # no amidsl in the working directory
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def per_block_parts(endpoint: str, count: int) -> dict[str, float]:
    """CPU milliseconds per block of the upload's parts, one at a time in this process (this tree)."""
    from amidsl.node.amidsl_node import END_OF_BLOCKS
    from amidsl.run.block_stream import BlockStream

    data = os.urandom(BLOCK)
    ebs, _ = ebs_client(endpoint)
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    host, port = endpoint.split("//")[1].split(":")
    raw = http.client.HTTPConnection(host, int(port))

    def put(index: int) -> None:
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=BLOCK,
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )

    def raw_put(index: int) -> None:
        headers = {"x-amz-Checksum": checksum, "Content-Length": str(BLOCK)}
        raw.request("PUT", f"/snapshots/{snapshot_id}/blocks/{index}", body=data, headers=headers)
        raw.getresponse().read()

    def read(count: int) -> None:
        for _ in BlockStream(Frames(count, END_OF_BLOCKS).read, lambda: (0, "")):
            pass

    def cpu_ms(step: Any, times: int) -> float:
        step(0)
        started = time.process_time()
        for index in range(times):
            step(index)
        return (time.process_time() - started) * 1000 / times

    return {
        "SHA-256 of the block": cpu_ms(lambda index: hashlib.sha256(data).digest(), count),
        "PutSnapshotBlock by boto3 (no SHA-256)": cpu_ms(put, count),
        "raw HTTP PUT by http.client": cpu_ms(raw_put, count),
        "reading the block from the stream": cpu_ms(lambda index: read(count), 1) / count,
    }


def main() -> None:
    """Extract the baseline, start the stand-in, measure both versions in turns and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="the commit to compare with")
    parser.add_argument("--blocks", type=int, default=300, help="blocks per upload")
    parser.add_argument("--rounds", type=int, default=5, help="uploads per version, taking turns")
    parser.add_argument("--concurrency", type=int, default=4, help="puts at a time")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    from ebs_benchmark import Server

    stand_in = Server("stand-in")
    figures: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="amidsl-ebs-cpu-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline, "amidsl"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {"baseline": Path(tmp), "this tree": REPO}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                figures[name].append(run_version(tree, stand_in.endpoint, args.blocks, args.concurrency))
    parts = per_block_parts(stand_in.endpoint, args.blocks)
    stand_in.stop()

    print(
        f"controller per block: {args.blocks} blocks, {args.concurrency} puts at a time, "
        f"median of {args.rounds} uploads each, against the stand-in"
    )
    print(f"{'version':<26}{'CPU ms':>9}{'user ms':>9}{'system ms':>11}{'wall ms':>9}{'page faults':>13}")
    medians = {}
    for name, runs in figures.items():
        ms = {key: statistics.median(run[key] for run in runs) * 1000 / args.blocks for key in runs[0]}
        ms["faults"] /= 1000
        medians[name] = statistics.median((run["user"] + run["system"]) for run in runs) * 1000 / args.blocks
        label = f"{name} ({args.baseline})" if name == "baseline" else name
        print(
            f"{label:<26}{medians[name]:>9.3f}{ms['user']:>9.3f}{ms['system']:>11.3f}{ms['wall']:>9.3f}{ms['faults']:>13.1f}"
        )
    print(f"this tree / baseline, CPU per block: {medians['this tree'] / medians['baseline']:.2f}")
    print("\nparts of one block, one at a time (this tree), CPU ms:")
    for name, ms in parts.items():
        print(f"  {name:<42}{ms:>7.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
