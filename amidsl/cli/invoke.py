"""The `inv` tasks of a checkout (./tasks.py), made from the same command table as `amidsl`.

Each task takes the options the table lists and calls the same function; invoke is needed only here.
"""

from __future__ import annotations

import inspect

from invoke import Collection, Context, Task
from invoke.exceptions import Exit

from amidsl.cli.table import COMMANDS, USAGE_ERROR, CliCommand, CommandError


def _task(command: CliCommand) -> Task:
    """An invoke task for one command: checks required options and choices, then runs the command."""

    def body(c: Context, **options: object) -> None:
        for option in command.options:
            value = options[option.name]
            if option.required and not value:
                raise Exit(f"{option.flag} is required for {command.name}", USAGE_ERROR)
            # An unset option (None) takes its default later, as with argparse.
            if option.choices and value is not None and value not in option.choices:
                raise Exit(f"{option.flag} {value!r}: choose one of {', '.join(option.choices)}", USAGE_ERROR)
            problem = option.problem_with(value) if isinstance(value, str) else ""
            if problem:
                raise Exit(f"{option.flag}: {problem}", USAGE_ERROR)
        try:
            command.call(options)
        except CommandError as err:
            raise Exit(str(err), err.code) from None

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for option in command.options:
        default = None if isinstance(option.default, tuple) else option.default
        parameters.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__doc__ = command.description
    body.__name__ = command.name.replace("-", "_")
    return Task(
        body,
        name=command.name,
        positional=[],
        auto_shortflags=False,
        iterable=[o.name for o in command.options if isinstance(o.default, tuple)],
        help={o.name: o.help for o in command.options},
    )


def collection() -> Collection:
    """Every amidsl command as an invoke task."""
    return Collection(*(_task(command) for command in COMMANDS))
