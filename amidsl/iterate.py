"""Iteration helpers the controller's minimum Python (3.9) lacks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any


def zip_strict(*iterables: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """zip, raising ValueError when the iterables differ in length (zip(strict=True) from Python 3.10)."""
    missing = object()
    for items in itertools.zip_longest(*iterables, fillvalue=missing):
        if any(item is missing for item in items):
            raise ValueError("zip_strict: the iterables differ in length")
        yield items
