"""Benchmark: bundle a 1 GiB ext4 image with ec2-bundle-image's shell pipeline and with amidsl.

Builds ~900 MB of real files (copies of the running Python's standard library and site-packages)
into a 1 GiB ext4 image, then bundles that image, in the same run, with

  (a) tar -c -S | gzip -9 | openssl enc -aes-128-cbc -K … -iv … | split -b 10M  (ec2-ami-tools)
  (b) amidsl.bundle.bundle_image                                               (this project)

and prints wall time, throughput, output bytes and peak RSS for each, and the ratios.
Peak RSS of (a) is the sum of its four processes' peaks (they run at the same time); peaks are
measured with GNU time when it is installed, else with a Python wrapper (which overstates them).

Usage: python3 benchmarks/bundle_benchmark.py [--data-mb 900] [--image-mb 1024] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PART_SIZE = 10 * 1024 * 1024
MB = 1024 * 1024
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Result:
    """One bundler's figures."""

    name: str
    seconds: float
    cpu_seconds: float
    output_bytes: int
    peak_rss_kb: int


def measure_child(outfile: str, argv: list[str]) -> int:
    """Run argv (inheriting stdin/stdout), write its peak RSS in KiB to outfile, pass its status."""
    status = subprocess.run(argv, check=False).returncode
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(outfile).write_text(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime:.2f}\n")
    return status


def measured(rss_file: Path, *argv: str) -> list[str]:
    """argv wrapped so that its peak RSS (KiB) and CPU seconds land in rss_file.

    GNU time is preferred: a forked Python wrapper would charge its own resident memory to the
    child it runs, overstating small programs like gzip.
    """
    if os.access(GNU_TIME, os.X_OK):
        return [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *argv]
    return [sys.executable, os.path.abspath(__file__), "--measure", str(rss_file), "--", *argv]


def read_usage(path: Path) -> tuple[int, float]:
    """Peak RSS (KiB) and CPU seconds (user + system) as written by measured()."""
    peak, *cpu = path.read_text().split()
    return int(peak), sum(float(c) for c in cpu)


def make_tree(target: Path, data_bytes: int) -> int:
    """Copy the Python installation's library files into target until data_bytes are there."""
    sources = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files = []
    for source in dict.fromkeys(sources):
        for directory, _, names in os.walk(source):
            files.extend(Path(directory) / n for n in sorted(names))
    files = [f for f in files if f.is_file() and not f.is_symlink()]
    total, copy = 0, 0
    while total < data_bytes:
        for f in files:
            destination = target / f"copy{copy}" / f.relative_to(f.anchor)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, destination)
            total += f.stat().st_size
            if total >= data_bytes:
                break
        copy += 1
    return total


