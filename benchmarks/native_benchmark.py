"""Benchmark: the node program's native bundle against the ami-tools pipeline, and parallel upload.

Copies ~900 MB of real files (the running Python's standard library and site-packages) into a
tree, then, in the same run:

  (a) the ami-tools way: copy the tree (ec2-bundle-vol copies the volume into its image), then
      tar -c -S | gzip -9 | openssl enc -aes-128-cbc -K … -iv … | split -b 10M
  (b) the node program: `python3 amidsl/node/amidsl_node.py bundle` on the tree: `mke2fs -d`
      reading it through a private view of bind mounts (as root; else a staging tree of hard links;
      while mke2fs runs, the idle core deflates what it has written), tar, SHA-1, parallel gzip,
      AES-128-CBC through libcrypto, 10 MiB parts
  (b') the same with the staging tree of hard links every node can fall back to, for comparison

and prints wall and CPU seconds, MB/s, output bytes, peak RSS and the ratios, and where (b)'s wall
and CPU time went (the program's report: space check, staging, mke2fs, bundling, cleanup). Then it uploads
(b)'s parts to moto's S3 server on 127.0.0.1 with the node program, in parallel and one at a time.

With --hygiene-rounds N it also bundles the tree N times with image hygiene and N times without
(every item kept: the bundle as it was before hygiene), alternating, and prints the medians and the
ratio: what hygiene costs a whole bundle.

Usage: python3 benchmarks/native_benchmark.py [--size-mb 900] [--workdir DIR] [--concurrency 4]
       [--hygiene-rounds 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bundle_benchmark import MB, PART_SIZE, Result, make_tree, measured, read_usage, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "amidsl" / "node" / "amidsl_node.py"


def run_node(command: str, request: dict) -> tuple[dict, float, float, int]:
    """Run the node program; return its result, wall and CPU seconds, and peak RSS in KiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        ["python3", str(PROGRAM), command],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"node program {command} failed: {done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # ru_maxrss of children is the largest child so far: run this before anything big.
    return json.loads(done.stdout.splitlines()[-1]), seconds, cpu, after.ru_maxrss


def run_native(
    tree: Path, out: Path, staging: str = "auto", hygiene_keep: tuple[str, ...] = ()
) -> tuple[Result, dict]:
    """(b): the node program's bundle command on the tree (hygiene_keep: the items not applied)."""
    key, iv = os.urandom(16).hex(), os.urandom(16).hex()
    request = {
        "volume": str(tree),
        "exclude": [],
        "includes": [],
        "filter": False,
        "destination_dir": str(out),
        "prefix": "image",
        "image_size_mb": None,
        "key": key,
        "iv": iv,
        "part_size": PART_SIZE,
        "workers": 0,
        "staging": staging,
        "hygiene_keep": list(hygiene_keep),
    }
    report, seconds, cpu, peak = run_node("bundle", request)
    check = f"cat {out}/image.part.* | openssl enc -d -aes-128-cbc -K {key} -iv {iv} | gunzip | sha1sum"
    digest = subprocess.run(["sh", "-c", check], capture_output=True, text=True, check=True).stdout.split()[0]
    if digest != report["digest"]:
        raise SystemExit(f"native bundle does not restore: SHA-1 {digest}, reported {report['digest']}")
    name = "native (node)" if staging == "auto" else f"native, {staging}"
    return Result(name, seconds, cpu, report["bundled_size"], peak), report


def run_ami_tools(tree: Path, out: Path, work: Path) -> Result:
    """(a): copy the tree, then ec2-bundle-image's shell pipeline; peaks are summed per stage."""
    key, iv = os.urandom(16).hex(), os.urandom(16).hex()
    copy_rss = work / "rss-copy"
    start = time.perf_counter()
    subprocess.run(measured(copy_rss, "cp", "-a", str(tree), str(work / "copy")), check=True)
    stages = [
        ["tar", "-c", "-S", "--owner", "0", "--group", "0", "-C", str(work / "copy"), "."],
        ["gzip", "-9"],
        ["openssl", "enc", "-aes-128-cbc", "-K", key, "-iv", iv],
        ["split", "-b", str(PART_SIZE), "-d", "-a", "3", "-", f"{out}/image.part."],
    ]
    usages = run_pipeline(stages, [work / f"rss-a{i}" for i in range(len(stages))])
    seconds = time.perf_counter() - start
    copy_peak, copy_cpu = read_usage(copy_rss)
    output = sum(p.stat().st_size for p in out.iterdir())
    cpu = copy_cpu + sum(c for _, c in usages)
    return Result("ami-tools", seconds, cpu, output, max(copy_peak, sum(r for r, _ in usages)))


