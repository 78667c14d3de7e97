"""The node program's block stream as the controller reads it: whole blocks in order, then the result,
whatever pieces the channel gives them in."""

from __future__ import annotations

import pytest

from amidsl.node.amidsl_node import EBS_BLOCK_SIZE, END_OF_BLOCKS
from amidsl.run.block_stream import BlockStream, BlockStreamFailed

BLOCKS = [(0, bytes(range(256)) * (EBS_BLOCK_SIZE // 256)), (5, b"\x07" * EBS_BLOCK_SIZE)]


def output(blocks, result: bytes = b'{"sent": 2}\n') -> bytes:
    """The frames `blocks` writes, the end of the blocks, then its result line."""
    frames = b"".join(index.to_bytes(8, "big") + data for index, data in blocks)
    return frames + END_OF_BLOCKS.to_bytes(8, "big") + result


def in_pieces(data: bytes, piece: int):
    """A read(n) that gives at most `piece` bytes a call, as an SSH channel gives what has arrived."""
    offset = 0

    def read(size: int) -> bytes:
        nonlocal offset
        given = data[offset : offset + min(size, piece)]
        offset += len(given)
        return given

    return read


@pytest.mark.parametrize("piece", [1000, 32768, EBS_BLOCK_SIZE + 8])
def test_blocks_arriving_in_pieces_are_read_whole_and_in_order(piece):
    stream = BlockStream(in_pieces(output(BLOCKS), piece), lambda: (0, ""))
    assert list(stream) == BLOCKS
    assert stream.result == {"sent": 2} and stream.finished


def test_a_block_the_program_sends_in_one_piece_is_given_on_as_it_came():
    block = BLOCKS[1][1]
    pieces = iter([(5).to_bytes(8, "big"), block, END_OF_BLOCKS.to_bytes(8, "big"), b"{}", b""])
    stream = BlockStream(lambda size: next(pieces), lambda: (0, ""))
    index, data = next(iter(stream))
    assert index == 5 and data is block  # not a copy


def test_a_stream_cut_inside_a_block_fails_with_what_the_program_said():
    cut = output(BLOCKS)[: 8 + EBS_BLOCK_SIZE + 8 + 1000]
    stream = BlockStream(in_pieces(cut, 4096), lambda: (1, "amidsl-node: error: disk read failed\n"))
    with pytest.raises(BlockStreamFailed, match="disk read failed") as failed:
        list(stream)
    assert failed.value.status == 1 and stream.finished
