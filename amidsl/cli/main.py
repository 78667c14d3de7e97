"""The `amidsl` command: an argparse front end over the command table (amidsl/cli/table.py).

Usage errors exit with status 2 and suggest the nearest command or option; a command's own failures
(CommandError) print their message without a traceback; a closed pipe (`amidsl plan | head -1`) and
Ctrl-C end the command quietly. Only the chosen command's module is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from amidsl import __version__
from amidsl.cli.table import (
    COMMANDS,
    FAILED,
    INTERRUPTED,
    USAGE_ERROR,
    CliCommand,
    CommandError,
    Option,
    find_command,
)

BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE
DEBUG_ENV = "AMIDSL_DEBUG"


def suggestion(word: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the candidate nearest to word, or ''."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def top_help() -> str:
    """`amidsl --help`: one line per command."""
    width = max(len(command.name) for command in COMMANDS) + 2
    lines = [
        "usage: amidsl [-h] [--version] COMMAND [OPTIONS]",
        "",
        "Build S3-backed (instance-store) AMIs: preview, script, simulate and run the build.",
        "",
        "commands:",
        *(f"  {command.name:<{width}}{command.summary}" for command in COMMANDS),
        f"  {'help':<{width}}show a command's options (amidsl help COMMAND)",
        "",
        "Run 'amidsl COMMAND --help' for a command's options.",
    ]
    return "\n".join(lines) + "\n"


def help_help() -> str:
    """`amidsl help --help`: how to use help itself."""
    return (
        "usage: amidsl help [COMMAND]\n\n"
        "Show a command's options, as 'amidsl COMMAND --help' does; without COMMAND, list the commands.\n"
    )


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose errors suggest the nearest option and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        """Print usage, the error and a did-you-mean hint; exit 2."""
        hint = ""
        if message.startswith("unrecognized arguments: "):
            unknown = message.removeprefix("unrecognized arguments: ").split()[0].split("=")[0]
            known = [flag for action in self._actions for flag in action.option_strings]
            hint = suggestion(unknown, known)
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}{hint}\n")


def checked(option: Option) -> Callable[[str], str]:
    """An argparse type running the option's check: what it finds is a usage error (exit 2)."""

    def check(value: str) -> str:
        problem = option.problem_with(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return check


def command_parser(command: CliCommand) -> CommandParser:
    """The argparse parser for one command, built from its table entry."""
    parser = CommandParser(
        prog=f"amidsl {command.name}",
        description=command.description,
        allow_abbrev=False,
    )
    for option in command.options:
        names = ([option.short] if option.short else []) + [option.flag]
        extra: dict[str, object] = {"help": option.help}
        if option.positional:
            if option.choices:
                extra["choices"] = option.choices
            parser.add_argument(
                option.name,
                nargs=None if option.required else "?",
                default=option.default,
                metavar=option.metavar or (None if option.choices else option.name.upper()),
                **extra,
            )
            continue
        if option.default is False:
            parser.add_argument(*names, dest=option.name, action="store_true", **extra)
            continue
        if option.choices:
            extra["choices"] = option.choices
        if isinstance(option.default, tuple):
            extra["action"] = "append"
        elif isinstance(option.default, int):
            extra["type"] = int
        if option.check:
            extra["type"] = checked(option)
        if option.default not in (None, (), "") and "default" not in option.help:
            extra["help"] = f"{option.help} (default: {option.default})"
        parser.add_argument(
            *names,
            dest=option.name,
            metavar=option.metavar or (None if option.choices else option.name.upper()),
            required=option.required,
            default=None if isinstance(option.default, tuple) else option.default,
            **extra,
        )
    return parser


def usage_error(message: str) -> int:
    """Print a top-level usage error; the exit status for it."""
    sys.stderr.write(f"usage: amidsl [-h] [--version] COMMAND [OPTIONS]\namidsl: error: {message}\n")
    return USAGE_ERROR


def unknown_command(name: str) -> int:
    """The error for a word that is not a command."""
    names = [command.name for command in COMMANDS] + ["help"]
    return usage_error(f"{name!r} is not an amidsl command{suggestion(name, names)}; see 'amidsl --help'")


def run_command(command: CliCommand, args: Sequence[str]) -> int:
    """Parse a command's options, run it and turn its clean failures into an exit status."""
    try:
        options = vars(command_parser(command).parse_args(args))
    except SystemExit as done:  # argparse's --help (0) and usage errors (2)
        return done.code if isinstance(done.code, int) else USAGE_ERROR
    try:
        command.call(options)
    except CommandError as err:
        sys.stdout.flush()
        print(str(err), file=sys.stderr)
        return err.code
    return 0


def run(argv: Sequence[str]) -> int:
    """Run the amidsl command line on argv (without the program name); the exit status."""
    if not argv:
        sys.stderr.write(top_help())
        return USAGE_ERROR
    first, rest = argv[0], list(argv[1:])
    if first in ("-h", "--help"):
        sys.stdout.write(top_help())
        return 0
    if first == "--version":
        print(f"amidsl {__version__}")
        return 0
    if first == "help":
        if not rest:
            sys.stdout.write(top_help())
            return 0
        if rest[0] in ("-h", "--help", "help"):
            sys.stdout.write(help_help())
            return 0
        first, rest = rest[0], ["--help"]
    if first.startswith("-"):
        return usage_error(f"unknown option {first}; options go after the command, see 'amidsl --help'")
    command = find_command(first)
    if command is None:
        return unknown_command(first)
    return run_command(command, rest)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the amidsl command line and exit with its status."""
    # Ctrl-C (SIGINT) always stops amidsl cleanly, as it does the node program, even when it was started
    # with SIGINT ignored (a background job of a script), where Python would not turn it into
    # KeyboardInterrupt and a build would run on, or a stopped one leave its node program running.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["simulate"]:
        # A simulation loads millions of long-lived objects (moto's EC2, botocore's service models)
        # and ends without freeing them (exit_without_teardown): the cyclic collector would only walk
        # them again and again, a fifth of the command's CPU. Its peak memory is the same without.
        gc.disable()
    try:
        status = run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("\namidsl: interrupted", file=sys.stderr)
        status = INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`amidsl plan | head -1`): send what is still buffered nowhere, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = BROKEN_PIPE
    except Exception as err:  # a bug, not bad input: one line, and the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"amidsl: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(f"(set {DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        status = FAILED
    if "moto" in sys.modules:  # only a simulation loads moto
        exit_without_teardown(status)
    sys.exit(status)


def exit_without_teardown(status: int) -> NoReturn:
    """Exit as sys.exit would (threads joined, exit handlers run, output flushed), but without freeing
    every object one by one: after a simulation, moto's and botocore's models in memory are millions of
    objects, and freeing them takes most of a second. Everything of amidsl's is closed by then."""
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter does first on exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say, as at exit
            stream.flush()
    os._exit(status)
