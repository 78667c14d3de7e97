"""Read the one-file GNU tar stream inside a bundle with every header bounded (no tarfile).

tarfile reads a GNU long name, a pax header or a sparse map whole into memory, however large its
header says it is; a few MB of gzip then cost gigabytes. This reader accepts only what a bundle
holds (one regular or old-GNU sparse file, optionally named by a long-name or pax header) and
refuses anything larger than a real header could be.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from amidsl.bundle.errors import CorruptBundleError
from amidsl.iterate import zip_strict
from amidsl.node.amidsl_node import BLOCK, SPARSE_IN_HEADER, SPARSE_PER_EXTENSION  # the writer's format

CHUNK = 1024 * 1024
MAX_LONG_NAME = 4096  # PATH_MAX: longer names cannot be real
MAX_PAX_HEADER = 64 * 1024
MAX_EXTENDED_HEADERS = 4  # a long name and a pax header are all a real member needs
MAX_SPARSE_ENTRIES = 4 * 1024 * 1024  # 64 MiB of map: far more data regions than an image has
MAX_TRAILER = 1024 * 1024  # GNU tar pads the end to a 10 KiB record; allow generous blocking factors


class Readable(Protocol):
    """A byte stream (the decrypted, gunzipped bundle)."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class TarMember:
    """The single file of a bundle's tar stream; regions is the sparse map (offset, length pairs)."""

    name: str
    size: int
    stored: int
    regions: tuple[array, array] | None = None


def _read_exact(stream: Readable, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(CHUNK, size - len(data)))
        if not chunk:
            raise CorruptBundleError("the bundle's tar stream ends in the middle of a header or file")
        data += chunk
    return bytes(data)


def _number(field: bytes, what: str) -> int:
    """A tar numeric field: octal text, or GNU base-256 when the first byte has its top bit set."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(0x30 <= byte <= 0x37 for byte in text):
        raise CorruptBundleError(f"the bundle's tar header has a malformed {what} field")
    return int(text, 8)


def _checked(block: bytes) -> bytes:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if stored != unsigned:
        raise CorruptBundleError("a tar header of the bundle has a wrong checksum: the stream is damaged")
    return block


def _name(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _padded(size: int) -> int:
    return size + (-size % BLOCK)


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse `length key=value\\n` records (length counts the whole record)."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position, position + 20)
        length_text = data[position:space] if space > 0 else b""
        if not length_text.isdigit() or int(length_text) < 5:
            raise CorruptBundleError("the bundle's tar stream has a malformed pax header")
        end = position + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise CorruptBundleError("the bundle's tar stream has a malformed pax header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        position = end
    return records


def _sparse_map(stream: Readable, header: bytes, size: int) -> tuple[array, array]:
    """The old-GNU sparse map: 4 entries in the header, 21 in each extension block, all bounded."""
    offsets, lengths = array("q"), array("q")

    def add(entries: bytes, count: int) -> None:
        for i in range(count):
            entry = entries[24 * i : 24 * i + 24]
            if not entry.strip(b"\x00"):
                return
            offset, length = _number(entry[:12], "sparse offset"), _number(entry[12:], "sparse length")
            previous_end = offsets[-1] + lengths[-1] if offsets else 0
            if offset < previous_end or offset + length > size:
                raise CorruptBundleError(
                    "the bundle's sparse map has overlapping regions or regions beyond the file's size"
                )
            if len(offsets) >= MAX_SPARSE_ENTRIES:
                raise CorruptBundleError(
                    f"the bundle's sparse map has more than {MAX_SPARSE_ENTRIES} regions; refusing it"
                )
            offsets.append(offset)
            lengths.append(length)

    add(header[386:482], SPARSE_IN_HEADER)
    extended = header[482]
    while extended:
        block = _read_exact(stream, BLOCK)
        add(block, SPARSE_PER_EXTENSION)
        extended = block[504]
    return offsets, lengths


def read_member(stream: Readable) -> TarMember:
    """Read the headers of the stream's single member, refusing anything a bundle cannot hold."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    for _ in range(MAX_EXTENDED_HEADERS + 1):
        header = _read_exact(stream, BLOCK)
        if not header.strip(b"\x00"):
            raise CorruptBundleError("the bundle's tar archive is empty")
        _checked(header)
        kind, size = header[156:157], _number(header[124:136], "size")
        if kind in (b"L", b"x", b"g"):
            limit = MAX_LONG_NAME if kind == b"L" else MAX_PAX_HEADER
            if size > limit:
                raise CorruptBundleError(
                    f"the bundle's tar stream has a {size}-byte extended header (at most {limit} "
                    "is real); refusing it"
                )
            data = _read_exact(stream, _padded(size))[:size]
            if kind == b"L":
                long_name = _name(data)
            elif kind == b"x":
                pax.update(_pax_records(data))
            continue
        if any(key.startswith("GNU.sparse") for key in pax):
            raise CorruptBundleError("the bundle uses a pax sparse format amidsl does not read")
        name = pax.get("path") or long_name or _name(header[0:100])
        if header[257:263] == b"ustar\x00" and "path" not in pax and long_name is None:
            prefix = _name(header[345:500])
            name = f"{prefix}/{name}" if prefix else name
        if "size" in pax:
            if not pax["size"].isascii() or not pax["size"].isdigit():
                raise CorruptBundleError("the bundle's tar stream has a malformed pax size")
            size = int(pax["size"])  # decimal, unlike the header's octal fields
        if kind in (b"0", b"\x00", b"7"):
            return TarMember(name, size, size)
        if kind == b"S":
            real_size = _number(header[483:495], "sparse file size")
            regions = _sparse_map(stream, header, real_size)
            if sum(regions[1]) != size:
                raise CorruptBundleError("the bundle's sparse map does not add up to the data it stores")
            return TarMember(name, real_size, size, regions)
        raise CorruptBundleError(
            f"the bundle must hold exactly one plain image file, found {name!r} of tar type {kind!r}"
        )
    raise CorruptBundleError("the bundle's tar stream has too many extended headers before its file")


def copy_member(stream: Readable, member: TarMember, out: BinaryIO) -> None:
    """Write the member's content into an open file, holes left as holes, then skip its padding."""
    regions = [(0, member.stored)] if member.regions is None else zip_strict(*member.regions)
    for offset, length in regions:
        out.seek(offset)
        remaining = length
        while remaining:
            data = _read_exact(stream, min(CHUNK, remaining))
            out.write(data)
            remaining -= len(data)
    out.truncate(member.size)
    _read_exact(stream, -member.stored % BLOCK)


def read_end(stream: Readable) -> None:
    """Check that the member is the only one and that only bounded zero padding follows it."""
    trailer = 0
    while chunk := stream.read(CHUNK):
        if trailer == 0 and chunk[:BLOCK].strip(b"\x00"):
            raise CorruptBundleError("the bundle must hold exactly one file, but the tar stream has more")
        if chunk.strip(b"\x00"):
            raise CorruptBundleError("the bundle's tar stream has data after the end of its archive")
        trailer += len(chunk)
        if trailer > MAX_TRAILER:
            raise CorruptBundleError(
                f"the bundle's tar stream has more than {MAX_TRAILER} bytes after the end of its archive"
            )
