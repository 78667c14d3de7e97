"""Benchmark: what image hygiene costs the node program's walk of the volume (where it is applied).

Builds the same tree as native_benchmark.py (real library files, ~60,000 entries for 900 MB) and,
in the same run, times the selection walk the node program makes before imaging (walk_volume with
the filter and the default includes, counted as bundle counts it) without hygiene and with every
hygiene item, several rounds each, alternating; prints the best and median seconds and the ratio.
The rest of a native bundle (mke2fs, compression, encryption) is unchanged by hygiene: the cost in
a whole bundle is the walk's difference against the bundle's wall time (about 11 s for this tree
on 2 cores, see native_benchmark.py).

Usage: python3 benchmarks/hygiene_benchmark.py [--size-mb 900] [--rounds 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bundle_benchmark import MB, make_tree

from amidsl.node import amidsl_node as node


def walk_seconds(tree: Path, hygiene: tuple) -> tuple[float, int, int]:
    """Seconds of one selection walk, the entries selected and the entries hygiene took."""
    started = time.perf_counter()
    selected = taken = 0
    walk = node.walk_volume(str(tree), (), node.DEFAULT_INCLUDES, False, hygiene=hygiene)
    tally = node.SizeTally(-1)
    for entry in walk:
        if isinstance(entry, node.Selected):
            tally.add(entry.st)
            selected += 1
        elif isinstance(entry, node.Emptied) or entry.reason == node.LEFT_OUT_HYGIENE:
            taken += 1
    tally.size(node.STAGING_LINKS)
    return time.perf_counter() - started, selected, taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=900, help="MB of files in the tree")
    parser.add_argument("--rounds", type=int, default=5, help="walks of each kind")
    parser.add_argument("--workdir", help="directory for the tree (default: $TMPDIR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        tree = Path(scratch) / "volume"
        data = make_tree(tree, args.size_mb * MB)
        # A few things hygiene takes, as on a used node.
        for path in ("root/.bash_history", "etc/machine-id", "var/log/syslog", "etc/ssh/ssh_host_rsa_key"):
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_text("x\n")
        walk_seconds(tree, ())  # warm the inode cache
        times: dict[str, list[float]] = {"without hygiene": [], "with hygiene": []}
        counts = {}
        for _ in range(args.rounds):
            for label, items in (("without hygiene", ()), ("with hygiene", node.HYGIENE)):
                seconds, selected, taken = walk_seconds(tree, items)
                times[label].append(seconds)
                counts[label] = (selected, taken)
    print(f"tree: {data / MB:.0f} MB of files, {counts['without hygiene'][0]} entries; {args.rounds} rounds")
    for label, found in times.items():
        selected, taken = counts[label]
        print(
            f"{label:16} best {min(found):.3f} s  median {statistics.median(found):.3f} s  "
            f"({selected} selected, {taken} taken by hygiene)"
        )
    best = min(times["with hygiene"]) / min(times["without hygiene"])
    median = statistics.median(times["with hygiene"]) / statistics.median(times["without hygiene"])
    extra = statistics.median(times["with hygiene"]) - statistics.median(times["without hygiene"])
    print(f"ratio with/without: best {best:.3f}, median {median:.3f}; {extra * 1000:.0f} ms more per walk")


if __name__ == "__main__":
    main()