def upload_seconds(out: Path, report: dict, endpoint: str, concurrency: int, prefix: str) -> float:
    """Upload the parts with the node program to presigned URLs; return the wall seconds."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="benchmark",
        aws_secret_access_key="benchmark",
        config=Config(signature_version="s3v4"),
    )
    if prefix == "parallel":
        s3.create_bucket(Bucket="bench")
    parts = [
        {
            "filename": p["filename"],
            "url": s3.generate_presigned_url(
                "put_object",
                Params={"Bucket": "bench", "Key": f"{prefix}/{p['filename']}", "ACL": "aws-exec-read"},
                ExpiresIn=3600,
            ),
            "headers": {"x-amz-acl": "aws-exec-read"},
            "size": p["size"],
            "sha1": p["sha1"],
        }
        for p in report["parts"]
    ]
    request = {"destination_dir": str(out), "parts": parts, "concurrency": concurrency, "retries": 5}
    _, seconds, _, _ = run_node("upload", request)
    return seconds


def hygiene_cost(tree: Path, work: Path, rounds: int) -> None:
    """Bundle the tree with and without image hygiene, alternating; print medians and the ratio."""
    from amidsl.node.amidsl_node import HYGIENE_NAMES

    runs: dict[str, list[Result]] = {"without hygiene": [], "with hygiene": []}
    for _ in range(rounds):
        for name, keep in (("without hygiene", tuple(HYGIENE_NAMES)), ("with hygiene", ())):
            out = work / "out-hygiene"
            out.mkdir()
            result, _ = run_native(tree, out, hygiene_keep=keep)
            shutil.rmtree(out)
            runs[name].append(result)
    print(f"\nimage hygiene, {rounds} bundles each, alternating (median):")
    medians = {}
    for name, results in runs.items():
        wall = statistics.median(r.seconds for r in results)
        cpu = statistics.median(r.cpu_seconds for r in results)
        medians[name] = (wall, cpu)
        print(
            f"  {name:<16} wall {wall:7.2f} s   cpu {cpu:7.2f} s   (walls: "
            + ", ".join(f"{r.seconds:.2f}" for r in results)
            + ")"
        )
    (wall0, cpu0), (wall1, cpu1) = medians["without hygiene"], medians["with hygiene"]
    print(f"  cost of hygiene: wall {wall1 / wall0:.3f}x, cpu {cpu1 / cpu0:.3f}x   [target: a few percent]")


def main() -> None:
    """Make the tree, run both bundlers and both uploads, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=900, help="MB of files in the tree")
    parser.add_argument("--workdir", help="directory for the temporary files (default: $TMPDIR)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel uploads")
    parser.add_argument(
        "--hygiene-rounds", type=int, default=0, help="bundles with and without image hygiene, each"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="amidsl-native-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        data = make_tree(work / "tree", args.size_mb * MB)
        print(f"tree: {data / MB:.0f} MB of files copied in {time.perf_counter() - t:.1f} s")
        # Both runs then read the files from the page cache alike.
        subprocess.run(f"find {work / 'tree'} -type f -exec cat {{}} + > /dev/null", shell=True, check=True)
        (work / "out-a").mkdir()
        (work / "out-b").mkdir()
        native, report = run_native(work / "tree", work / "out-b")  # first: see run_node
        (work / "out-links").mkdir()
        links, links_report = run_native(work / "tree", work / "out-links", staging="links")
        shutil.rmtree(work / "out-links")
        tools = run_ami_tools(work / "tree", work / "out-a", work)
        shutil.rmtree(work / "copy")

        print(f"\ncores: {len(os.sched_getaffinity(0))}, tree: {data / MB:.0f} MB")
        print(f"{'bundler':<15}{'wall s':>9}{'cpu s':>9}{'MB/s':>9}{'output bytes':>15}{'peak RSS MB':>13}")
        for r in (tools, native, links):
            peak = f"{r.peak_rss_kb / 1024:>13.1f}" if r is not links else f"{'-':>13}"
            print(
                f"{r.name:<15}{r.seconds:>9.2f}{r.cpu_seconds:>9.2f}{data / MB / r.seconds:>9.1f}"
                f"{r.output_bytes:>15}{peak}"
            )
        print(
            f"\nspeed-up (ami-tools wall / native wall): {tools.seconds / native.seconds:.1f}x"
            f"   [target >= 10x]; with the staging tree: {tools.seconds / links.seconds:.1f}x\n"
            f"output size (native / ami-tools): {native.output_bytes / tools.output_bytes:.3f}"
            f"   [target <= 1.10]\n"
            f"native peak RSS: {native.peak_rss_kb / 1024:.1f} MB   [target <= 256 MB]"
        )
        for name, result, steps_of in ((native.name, native, report), (links.name, links, links_report)):
            steps = steps_of.get("seconds", {})
            startup = result.seconds - sum(steps.values())
            print(
                f"{name} wall seconds by step: "
                + ", ".join(f"{step} {seconds:.2f}" for step, seconds in steps.items())
                + f", start-up and the rest {startup:.2f}"
            )
            # On a busy machine wall time says little; CPU seconds say what a quiet one would need.
            print(
                f"{name} CPU seconds by step: "
                + ", ".join(f"{step} {s:.2f}" for step, s in steps_of.get("cpu_seconds", {}).items())
            )
        ahead = report.get("deflated_ahead", {})
        print(
            f"chunks deflated while mke2fs ran: {ahead.get('made', 0)}, taken when bundling: "
            f"{ahead.get('used', 0)}"
        )

        if args.hygiene_rounds:
            hygiene_cost(work / "tree", work, args.hygiene_rounds)

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its request log shows the URLs
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            out = work / "out-b"
            parallel = upload_seconds(out, report, endpoint, args.concurrency, "parallel")
            serial = upload_seconds(out, report, endpoint, 1, "serial")
        finally:
            server.stop()
        size = report["bundled_size"] / MB
        print(
            f"\nupload of {len(report['parts'])} parts ({size:.0f} MB) to moto on 127.0.0.1:\n"
            f"  {args.concurrency} at a time: {parallel:.2f} s ({size / parallel:.1f} MB/s)\n"
            f"  one at a time: {serial:.2f} s ({size / serial:.1f} MB/s)\n"
            f"  speed-up: {serial / parallel:.1f}x"
        )


if __name__ == "__main__":
    main()
