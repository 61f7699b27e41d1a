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
    # Only for byte ranges (zip_stream's `first`/`last`): the member's bytes from an offset
    # inside it (default: chunks() with the head dropped), and its CRC-32 without writing it
    # (a stored value, or one read of this member; default: one pass over chunks()), needed
    # when a range starts inside its data or leaves it out but includes the central directory.
    chunks_from: Callable[[int], Iterable[bytes]] | None = None
    crc32: Callable[[], int] | None = None
    # Told the CRC-32 the writer computed while writing the whole member (to store it).
    crc_seen: Callable[[int], None] | None = None


def _member_crc(member: Member) -> int:
    if member.crc32 is not None:
        return member.crc32()
    crc = 0
    for chunk in member.chunks():
        crc = zlib.crc32(chunk, crc)
    return crc


def _member_from(member: Member, skip: int) -> Iterable[bytes]:
    if member.chunks_from is not None:
        yield from member.chunks_from(skip)
        return
    for chunk in member.chunks():
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield chunk[skip:] if skip else chunk
        skip = 0


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


@dataclass(frozen=True)
class ZipPlan:
    """Where an archive's parts lie, from names and sizes alone (CRC values change no
    length). Offsets are absolute (they include `start_offset`); `length` is the number of
    bytes zip_stream yields for the whole archive."""
    entries: int
    central_offset: int
    central_size: int
    start_offset: int
    length: int


def _layout(name: bytes, size: int, offset: int, when: tuple[int, int]) -> tuple[bytes, int, int]:
    """One member's local header, and the lengths of its data descriptor and central record
    (which do not depend on its CRC): the one place both zip_plan and zip_stream size a member."""
    return (local_header(name, size, when), len(data_descriptor(0, size)),
            len(central_record(name, size, 0, offset, when)))


def zip_plan(members: Iterable[Member], *, modified: datetime, start_offset: int = 0) -> ZipPlan:
    """The layout zip_stream gives `members`, without opening any of them."""
    when = dos_time(modified)
    offset, entries, central = start_offset, 0, 0
    for member in members:
        header, descriptor, record = _layout(member.name.encode("utf-8"), member.size, offset, when)
        offset += len(header) + member.size + descriptor
        central += record
        entries += 1
    end = len(end_records(entries=entries, central_size=central, central_offset=offset))
    return ZipPlan(entries=entries, central_offset=offset, central_size=central, start_offset=start_offset,
                   length=offset + central + end - start_offset)


def _closing(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Iterate `chunks` and close it (a storage file) even when the caller stops early."""
    iterator = iter(chunks)
    try:
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def zip_stream(members: Iterable[Member], *, modified: datetime, start_offset: int = 0,
               first: int = 0, last: int | None = None, plan: ZipPlan | None = None) -> Iterator[bytes]:
    """Yield a ZIP archive of `members`, in order, as a stream of byte strings.

    `members` is consumed lazily: a member's bytes are fully written before the next member
    is asked for, so a generator may build later members from what earlier ones read.
    Raises ArchiveError when a member yields more or fewer bytes than its `size` (the
    archive would be corrupt; the caller's response ends there).
    `start_offset` is where the archive's first byte sits in the output (zip readers accept
    a prefix); tests use it to reach offsets past 4 GiB without writing 4 GiB.

    With `first`/`last` (inclusive, counted from the stream's first byte) only those bytes
    come out, and `plan` (zip_plan of the same members) is required. Members wholly before
    the range are not opened; the one the range starts in is read from that offset
    (Member.chunks_from), so a resumed download costs what it sends, not what it skips. The
    CRC-32s the range needs but did not stream (that member's data descriptor; every
    skipped member's central record, when the range reaches the central directory) come
    from Member.crc32. Iteration stops once the range is served.
    """
    ranged = first != 0 or last is not None
    if ranged and plan is None:
        raise ValueError("a byte range needs the archive's plan")
    when = dos_time(modified)
    begin = start_offset + first
    stop = None if last is None else start_offset + last + 1  # absolute, exclusive
    need_central = plan is None or stop is None or stop > plan.central_offset

    def cut(data: bytes, at: int) -> bytes:
        """The part of `data`, placed at absolute offset `at`, inside [begin, stop)."""
        low = max(begin - at, 0)
        high = len(data) if stop is None else min(len(data), stop - at)
        if low == 0 and high == len(data):
            return data
        return data[low:high] if high > low else b""

    offset, entries = start_offset, 0
    with tempfile.SpooledTemporaryFile(max_size=CENTRAL_IN_MEMORY) as central:
        for member in members:
            if stop is not None and offset >= stop and not need_central:
                return  # the range ended inside the members
            name = member.name.encode("utf-8")
            header, descriptor_size, _ = _layout(name, member.size, offset, when)
            data_at = offset + len(header)
            data_end = data_at + member.size
            member_end = data_end + descriptor_size
            crc: int | None = None
            if member_end > begin and (stop is None or offset < stop):
                if piece := cut(header, offset):
                    yield piece
                if data_end > begin and (stop is None or data_at < stop):
                    skip = max(begin - data_at, 0)
                    running, written = 0, skip
                    source = member.chunks() if skip == 0 else _member_from(member, skip)
                    for chunk in _closing(source):
                        if not chunk:
                            continue
                        at = data_at + written
                        written += len(chunk)
                        if written > member.size:
                            raise ArchiveError(f"member {entries} is longer than its declared {member.size} bytes")
                        if skip == 0:
                            running = zlib.crc32(chunk, running)
                        if piece := cut(chunk, at):
                            yield piece
                        if stop is not None and data_at + written >= stop:
                            break
                    else:
                        if written != member.size:
                            raise ArchiveError(f"member {entries} has {written} bytes, not the declared "
                                               f"{member.size}")
                        if skip == 0:
                            crc = running
                            if member.crc_seen is not None:
                                member.crc_seen(crc)
                elif member.size == 0:
                    crc = 0
                if stop is None or data_end < stop:  # the data descriptor is in the range
                    if crc is None:
                        crc = _member_crc(member)
                    yield cut(data_descriptor(crc, member.size), data_end)
            if need_central:
                if crc is None:
                    crc = _member_crc(member)
                central.write(central_record(name, member.size, crc, offset, when))
            offset = member_end
            entries += 1
        if not need_central:
            return
        central_size = central.tell()
        central.seek(0)
        at = offset
        while block := central.read(_COPY):
            if piece := cut(block, at):
                yield piece
            at += len(block)
    end = end_records(entries=entries, central_size=central_size, central_offset=offset)
    if piece := cut(end, offset + central_size):
        yield piece
