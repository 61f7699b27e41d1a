"""A ZIP writer that streams: members go out as they are read, nothing is seeked or buffered.

Entries are STORED (DICOM pixel data barely compresses, and storing keeps the web process's
CPU for copying). Each member's size is known up front (the delivery's file rows), so the
local header carries it; the CRC-32 is only known once the bytes went by, so it follows the
data in a data descriptor (general purpose flag bit 3). ZIP64 fields are written where a
size, an offset or the entry count needs them, and only there, so small archives stay plain
ZIP for old readers.

Memory stays flat whatever the archive's size: one chunk at a time, plus the central
directory, which is kept in a temporary file once it outgrows CENTRAL_IN_MEMORY (it holds
names and numbers only, ~200 bytes a member, never member data).

No Django here: the caller supplies the members and their bytes.
"""
from __future__ import annotations

import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

CENTRAL_IN_MEMORY = 4 * 1024 * 1024
_COPY = 1024 * 1024

_LIMIT_32 = 0xFFFFFFFF
_LIMIT_16 = 0xFFFF
_FLAGS = 0x0008 | 0x0800  # sizes/CRC in a data descriptor; names are UTF-8
_VERSION_PLAIN, _VERSION_ZIP64 = 20, 45
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix, so the file mode below is read
_FILE_MODE = 0o100644 << 16

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR_32 = struct.Struct("<IIII")
_DESCRIPTOR_64 = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END_64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR_64 = struct.Struct("<IIQI")


class ArchiveError(Exception):
    """The stream cannot go on (a member's bytes disagree with its declared size)."""


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive, "/"-separated
    size: int
    chunks: Callable[[], Iterable[bytes]]  # opened only when the member's turn comes


def dos_time(moment: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format; years before 1980 are clamped to 1980."""
    year = max(moment.year, 1980)
    return ((moment.hour << 11) | (moment.minute << 5) | (moment.second // 2),
            ((year - 1980) << 9) | (moment.month << 5) | moment.day)


def local_header(name: bytes, size: int, when: tuple[int, int]) -> bytes:
    """The local file header; a ZIP64 extra carries the sizes when they pass 32 bits (and
    then the data descriptor has 8-byte sizes too)."""
    if size >= _LIMIT_32:
        extra = struct.pack("<HHQQ", 0x0001, 16, size, size)
        shown, version = _LIMIT_32, _VERSION_ZIP64
    else:
        extra, shown, version = b"", size, _VERSION_PLAIN
    return _LOCAL.pack(0x04034B50, version, _FLAGS, 0, when[0], when[1], 0, shown, shown,
                       len(name), len(extra)) + name + extra


def data_descriptor(crc: int, size: int) -> bytes:
    if size >= _LIMIT_32:
        return _DESCRIPTOR_64.pack(0x08074B50, crc, size, size)
    return _DESCRIPTOR_32.pack(0x08074B50, crc, size, size)


def central_record(name: bytes, size: int, crc: int, offset: int, when: tuple[int, int]) -> bytes:
    """One central directory entry. The ZIP64 extra holds, in the order the format fixes,
    only the fields whose 32-bit slot says 0xFFFFFFFF."""
    fields: list[int] = []
    if size >= _LIMIT_32:
        fields += [size, size]
    if offset >= _LIMIT_32:
        fields.append(offset)
    extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
    version = _VERSION_ZIP64 if fields else _VERSION_PLAIN
    return _CENTRAL.pack(0x02014B50, _MADE_BY, version, _FLAGS, 0, when[0], when[1], crc,
                         min(size, _LIMIT_32), min(size, _LIMIT_32), len(name), len(extra), 0, 0, 0,
                         _FILE_MODE, min(offset, _LIMIT_32)) + name + extra


def end_records(*, entries: int, central_size: int, central_offset: int) -> bytes:
    """End of central directory, preceded by the ZIP64 record and locator when the entry
    count, the directory's size or its offset does not fit the classic fields."""
    out = b""
    if entries >= _LIMIT_16 or central_size >= _LIMIT_32 or central_offset >= _LIMIT_32:
        end64_offset = central_offset + central_size
        out += _END_64.pack(0x06064B50, _END_64.size - 12, _MADE_BY, _VERSION_ZIP64, 0, 0, entries, entries,
                            central_size, central_offset)
        out += _LOCATOR_64.pack(0x07064B50, 0, end64_offset, 1)
    out += _END.pack(0x06054B50, 0, 0, min(entries, _LIMIT_16), min(entries, _LIMIT_16),
                     min(central_size, _LIMIT_32), min(central_offset, _LIMIT_32), 0)
    return out


def zip_stream(members: Iterable[Member], *, modified: datetime, start_offset: int = 0) -> Iterator[bytes]:
    """Yield a ZIP archive of `members`, in order, as a stream of byte strings.

    `members` is consumed lazily: a member's bytes are fully written before the next member
    is asked for, so a generator may build later members from what earlier ones read.
    Raises ArchiveError when a member yields more or fewer bytes than its `size` (the
    archive would be corrupt; the caller's response ends there).
    `start_offset` is where the archive's first byte sits in the output (zip readers accept
    a prefix); tests use it to reach offsets past 4 GiB without writing 4 GiB.
    """
    when = dos_time(modified)
    offset, entries = start_offset, 0
    with tempfile.SpooledTemporaryFile(max_size=CENTRAL_IN_MEMORY) as central:
        for member in members:
            name = member.name.encode("utf-8")
            header = local_header(name, member.size, when)
            yield header
            crc, written = 0, 0
            for chunk in member.chunks():
                if not chunk:
                    continue
                written += len(chunk)
                if written > member.size:
                    raise ArchiveError(f"member {entries} is longer than its declared {member.size} bytes")
                crc = zlib.crc32(chunk, crc)
                yield chunk
            if written != member.size:
                raise ArchiveError(f"member {entries} has {written} bytes, not the declared {member.size}")
            descriptor = data_descriptor(crc, member.size)
            yield descriptor
            central.write(central_record(name, member.size, crc, offset, when))
            offset += len(header) + member.size + len(descriptor)
            entries += 1
        central_size = central.tell()
        central.seek(0)
        while block := central.read(_COPY):
            yield block
    yield end_records(entries=entries, central_size=central_size, central_offset=offset)
