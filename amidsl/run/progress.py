"""Progress for long work, as the simulator and live builds report it.

On a terminal a byte transfer is one bar redrawn in place (bytes, rate, ETA), and an action's end line
replaces its start line; otherwise a transfer is a plain line at most every few seconds and an action
that says nothing else is its end line alone, so logs stay short. `quiet` shows nothing; `verbose` adds
each command as it runs. A log file (`--log FILE`) gets every line, the commands too, each after its
time (ISO 8601, milliseconds, local offset).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from amidsl.printable import printable_output
from amidsl.render.shell import shown_command

PLAIN_INTERVAL = 5.0  # seconds between plain progress lines
BAR_INTERVAL = 0.1  # seconds between redraws of a terminal bar
BAR_WIDTH = 24
ACTION_PREFIX = re.compile(r" *\[[\w-]+ \d+\]")  # "  [ami-bundle 2]" at the start of an action's lines


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Transfer:
    """Bytes moving towards a known total; report with `advance` and end with `finish`."""

    progress: Progress
    label: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    shown_at: float = 0.0
    logged_at: float = 0.0
    logged_done: int = -1  # the count the log's last line of this transfer shows

    def advance(self, count: int) -> None:
        """Count `count` more bytes done, redrawing the bar or printing a line when it is time."""
        self.done += count
        now = time.monotonic()
        interval = BAR_INTERVAL if self.progress.terminal else PLAIN_INTERVAL
        if now - self.shown_at >= interval:
            self.shown_at = now
            self.progress.show_transfer(self.describe(now))
        if now - self.logged_at >= PLAIN_INTERVAL:
            self._log(now)

    def describe(self, now: float, bar: bool = True) -> str:
        """label [bar] done/total rate ETA (the bar only on a terminal)."""
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(fraction * BAR_WIDTH)
        drawn = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if bar and self.progress.terminal else ""
        return (
            f"    {self.label} {drawn}{_megabytes(self.done)} of {_megabytes(self.total)} "
            f"({fraction:.0%}), {_megabytes(rate)}/s, ETA {_duration(eta)}"
        )

    def finish(self) -> None:
        """End the transfer: a final line (the bar's last state on a terminal, the last state in the log)."""
        now = time.monotonic()
        if self.progress.terminal and self.shown_at:
            self.progress.show_transfer(self.describe(now), final=True)
        if self.logged_done != self.done:
            self._log(now)

    def _log(self, now: float) -> None:
        self.logged_at, self.logged_done = now, self.done
        self.progress.log_line(self.describe(now, bar=False))


class OutputClosed(KeyboardInterrupt):
    """The reader of the output went away (`amidsl simulate | head`): stop the work as Ctrl-C would."""


@dataclass
class Progress:
    """Where progress goes and how much of it: action lines, commands, byte transfers."""

    stream: TextIO | None = None  # None: no progress at all
    terminal: bool = False
    verbose: bool = False
    log: TextIO | None = None  # every line and command, each after its time
    # On a terminal, the line still open (no newline yet): an action's start line ("... ...") that its
    # end line replaces, or a transfer bar being redrawn.
    _open: str | None = None
    _open_prefix: str = ""  # "  [phase N]" of an open start line
    # Off a terminal, an action's start line not written yet: its end line alone says it all, unless
    # something else comes first.
    _held: str | None = None
    closed: bool = False  # the reader went away; nothing more is shown

    @classmethod
    def for_command(
        cls,
        quiet: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        log: TextIO | None = None,
    ) -> Progress:
        """Progress on `stream` (default stdout), a bar only on a terminal; nothing with quiet but the log."""
        if quiet:
            return cls(log=log)
        stream = stream or sys.stdout
        return cls(stream, terminal=stream.isatty(), verbose=verbose, log=log)

    def __call__(self, text: str) -> None:
        """A Progress is also the plain line callback back-ends take."""
        self.line(text)

    def line(self, text: str) -> None:
        """A phase's or action's line (an action's end line replaces its start line, see the module)."""
        text = printable_output(text)  # a node's output may hold escape sequences: shown, never obeyed
        self.log_line(text)
        if self.stream is None:
            return
        prefix = ACTION_PREFIX.match(text)
        if not self.terminal:
            held, self._held = self._held, None
            if held is not None and not (prefix and prefix.group() == ACTION_PREFIX.match(held).group()):
                self._write(f"{held}\n")
            if prefix is not None and text.endswith(" ..."):
                self._held = text
            else:
                self._write(f"{text}\n")
            return
        before = ""
        if self._open == "start" and prefix and prefix.group() == self._open_prefix:
            before = "\r\x1b[K"  # the same action's end line
        elif self._open:
            before = "\n"
        started = prefix is not None and text.endswith(" ...")
        self._write(before + (text if started else f"{text}\n"))
        self._open = "start" if started else None
        self._open_prefix = prefix.group() if started and prefix else ""

    def command(self, text: str) -> None:
        """A command as it starts (shown when verbose; always in the log); a here-document as its digest."""
        text = shown_command(text)
        if self.verbose:
            self.line(f"    $ {text}")
        else:
            self.log_line(printable_output(f"    $ {text}"))

    def log_line(self, text: str) -> None:
        """Write a line (each line of a multi-line command) to the log file, after its time."""
        if self.log is not None:
            stamp = datetime.now().astimezone().isoformat(timespec="milliseconds")
            self.log.write("".join(f"{stamp} {line}\n" for line in text.splitlines() or [""]))
            self.log.flush()

    def finish(self) -> None:
        """The command ends: write an action's start line that no end line followed (a failure, Ctrl-C)."""
        held, self._held = self._held, None
        if held is not None and self.stream is not None:
            self._write(f"{held}\n")

    def transfer(self, label: str, total: int) -> Transfer:
        """Start reporting a transfer of `total` bytes."""
        return Transfer(self, label, total)

    def show_transfer(self, text: str, final: bool = False) -> None:
        """Print a transfer's state: redrawn in place on a terminal, as a line otherwise."""
        if self.stream is None:
            return
        if not self.terminal:
            held, self._held = self._held, None
            self._write((f"{held}\n" if held is not None else "") + f"{text}\n")
            return
        self._write(("\n" if self._open == "start" else "\r") + f"{text}\x1b[K" + ("\n" if final else ""))
        self._open = None if final else "bar"

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.stream, self.closed = None, True
            raise OutputClosed from None
