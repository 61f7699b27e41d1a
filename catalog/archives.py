"""Safe handling of uploaded zip archives.

Never trust the central directory's sizes (HAZARDS.md): the listing is checked up front for
a quick, clear refusal, and the real bytes are counted again while extracting.
"""
from __future__ import annotations

import posixpath
import zipfile
from dataclasses import dataclass
from typing import IO, Iterator

from catalog.exceptions import UnsafeArchiveError


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_total_bytes: int
    max_member_bytes: int
    max_ratio: int


def _check_member_name(name: str) -> None:
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeArchiveError(f"zip member {name!r} has an absolute path; archive rejected")
    if ".." in normalized.split("/"):
        raise UnsafeArchiveError(f"zip member {name!r} points outside the archive ('..'); archive rejected")


def _is_skippable(info: zipfile.ZipInfo) -> bool:
    base = posixpath.basename(info.filename.replace("\\", "/"))
    return info.is_dir() or base.startswith(".") or info.filename.startswith("__MACOSX/")


def validate_archive(fileobj: IO[bytes], limits: ArchiveLimits) -> int:
    """Check the listing; return the number of member files. Raises UnsafeArchiveError."""
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UnsafeArchiveError(f"not a readable zip archive ({exc.__class__.__name__})") from None
    finally:
        fileobj.seek(0)
    members = [info for info in infos if not _is_skippable(info)]
    for info in infos:
        _check_member_name(info.filename)
    if len(members) > limits.max_members:
        raise UnsafeArchiveError(f"zip holds {len(members)} files; the limit is {limits.max_members}")
    declared = sum(info.file_size for info in members)
    if declared > limits.max_total_bytes:
        raise UnsafeArchiveError(
            f"zip expands to {declared} bytes; the limit is {limits.max_total_bytes} bytes")
    for info in members:
        if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            raise UnsafeArchiveError(
                f"zip member {info.filename!r} has a compression ratio over {limits.max_ratio}:1; archive rejected")
    if not members:
        raise UnsafeArchiveError("zip archive holds no files")
    return len(members)


class _CountingReader:
    """Wraps a member stream and stops once more bytes come out than allowed."""

    def __init__(self, stream: IO[bytes], name: str, member_cap: int, budget: list[int]) -> None:
        self._stream, self._name, self._cap, self._budget = stream, name, member_cap, budget
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._read += len(data)
        self._budget[0] -= len(data)
        if self._read > self._cap:
            raise UnsafeArchiveError(f"zip member {self._name!r} expands past {self._cap} bytes; archive rejected")
        if self._budget[0] < 0:
            raise UnsafeArchiveError("zip expands past the total size limit; archive rejected")
        return data


def iter_members(fileobj: IO[bytes], limits: ArchiveLimits) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (member name, capped reader) for each file; re-checks every limit on real bytes."""
    validate_archive(fileobj, limits)
    budget = [limits.max_total_bytes]
    with zipfile.ZipFile(fileobj) as archive:
        for info in archive.infolist():
            if _is_skippable(info):
                continue
            with archive.open(info) as stream:
                yield info.filename, _CountingReader(stream, info.filename, limits.max_member_bytes, budget)  # type: ignore[misc]
