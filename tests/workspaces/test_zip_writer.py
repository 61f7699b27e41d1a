"""The streaming ZIP writer (workspaces/archive.py) on its own: no database, no storage."""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from datetime import UTC, datetime

import pytest

from workspaces import archive
from workspaces.archive import ArchiveError, Member, zip_stream

WHEN = datetime(2026, 11, 23, 14, 5, 31, tzinfo=UTC)
GIB = 1024 ** 3


def members_of(files: dict[str, bytes], *, pieces: int = 3) -> list[Member]:
    """Each file handed over in several chunks, as storage hands them."""
    def chunks(data: bytes):  # noqa: ANN202
        step = max(1, len(data) // pieces)
        return [data[i:i + step] for i in range(0, len(data), step)]

    return [Member(name=name, size=len(data), chunks=lambda data=data: chunks(data)) for name, data in files.items()]


def build(files: dict[str, bytes], **kwargs) -> bytes:  # noqa: ANN003
    return b"".join(zip_stream(members_of(files), modified=WHEN, **kwargs))


FILES = {
    "order-1/data/1.2.3/1.2.3.4/1.2.3.4.5.dcm": os.urandom(70_000),
    "order-1/data/1.2.3/1.2.3.4/1.2.3.4.6.dcm": os.urandom(1),
    "order-1/data/empty.txt": b"",
    "order-1/bagit.txt": b"BagIt-Version: 1.0\n",
}


def test_python_zipfile_reads_every_member_back_byte_for_byte():
    with zipfile.ZipFile(io.BytesIO(build(FILES))) as zf:
        assert zf.testzip() is None  # every CRC checked
        assert zf.namelist() == list(FILES)
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (2026, 11, 23, 14, 5, 30)
            assert info.flag_bits & 0x08  # CRC in a data descriptor
            assert zf.read(info) == FILES[info.filename]
            assert not info.extra  # small archive: no ZIP64 fields
    assert b"PK\x06\x06" not in build(FILES)[-200:]  # and no ZIP64 end record


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_unzip_tests_it_without_errors(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(build(FILES))
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


@pytest.mark.parametrize("actual", [b"x" * 9, b"x" * 11])
def test_it_stops_when_a_members_bytes_disagree_with_its_size(actual):
    members = [Member(name="a", size=10, chunks=lambda: [actual])]
    with pytest.raises(ArchiveError):
        b"".join(zip_stream(members, modified=WHEN))


def test_offsets_past_4_gib_get_zip64_fields_that_zipfile_reads():
    # The archive is placed 5 GiB into the output (a prefix zip readers skip), so every local
    # header offset and the central directory offset pass 32 bits without writing 5 GiB.
    data = build(FILES, start_offset=5 * GIB)
    assert data[-22 - 20 - 56:-22 - 20][:4] == b"PK\x06\x06"  # ZIP64 end record, then its locator
    end64 = archive._END_64.unpack(data[-22 - 20 - 56:-22 - 20])
    assert end64[6] == end64[7] == len(FILES) and end64[9] > 5 * GIB
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        for info in zf.infolist():
            assert zf.read(info) == FILES[info.filename]
            tag, length, offset = struct.unpack("<HHQ", info.extra)
            assert (tag, length) == (0x0001, 8) and offset >= 5 * GIB  # the offset, only it


def test_a_member_over_4_gib_has_zip64_sizes_in_header_descriptor_and_directory():
    size = 5 * GIB + 7
    name = b"order-1/data/big.dcm"
    header = archive.local_header(name, size, archive.dos_time(WHEN))
    fields = archive._LOCAL.unpack(header[:30])
    assert fields[0] == 0x04034B50 and fields[1] == 45 and fields[7] == fields[8] == 0xFFFFFFFF
    assert header[30:30 + len(name)] == name
    assert struct.unpack("<HHQQ", header[30 + len(name):]) == (0x0001, 16, size, size)
    assert archive._DESCRIPTOR_64.unpack(archive.data_descriptor(0x1234, size)) == (0x08074B50, 0x1234, size, size)

    # A central directory naming that member, read by zipfile (which reads only the directory
    # to list an archive): it must come back as one 5 GiB file at offset 0.
    record = archive.central_record(name, size, 0x1234, 0, archive.dos_time(WHEN))
    fake = record + archive.end_records(entries=1, central_size=len(record), central_offset=len(header) + size + 24)
    with zipfile.ZipFile(io.BytesIO(fake)) as zf:
        (info,) = zf.infolist()
        assert (info.filename, info.file_size, info.compress_size, info.CRC) == (name.decode(), size, size, 0x1234)


def test_more_than_65535_members_get_a_zip64_end_record():
    count = 65_536
    members = [Member(name=f"f{i}", size=0, chunks=lambda: []) for i in range(count)]
    data = b"".join(zip_stream(members, modified=WHEN))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert len(names) == count and names[-1] == f"f{count - 1}"
    assert archive._END.unpack(data[-22:])[3] == 0xFFFF  # the classic count says "see ZIP64"


def test_a_central_directory_larger_than_memory_allows_goes_through_a_temporary_file(monkeypatch):
    monkeypatch.setattr(archive, "CENTRAL_IN_MEMORY", 64)
    with zipfile.ZipFile(io.BytesIO(build(FILES))) as zf:
        assert zf.testzip() is None and zf.namelist() == list(FILES)


def test_members_are_opened_one_at_a_time_in_order():
    opened: list[str] = []

    def members():  # noqa: ANN202
        for name in ("a", "b"):
            # The writer finished the previous member before asking for this one.
            assert opened == (["a"] if name == "b" else [])
            yield Member(name=name, size=1, chunks=lambda name=name: (opened.append(name), [b"z"])[1])

    with zipfile.ZipFile(io.BytesIO(b"".join(zip_stream(members(), modified=WHEN)))) as zf:
        assert zf.namelist() == ["a", "b"]


# ---- exact length and byte ranges ---------------------------------------------------------
SMALL = {"a/header.dcm": os.urandom(300), "a/one": b"x", "a/empty": b"", "b/" + "n" * 40: os.urandom(97)}


@pytest.mark.parametrize(("files", "start_offset"), [(FILES, 0), (SMALL, 0), (FILES, 5 * GIB), ({}, 0)])
def test_the_plan_gives_the_exact_length_of_the_stream(files, start_offset):
    plan = archive.zip_plan(members_of(files), modified=WHEN, start_offset=start_offset)
    data = build(files, start_offset=start_offset)
    assert plan.length == len(data)
    assert plan.entries == len(files) and plan.central_offset - start_offset + plan.central_size + 22 <= len(data)


def test_the_plan_counts_zip64_end_records_of_more_than_65535_members():
    members = [Member(name=f"f{i}", size=0, chunks=lambda: []) for i in range(65_536)]
    plan = archive.zip_plan(members, modified=WHEN)
    assert plan.length == sum(len(c) for c in zip_stream(members, modified=WHEN))


def test_every_byte_range_is_the_same_bytes_as_the_whole_archive():
    whole = build(SMALL)
    plan = archive.zip_plan(members_of(SMALL), modified=WHEN)
    size = len(whole)
    spans = [(first, None) for first in range(size)] + [(0, last) for last in range(size)]
    spans += [(first, first + width) for first in range(0, size, 7) for width in (0, 1, 29, 400) if first + width < size]
    for first, last in spans:
        part = b"".join(zip_stream(members_of(SMALL), modified=WHEN, first=first, last=last, plan=plan))
        assert part == whole[first:None if last is None else last + 1], (first, last)


def test_a_range_opens_no_member_before_it_and_reads_the_one_it_starts_in_from_there():
    files = {"a": os.urandom(5000), "b": os.urandom(5000), "c": os.urandom(10)}
    whole = build(files)
    opened, crcs_asked = [], []

    def member(name: str, data: bytes) -> Member:
        return Member(name=name, size=len(data), chunks=lambda: (opened.append((name, 0)), [data])[1],
                      chunks_from=lambda start: (opened.append((name, start)), [data[start:]])[1],
                      crc32=lambda: (crcs_asked.append(name), zlib.crc32(data))[1])

    members = [member(n, d) for n, d in files.items()]
    plan = archive.zip_plan(members, modified=WHEN)
    cut = whole.index(files["b"]) + 1234  # inside b's data
    assert b"".join(zip_stream(members, modified=WHEN, first=cut, plan=plan)) == whole[cut:]
    assert opened == [("b", 1234), ("c", 0)]  # a is never read; b only from the cut
    assert crcs_asked == ["a", "b"]  # a's central record, b's descriptor; c's CRC was streamed


def test_a_range_of_a_member_over_4_gib_reads_only_what_it_sends():
    size = 5 * GIB + 7
    sent = []

    def tail(start: int):  # noqa: ANN202
        sent.append(start)
        return [b"\0" * (size - start)]

    members = [Member(name="big.dcm", size=size, chunks=lambda: pytest.fail("read from the start"),
                      chunks_from=tail, crc32=lambda: 0x1234)]
    plan = archive.zip_plan(members, modified=WHEN)
    first = plan.length - 300
    data = b"".join(zip_stream(members, modified=WHEN, first=first, plan=plan))
    header = archive.local_header(b"big.dcm", size, archive.dos_time(WHEN))
    assert len(data) == 300 and sent == [first - len(header)]  # one ranged read, from the cut
    # the descriptor, central directory and end records: ZIP64 throughout, as the plan said
    assert data[-22:-18] == b"PK\x05\x06" and b"PK\x06\x06" in data and b"PK\x07\x08" in data
    record = data[data.index(b"PK\x01\x02"):]
    assert archive._CENTRAL.unpack(record[:46])[7] == 0x1234
