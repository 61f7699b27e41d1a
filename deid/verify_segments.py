"""Text inside compressed pixel data: the marker segments that open each frame.

Encoders, scanners and cameras write comments (JPEG and JPEG-LS COM, JPEG 2000 COM)
and application segments (JPEG APPn: EXIF with dates and owners, vendor notes) at the
start of a frame's codestream. Unlike the entropy-coded image data after them they are
text, so the verifier searches them with every needle, not only with the long ones the
pixel scan uses (pixels.py never decodes these frames unless they must be masked).

Part of the independent check: its own reading of the streamed bytes. It follows the
items of encapsulated pixel data (PS3.5 A.4) through chunks of any size, keeps the first
bytes of each fragment that opens a codestream until its header ends (JPEG: start of
scan; JPEG 2000: first tile part), and hands each text segment to a callback.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

# A frame's header segments lie in the first bytes of its fragment; APPn segments are
# at most 64 KiB each. Beyond this the rest is left to the pixel scan.
MAX_HEADER = 1024 * 1024
_ITEM = (0xFFFE, 0xE000)
_ITEM_HEAD = struct.Struct("<HHI")
_JPEG_SOI = b"\xff\xd8"
_J2K_SOC = b"\xff\x4f"
_JPEG_COMMENT = 0xFE
_JPEG_APPS = range(0xE0, 0xF0)
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI
_JPEG_SOS = 0xDA
_J2K_COMMENT = 0x64
_J2K_SOT = 0x90

# (what the segment is, its payload) -> None; the callback raises to reject the file.
Found = Callable[[str, bytes], None]


class SegmentReader:
    """feed() the value bytes of an encapsulated pixel data element, in order."""

    def __init__(self, found: Found) -> None:
        self._found = found
        self._head = bytearray()  # an item header being read
        self._left = 0  # bytes of the current fragment still to come
        self._prefix: bytearray | None = None  # the fragment's first bytes, while needed
        self._stopped = False  # not items: nothing more to follow

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        while view.nbytes and not self._stopped:
            if self._left == 0:
                view = self._read_item_head(view)
                continue
            take = min(self._left, view.nbytes)
            if self._prefix is not None:
                room = MAX_HEADER - len(self._prefix)
                self._prefix += view[:min(take, room)]
                self._examine(final=take == self._left or len(self._prefix) >= MAX_HEADER)
            view = view[take:]
            self._left -= take

    def _read_item_head(self, view: memoryview) -> memoryview:
        need = _ITEM_HEAD.size - len(self._head)
        self._head += view[:need]
        if len(self._head) == _ITEM_HEAD.size:
            group, element, length = _ITEM_HEAD.unpack(self._head)
            self._head.clear()
            if (group, element) != _ITEM or length == 0xFFFFFFFF:
                self._stopped = True  # the copy's own checks judge the structure
            else:
                self._left = length
                self._prefix = bytearray() if length else None
        return view[need:]

    def _examine(self, final: bool) -> None:
        """Report the fragment's text segments once its header is complete (or cut)."""
        prefix = self._prefix
        assert prefix is not None
        if len(prefix) < 2:
            if final:
                self._prefix = None
            return
        start = bytes(prefix[:2])
        if start not in (_JPEG_SOI, _J2K_SOC):
            self._prefix = None  # an offset table, or a frame's later fragment
            return
        segments, complete = (_jpeg_segments if start == _JPEG_SOI else _j2k_segments)(prefix)
        if complete or final:
            self._prefix = None
            for kind, payload in segments:
                self._found(kind, payload)


def _jpeg_segments(data: bytearray) -> tuple[list[tuple[str, bytes]], bool]:
    """(COM and APPn payloads, whether the header is complete) of a JPEG or JPEG-LS
    codestream's start."""
    found: list[tuple[str, bytes]] = []
    pos, end = 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            return found, True  # not a marker: nothing more to read as segments
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _JPEG_SOS:
            return found, True
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if pos + 4 > end:
            return found, False
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 2 + length > end:
            return found, False
        if marker == _JPEG_COMMENT:
            found.append(("a JPEG comment", bytes(data[pos + 4:pos + 2 + length])))
        elif marker in _JPEG_APPS:
            found.append((f"a JPEG APP{marker - 0xE0} segment", bytes(data[pos + 4:pos + 2 + length])))
        pos += 2 + max(length, 2)
    return found, False


def _j2k_segments(data: bytearray) -> tuple[list[tuple[str, bytes]], bool]:
    """(COM payloads, whether the main header is complete) of a JPEG 2000 codestream's
    start (HTJ2K included)."""
    found: list[tuple[str, bytes]] = []
    pos, end = 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            return found, True
        marker = data[pos + 1]
        if marker == _J2K_SOT:
            return found, True
        if pos + 4 > end:
            return found, False
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 2 + length > end:
            return found, False
        if marker == _J2K_COMMENT:  # Rcom (2 bytes: text or binary), then the comment
            found.append(("a JPEG 2000 comment", bytes(data[pos + 6:pos + 2 + length])))
        pos += 2 + max(length, 2)
    return found, False