def make_identity(common_name: str, directory: Path) -> tuple[Path, Path]:
    """A throwaway RSA key and self-signed certificate, written as PEM files."""
    from amidsl.keypairs import self_signed_pair

    key_pem, cert_pem = self_signed_pair(common_name, days=1)
    cert_path, key_path = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    cert_path.write_text(cert_pem)
    key_path.write_text(key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path


def run_pipeline(stages: list[list[str]], rss_files: list[Path]) -> list[tuple[int, float]]:
    """Run the stages as one shell pipeline, each measured; return their peak RSS and CPU seconds."""
    processes: list[subprocess.Popen[bytes]] = []
    previous = None
    for i, (stage, rss) in enumerate(zip(stages, rss_files, strict=True)):
        last = i == len(stages) - 1
        process = subprocess.Popen(
            measured(rss, *stage), stdin=previous, stdout=None if last else subprocess.PIPE
        )
        if previous is not None:
            previous.close()  # only the next stage holds the pipe now
        previous = process.stdout
        processes.append(process)
    codes = [p.wait() for p in processes]
    if any(codes):
        raise SystemExit(f"shell pipeline failed: exit codes {codes}")
    return [read_usage(f) for f in rss_files]


def run_shell_pipeline(image_dir: Path, out: Path, work: Path) -> Result:
    """ec2-bundle-image's pipeline; each stage's peak RSS is measured, then summed."""
    key, iv = os.urandom(16).hex(), os.urandom(16).hex()
    stages = [
        ["tar", "-c", "-S", "--owner", "0", "--group", "0", "-C", str(image_dir), "image"],
        ["gzip", "-9"],
        ["openssl", "enc", "-aes-128-cbc", "-K", key, "-iv", iv],
        ["split", "-b", str(PART_SIZE), "-d", "-a", "3", "-", f"{out}/image.part."],
    ]
    rss_files = [work / f"rss-a{i}" for i in range(len(stages))]
    start = time.perf_counter()
    usages = run_pipeline(stages, rss_files)
    seconds = time.perf_counter() - start
    output = sum(p.stat().st_size for p in out.iterdir())
    return Result(
        "shell gzip -9",
        seconds,
        sum(cpu for _, cpu in usages),
        output,
        sum(rss for rss, _ in usages),
    )


def run_amidsl(image: Path, out: Path, work: Path, user: tuple[Path, Path], ec2: Path) -> Result:
    """amidsl's bundler in a fresh Python process (so its RSS is its own)."""
    program = (
        "import sys; from pathlib import Path; from amidsl.bundle import bundle_image;"
        "bundle_image(sys.argv[1], sys.argv[2], user_id='123456789012',"
        " user_cert_pem=Path(sys.argv[3]).read_bytes(),"
        " user_private_key_pem=Path(sys.argv[4]).read_bytes(),"
        " ec2_cert_pem=Path(sys.argv[5]).read_bytes())"
    )
    rss = work / "rss-b"
    argv = [sys.executable, "-c", program, str(image), str(out), *map(str, user), str(ec2)]
    start = time.perf_counter()
    subprocess.run(measured(rss, *argv), check=True, env={**os.environ, "PYTHONPATH": ROOT})
    seconds = time.perf_counter() - start
    output = sum(p.stat().st_size for p in out.glob("image.part.*"))
    peak, cpu = read_usage(rss)
    return Result("amidsl", seconds, cpu, output, peak)


ROOT = str(Path(__file__).resolve().parent.parent)


def main() -> None:
    """Build the image, run both bundlers, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-mb", type=int, default=900, help="MB of files to put in the image")
    parser.add_argument("--image-mb", type=int, default=1024, help="image size in MB")
    parser.add_argument("--workdir", help="directory for the temporary files (default: $TMPDIR)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from amidsl.bundle import build_image, verify_bundle

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="amidsl-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        data = make_tree(work / "tree", args.data_mb * MB)
        print(f"tree: {data / MB:.0f} MB of files copied in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        (work / "image-dir").mkdir()
        image = work / "image-dir" / "image"
        build_image(work / "tree", image, size_mb=args.image_mb, no_filter=True)
        shutil.rmtree(work / "tree")
        allocated = image.stat().st_blocks * 512
        print(
            f"image: {image.stat().st_size / MB:.0f} MB ext4, {allocated / MB:.0f} MB allocated, "
            f"built in {time.perf_counter() - t:.1f} s"
        )
        user = make_identity("user", work)
        ec2_cert, _ = make_identity("ec2", work)
        # Both runs then read the image from the page cache alike.
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)

        (work / "out-a").mkdir()
        (work / "out-b").mkdir()
        shell = run_shell_pipeline(image.parent, work / "out-a", work)
        ours = run_amidsl(image, work / "out-b", work, user, ec2_cert)
        verify_bundle(work / "out-b" / "image.manifest.xml", user[0].read_bytes())

        size_mb = image.stat().st_size / MB
        print(f"\ncores: {len(os.sched_getaffinity(0))}, image: {size_mb:.0f} MB")
        columns = f"{'wall s':>9}{'cpu s':>9}{'MB/s':>9}{'output bytes':>15}{'peak RSS MB':>13}"
        print(f"{'bundler':<15}{columns}")
        for r in (shell, ours):
            print(
                f"{r.name:<15}{r.seconds:>9.2f}{r.cpu_seconds:>9.2f}{size_mb / r.seconds:>9.1f}"
                f"{r.output_bytes:>15}{r.peak_rss_kb / 1024:>13.1f}"
            )
        print(
            f"\nspeed-up (shell wall / amidsl wall): {shell.seconds / ours.seconds:.1f}x"
            f"   [target >= 10x]\n"
            f"output size (amidsl / shell): {ours.output_bytes / shell.output_bytes:.3f}"
            f"   [target <= 1.05]\n"
            f"amidsl peak RSS: {ours.peak_rss_kb / 1024:.1f} MB   [target < 256 MB]"
        )


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--measure" and sys.argv[3] == "--":
        sys.exit(measure_child(sys.argv[2], sys.argv[4:]))
    main()
