"""One resolution of settings in progress: the user's values, what has been read, the problems found."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from amidsl.settings.constants import BACKINGS
from amidsl.settings.schema import Problem, Setting


class Reading:
    """Reads each setting once, on first use, so a default may be computed from other settings."""

    def __init__(
        self, given: Mapping[str, Any], rows: Mapping[str, Setting], problems: list[Problem]
    ) -> None:
        self.given = given  # the user's values under their snake_case names
        self.rows = rows
        self.problems = problems
        self.read: dict[str, Any] = {}
        self._reading: list[str] = []  # the settings being read now, to name a cycle of defaults

    def value(self, name: str) -> Any:
        """The finished value of a setting (its row's reader and check run the first time)."""
        if name not in self.read:
            if name in self._reading:
                raise RuntimeError(f"settings table: {' -> '.join([*self._reading, name])} is a cycle")
            self._reading.append(name)
            row = self.rows[name]
            if self.backing_reads(row):
                value = row.read(self, row)
                if row.check is not None and value is not None:
                    row.check(self, name, value)
            else:
                # The other backing's setting: its file is never opened, nor its value checked; rules
                # refuse, from what was given, those that would change the image (rules.py).
                value = self.default(row)
            self._reading.pop()
            self.read[name] = value
        return self.read[name]

    def backing_reads(self, row: Setting) -> bool:
        """Whether this build's backing reads the row (every row while `backing` itself is wrong)."""
        if not row.backings:
            return True
        backing = self.value("backing")
        return backing in row.backings or backing not in BACKINGS

    def default(self, row: Setting) -> Any:
        """The row's default: computed from other settings, or its plain value."""
        return row.default_from(self) if row.default_from is not None else row.default

    def problem(self, setting: str, message: str, fix: str) -> None:
        """Record one problem."""
        self.problems.append(Problem(setting, message, fix))
