"""The node program's `blocks` output as the controller reads it: the disk's data blocks, then its result.

The program writes frames to standard output (an 8-byte big-endian block index, then the block's 512 KiB),
then END_OF_BLOCKS and its JSON result line; its progress and errors go to standard error. A back-end
(the simulator's process, a live SSH channel) gives `read`, which returns up to n bytes (b"" at the end
of the output), and `finish`, which waits for the program and returns its exit status and what it said.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from amidsl.node.amidsl_node import EBS_BLOCK_SIZE, END_OF_BLOCKS

INDEX_BYTES = 8


class BlockStreamFailed(Exception):
    """The node program's block stream ended before its last block: its status and what it said."""

    def __init__(self, status: int, said: str) -> None:
        super().__init__(said.strip() or f"amidsl's node program (blocks) ended with status {status}")
        self.status = status


class BlockStream:
    """The blocks one `blocks` run sends, in order; once they are all read, `result` and `said`.

    `stop` ends the run early (the reader gave up, e.g. an upload failed): without it the program would
    wait forever to write its next block. `close()` calls it unless the run has finished.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        finish: Callable[[], tuple[int, str]],
        stop: Callable[[], None] = lambda: None,
    ) -> None:
        self._read = read
        self._finish = finish
        self._stop = stop
        self.finished = False
        self.result: dict[str, Any] = {}
        self.said = ""

    def close(self) -> None:
        """Stop the program if it has not finished (its blocks are no longer read)."""
        if not self.finished:
            self.finished = True
            self._stop()

    def _exactly(self, size: int) -> bytes:
        # An SSH channel gives a block in pieces of a few dozen KiB: joined once, not copied per piece.
        pieces: list[bytes] = []
        have = 0
        while have < size:
            more = self._read(size - have)
            if not more:
                break
            pieces.append(more)
            have += len(more)
        return b"".join(pieces)  # one piece: that very object, no copy

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(block index, block data) for each block the program sends; BlockStreamFailed if it stops early."""
        while True:
            head = self._exactly(INDEX_BYTES)
            index = int.from_bytes(head, "big") if len(head) == INDEX_BYTES else None
            if index == END_OF_BLOCKS:
                break
            data = self._exactly(EBS_BLOCK_SIZE) if index is not None else b""
            if index is None or len(data) < EBS_BLOCK_SIZE:
                status, said = self._finish()
                self.finished = True
                raise BlockStreamFailed(status or 1, said)
            yield index, data
        rest = b""
        while True:
            more = self._read(65536)
            if not more:
                break
            rest += more
        status, self.said = self._finish()
        self.finished = True
        try:
            self.result = json.loads(rest.decode("utf-8"))
        except ValueError:
            self.result = {}
        if status != 0 or not self.result:
            raise BlockStreamFailed(status or 1, self.said)
