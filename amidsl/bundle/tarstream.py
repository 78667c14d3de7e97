"""A GNU tar stream of one file, as `tar -c -S --owner 0 --group 0` writes it, holes skipped."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default blocking factor pads the archive to 10240 bytes
CHUNK = 1024 * 1024
GNU_MAGIC = b"ustar  \x00"
SPARSE_IN_HEADER = 4  # sparse entries in the main header
SPARSE_PER_EXTENSION = 21  # sparse entries in each extension block


@dataclass(frozen=True)
class DataRegion:
    """A stretch of a file that holds data (everything outside regions reads as zeros)."""

    offset: int
    length: int


def data_regions(fd: int, size: int) -> list[DataRegion]:
    """An open file's data regions via SEEK_DATA/SEEK_HOLE (the whole file if unsupported)."""
    regions: list[DataRegion] = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == 6:  # ENXIO: no data after offset, the rest is a hole
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            regions.append(DataRegion(start, end - start))
            offset = end
    except OSError:
        # A filesystem without hole reporting: treat the file as all data, like tar does.
        return [DataRegion(0, size)] if size else []
    return regions


def _number(value: int, width: int) -> bytes:
    """A tar numeric field: octal digits and a NUL, or GNU base-256 when octal is too small."""
    if value < 8 ** (width - 1):
        return b"%0*o\x00" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _header(name: bytes, mode: int, size: int, mtime: int, typeflag: bytes, sparse: bytes = b"") -> bytes:
    """A 512-byte old-GNU header block; sparse fills bytes 386..494 for sparse members."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = _number(mode, 8)
    block[108:116] = _number(0, 8)
    block[116:124] = _number(0, 8)
    block[124:136] = _number(size, 12)
    block[136:148] = _number(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = GNU_MAGIC
    block[265:269] = b"root"
    block[297:301] = b"root"
    block[386 : 386 + len(sparse)] = sparse
    checksum = sum(block)
    block[148:156] = b"%06o\x00 " % checksum
    return bytes(block)


def _sparse_entries(regions: list[DataRegion]) -> list[bytes]:
    return [_number(r.offset, 12) + _number(r.length, 12) for r in regions]


def _sparse_headers(name: bytes, mode: int, mtime: int, size: int, regions: list[DataRegion]) -> list[bytes]:
    """The 'S' header plus extension blocks describing a sparse file's map."""
    entries = _sparse_entries(regions)
    first, rest = entries[:SPARSE_IN_HEADER], entries[SPARSE_IN_HEADER:]
    stored = sum(r.length for r in regions)
    sparse = b"".join(first).ljust(96, b"\x00") + (b"\x01" if rest else b"\x00") + _number(size, 12)
    blocks = [_header(name, mode, stored, mtime, b"S", sparse)]
    while rest:
        chunk, rest = rest[:SPARSE_PER_EXTENSION], rest[SPARSE_PER_EXTENSION:]
        extension = b"".join(chunk).ljust(504, b"\x00") + (b"\x01" if rest else b"\x00")
        blocks.append(extension.ljust(BLOCK, b"\x00"))
    return blocks


def _read_region(fd: int, region: DataRegion) -> Iterator[bytes]:
    offset, end = region.offset, region.offset + region.length
    while offset < end:
        data = os.pread(fd, min(CHUNK, end - offset), offset)
        if not data:
            raise OSError(f"file shrank while being read (at byte {offset})")
        offset += len(data)
        yield data


def tar_one_file(path: os.PathLike[str] | str, member_name: str) -> Iterator[bytes]:
    """Yield a GNU tar archive holding path as member_name (owner root, holes skipped)."""
    name = member_name.encode("utf-8")
    if not name or len(name) >= 100 or b"/" in name:
        raise ValueError(f"tar member name {member_name!r} must be a plain name under 100 bytes")
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        size, mode, mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
        regions = data_regions(fd, size)
        if size == 0 or regions == [DataRegion(0, size)]:
            headers = [_header(name, mode, size, mtime, b"0")]
            regions = [DataRegion(0, size)] if size else []
        else:
            listed = regions
            if not regions or regions[-1].offset + regions[-1].length < size:
                # GNU tar marks a trailing hole with a zero-length entry at the file's end.
                listed = [*regions, DataRegion(size, 0)]
            headers = _sparse_headers(name, mode, mtime, size, listed)
        yield from headers
        stored = 0
        for region in regions:
            for data in _read_region(fd, region):
                stored += len(data)
                yield data
    finally:
        os.close(fd)
    data_padding = -stored % BLOCK
    archive_size = len(headers) * BLOCK + stored + data_padding + 2 * BLOCK
    # Two zero blocks end the archive; GNU tar then fills the last 10240-byte record.
    yield b"\x00" * (data_padding + 2 * BLOCK + (-archive_size % RECORD))
