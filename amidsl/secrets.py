"""Secret values: strings that never show themselves in a repr, a str, a log line or an exception."""

from __future__ import annotations

from dataclasses import dataclass, field

HIDDEN = "<hidden>"


@dataclass(frozen=True)
class Secret:
    """A secret string; `reveal()` is the only way to read it, so it cannot leak by formatting."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """Return the secret text, for the one place that must hand it to a tool."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({HIDDEN})"

    def __str__(self) -> str:
        return HIDDEN

    def __format__(self, spec: str) -> str:
        return HIDDEN

    def __bool__(self) -> bool:
        return bool(self._value)
