"""Safe handling of uploaded zip archives.

Never trust the central directory's sizes (a member whose header lies about its size, or
with a bad CRC, lists fine and fails only when read): the listing is checked up front for
a quick, clear refusal, and the real bytes are counted again while extracting.
"""
from __future__ import annotations

import posixpath
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO

from catalog.exceptions import ArchiveMemberError, UnsafeArchiveError


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


@dataclass(frozen=True)
class Member:
    """One file of an archive. ``index`` is its place among the archive's files (skipped
    entries excluded): stable from run to run, so a re-run finds what it already did."""

    index: int
    name: str
    info: zipfile.ZipInfo


def list_members(archive: zipfile.ZipFile) -> list[Member]:
    files = [info for info in archive.infolist() if not _is_skippable(info)]
    return [Member(index=i, name=info.filename, info=info) for i, info in enumerate(files)]


def copy_member(archive: zipfile.ZipFile, member: Member, out: IO[bytes], *, max_member_bytes: int,
                budget: list[int], chunk: int = 1024 * 1024) -> int:
    """Copy one member's real bytes into ``out``; return how many there were.

    Counts what comes out, never trusting the header (it may lie about the size): more than
    ``max_member_bytes``, or a size other than the one declared, fails this member
    (ArchiveMemberError), as do damaged data (bad CRC, broken deflate stream, early end).
    Spending the archive's whole ``budget`` (one-item list, shared by all members) refuses
    the archive (UnsafeArchiveError). Messages never quote the member's name: zipfile's own
    do, and names may hold PHI.
    """
    read = 0
    try:
        with archive.open(member.info) as stream:
            while data := stream.read(chunk):
                read += len(data)
                budget[0] -= len(data)
                if read > max_member_bytes:
                    raise ArchiveMemberError(f"expands past the limit of {max_member_bytes} bytes per file")
                if budget[0] < 0:
                    raise UnsafeArchiveError("zip expands past the total size limit; archive rejected")
                out.write(data)
    except (ArchiveMemberError, UnsafeArchiveError):
        raise
    except zipfile.BadZipFile as exc:
        damaged = "its data is damaged (CRC check failed)" if "CRC" in str(exc) else "its zip header is damaged"
        raise ArchiveMemberError(damaged) from None
    except zlib.error:
        raise ArchiveMemberError("its compressed data is damaged") from None
    except EOFError:
        raise ArchiveMemberError("its data ends early") from None
    except (RuntimeError, NotImplementedError):
        raise ArchiveMemberError("it is encrypted or uses an unsupported compression method") from None
    except (ValueError, OSError, struct.error):
        raise ArchiveMemberError("it cannot be read from the archive") from None
    if read != member.info.file_size:
        # zipfile stops at the end of the stored data without complaint: the header lied.
        raise ArchiveMemberError(f"its header declares {member.info.file_size} bytes but it holds {read}")
    return read
