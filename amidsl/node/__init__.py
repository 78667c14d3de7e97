"""The program amidsl runs on the node for native builds (stdlib-only Python, shipped as a file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

PROGRAM_PATH = Path(__file__).with_name("amidsl_node.py")


def program_source() -> str:
    """The node program's source text, exactly as shipped to the node."""
    return PROGRAM_PATH.read_text(encoding="utf-8")


def program_sha256() -> str:
    """Hex SHA-256 of the node program's source, for the script's checksummed payload."""
    return hashlib.sha256(PROGRAM_PATH.read_bytes()).hexdigest()
