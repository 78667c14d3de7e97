"""Benchmark: cold start of `amidsl plan`, `amidsl script` and `amidsl simulate` on the built-in example.

Each figure is the median of fresh Python processes (imports included, as a user runs the command):
wall time, and CPU time (user + system of the process and the processes it starts, so the node
program's runs count for simulate). Baselines measured in the same run put the figures in proportion
on a busy or slow machine: `python -c pass` (the interpreter's own start) and `python -c "import boto3"`
(the smallest thing any AWS tool imports). For comparison it also times `amidsl plan` the old way,
searching for the example's throwaway RSA primes in pure Python instead of taking the written-down
indices.

Before timing, each command runs once untimed with bytecode writing allowed (even where
PYTHONDONTWRITEBYTECODE is set), so that every timed run loads compiled modules, as an installed
package does.

Targets: plan < 0.2 s, script < 0.3 s, simulate < 2 s (wall, median).

Usage: python3 benchmarks/cli_benchmark.py [--runs 5] [--simulate-runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
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
TARGETS = {"amidsl plan": 0.2, "amidsl script": 0.3, "amidsl simulate": 2.0}


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold(argv: list[str], runs: int, cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Median wall and CPU seconds of `runs` fresh processes running argv, after one untimed run."""
    subprocess.run(argv, check=True, capture_output=True, cwd=cwd, env=env)
    walls, cpus = [], []
    for _ in range(runs):
        cpu_before, started = children_cpu(), time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd, env=env)
        walls.append(time.perf_counter() - started)
        cpus.append(children_cpu() - cpu_before)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    """Print the cold-start figures, their ratios to the baselines, and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each quick command (default 7)")
    parser.add_argument("--simulate-runs", type=int, default=5, help="runs of simulate (default 5)")
    args = parser.parse_args()
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    python = sys.executable
    commands = {
        "python -c pass": ([python, "-c", "pass"], args.runs),
        'python -c "import boto3"': ([python, "-c", "import boto3"], args.runs),
        "amidsl plan": ([python, "-m", "amidsl", "plan"], args.runs),
        "amidsl script": ([python, "-m", "amidsl", "script"], args.runs),
        "amidsl plan, old way (primes searched)": ([python, "-c", OLD_WAY], args.runs),
        "amidsl simulate": ([python, "-m", "amidsl", "simulate"], args.simulate_runs),
    }
    with tempfile.TemporaryDirectory() as empty:  # no ./amidsl.toml: the built-in example
        figures = {name: cold(argv, runs, empty, env) for name, (argv, runs) in commands.items()}
    print(f"{'':<40} {'wall':>8} {'cpu':>8}   (medians of cold runs)")
    for name, (wall, cpu) in figures.items():
        print(f"{name:<40} {wall:6.3f} s {cpu:6.3f} s   ({commands[name][1]} runs)")
    bare, boto3 = figures["python -c pass"][0], figures['python -c "import boto3"'][0]
    print()
    for name, target in TARGETS.items():
        wall = figures[name][0]
        print(
            f"{name:<16} {wall / bare:5.1f}x python -c pass, {wall / boto3:4.1f}x import boto3; "
            f"target < {target:.1f} s: {'met' if wall < target else 'NOT met'}"
        )
    ratio = figures["amidsl plan, old way (primes searched)"][0] / figures["amidsl plan"][0]
    print(f"plan, old way / now: {ratio:.1f}x")


if __name__ == "__main__":
    main()
