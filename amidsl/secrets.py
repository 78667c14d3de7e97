"""Secret values: strings that never show themselves in a repr, a str, a log line or an exception."""

from __future__ import annotations

from collections.abc import Iterable
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


def redact(text: str, secrets: Iterable[str | Secret | None]) -> str:
    """Replace every secret (and every long line of a multi-line secret, e.g. a PEM body) in text."""
    pieces: set[str] = set()
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            continue
        pieces.add(value)
        # A key may surface line by line (a tool echoing part of a file): hide each substantial line.
        pieces.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, HIDDEN)
    return text
