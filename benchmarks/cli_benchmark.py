"""Benchmark: cold start of `amidsl plan` and `amidsl script` on the built-in example.

Each figure is the median wall time of fresh Python processes (imports included, as a user runs the
command). For comparison, the same run also times `amidsl plan` the old way, searching for the
example's throwaway RSA primes in pure Python on every run instead of taking the written-down indices,
and prints the ratio.
Target: plan and script under 0.3 s.

Usage: python3 benchmarks/cli_benchmark.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

OLD_WAY = (
    "import amidsl.example.derive as d\n"
    "d.P_INDEX, d.Q_INDEX = d.first_prime_index(b'p'), d.first_prime_index(b'q')\n"
    "from amidsl.cli.main import main\n"
    "main(['plan'])\n"
)


def cold(argv: list[str], runs: int, cwd: str) -> float:
    """Median wall time in seconds of `runs` fresh processes running argv."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Print the cold-start figures and the ratio against the old way."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as empty:  # no ./amidsl.toml: the built-in example
        figures = {
            "amidsl plan": cold([sys.executable, "-m", "amidsl", "plan"], runs, empty),
            "amidsl script": cold([sys.executable, "-m", "amidsl", "script"], runs, empty),
            "amidsl plan, old way (primes searched)": cold([sys.executable, "-c", OLD_WAY], runs, empty),
        }
    for name, seconds in figures.items():
        print(f"{name:<38} {seconds:6.3f} s  (median of {runs} cold runs)")
    ratio = figures["amidsl plan, old way (primes searched)"] / figures["amidsl plan"]
    print(f"old way / now: {ratio:.1f}x; target plan and script < 0.300 s")


if __name__ == "__main__":
    main()
