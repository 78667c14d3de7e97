"""The `amidsl` command: an invoke Program over the same tasks as ./tasks.py."""

from __future__ import annotations

from invoke import Program

from amidsl import __version__
from amidsl.tasks import ns

program = Program(namespace=ns, version=__version__, name="amidsl", binary="amidsl")


def main() -> None:
    """Run the amidsl command line."""
    program.run()
