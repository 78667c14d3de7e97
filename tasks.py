"""invoke tasks for amidsl (`inv --list`): the same collection the `amidsl` command runs."""

from amidsl.tasks import ns

__all__ = ["ns"]
