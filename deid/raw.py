"""The fast path's own reading and writing: explicit VR little endian on raw bytes.

Most uploads are ordinary explicit VR little endian files (native or encapsulated pixel
data). For those the header is split into elements straight from the bytes, values stay
bytes unless the profile changes them, and the output header is packed with struct —
no pydicom data sets are built or written. Anything unusual (another encoding, an
undefined-length value other than a sequence or the pixel data, an invalid VR, elements
after the pixel data, a header past HEADER_LIMIT) raises NotRaw and the file takes the
pydicom path, which handles every case and gives the clear error where there is one.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from deid.io import PIXEL_TAGS, PREAMBLE_LEN, PixelSpan, _pixel_span, _size
from deid.walk import MAX_DEPTH

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
# Header (everything before the pixel data) read at most this far; longer: pydicom path.
HEADER_LIMIT = 16 * 1024 * 1024
FIRST_READ = 64 * 1024
MAX_ELEMENTS = 100_000
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                      "UT", "UV"})
SHORT_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO",
                       "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"})
_HEAD = struct.Struct("<HH2s")
_HEAD_SHORT = struct.Struct("<HH2sH")
_VR_NAMES = {vr.encode("ascii"): vr for vr in LONG_VRS | SHORT_VRS}
_VR_BYTES = {vr: code for code, vr in _VR_NAMES.items()}
_LONG_HEAD = struct.Struct("<HH2sHI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ITEM_HEAD = struct.Struct("<HHI")


class NotRaw(Exception):
    """This file is left to the pydicom path."""


class _NeedMore(Exception):
    """The header goes on past the bytes read so far."""


class Element:
    """One data element: ``value`` holds the value bytes, ``items`` a sequence's items."""

    __slots__ = ("tag", "vr", "value", "items")

    def __init__(self, tag: int, vr: str, value: bytes = b"",
                 items: list[list[Element]] | None = None) -> None:
        self.tag = tag
        self.vr = vr
        self.value = value
        self.items = items

    def __repr__(self) -> str:  # tags and VRs only: values may be PHI
        return f"Element(({self.tag >> 16:04X},{self.tag & 0xFFFF:04X}) {self.vr})"


class RawFile:
    """A parsed header: file meta and data set elements, and where the pixel data lies."""

    def __init__(self, meta: list[Element], elements: list[Element], transfer_syntax: str,
                 pixel: PixelSpan | None, header: bytes) -> None:
        self.meta = meta
        self.elements = elements
        self.transfer_syntax = transfer_syntax
        self.pixel = pixel
        self.header = header  # the file's bytes up to the pixel data element


class _Parser:
    def __init__(self, buf: bytes, complete: bool) -> None:
        self.buf = buf
        self.complete = complete  # the buffer holds the whole file
        self.count = 0

    def need(self, end: int) -> None:
        if end > len(self.buf):
            if self.complete:
                raise NotRaw  # truncated: the pydicom path names the problem
            raise _NeedMore

    def element_head(self, pos: int) -> tuple[int, str, int, int]:
        """(tag, VR, length, value start) of the element at pos."""
        self.need(pos + 8)
        group, element, vr_bytes = _HEAD.unpack_from(self.buf, pos)
        tag = (group << 16) | element
        if group == 0xFFFE:
            return tag, "", _U32.unpack_from(self.buf, pos + 4)[0], pos + 8
        try:
            vr = vr_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise NotRaw from None
        if vr in SHORT_VRS:
            return tag, vr, _U16.unpack_from(self.buf, pos + 6)[0], pos + 8
        if vr in LONG_VRS:
            self.need(pos + 12)
            return tag, vr, _U32.unpack_from(self.buf, pos + 8)[0], pos + 12
        raise NotRaw  # not explicit VR, or an invalid VR

    def data_set(self, pos: int, end: int | None, depth: int, *,
                 top: bool = False) -> tuple[list[Element], int, int | None]:
        """Elements from pos up to end (None: up to an item delimiter). Returns the
        elements, the position after them, and at top level the pixel element's start."""
        if depth > MAX_DEPTH:
            raise NotRaw
        elements: list[Element] = []
        last = -1
        buf, size = self.buf, len(self.buf)
        while end is None or pos < end:
            if top and pos == size and self.complete:
                return elements, pos, None  # no pixel data at all
            # element_head(), inlined: this loop runs for every element of every file.
            if pos + 8 > size:
                self.need(pos + 8)
            group, number, vr_bytes, short_length = _HEAD_SHORT.unpack_from(buf, pos)
            tag = (group << 16) | number
            if group == 0xFFFE:
                if tag == ITEM_END and end is None:
                    return elements, pos + 8, None
                raise NotRaw  # stray delimiter
            vr = _VR_NAMES.get(vr_bytes)
            if vr is None:
                raise NotRaw  # not explicit VR, or an invalid VR
            if vr in LONG_VRS:
                self.need(pos + 12)
                length, start = _U32.unpack_from(buf, pos + 8)[0], pos + 12
            else:
                length, start = short_length, pos + 8
            if tag <= last:
                raise NotRaw  # elements out of order / repeated
            last = tag
            self.count += 1
            if self.count > MAX_ELEMENTS:
                raise NotRaw
            if top and tag in PIXEL_TAGS:
                return elements, pos, pos
            if vr == "SQ":
                items, pos = self.sequence(start, length, depth)
                elements.append(Element(tag, vr, items=items))
                continue
            if length == UNDEFINED:
                raise NotRaw
            pos = start + length
            if pos > size:
                self.need(pos)
            elements.append(Element(tag, vr, buf[start:pos]))
        if pos != end:
            raise NotRaw
        return elements, pos, None

    def sequence(self, pos: int, length: int, depth: int) -> tuple[list[list[Element]], int]:
        end = None if length == UNDEFINED else pos + length
        if end is not None:
            self.need(end)
        items: list[list[Element]] = []
        while end is None or pos < end:
            self.need(pos + 8)
            group, element, item_length = _ITEM_HEAD.unpack_from(self.buf, pos)
            tag = (group << 16) | element
            pos += 8
            if tag == SEQUENCE_END and end is None:
                return items, pos
            if tag != ITEM:
                raise NotRaw
            item_end = None if item_length == UNDEFINED else pos + item_length
            item, pos, _ = self.data_set(pos, item_end, depth + 1)
            items.append(item)
        if pos != end:
            raise NotRaw
        return items, pos


def _meta(parser: _Parser) -> tuple[list[Element], int]:
    """File meta elements (group 0002) after the preamble and DICM."""
    pos = PREAMBLE_LEN + 4
    meta: list[Element] = []
    while True:
        parser.need(pos + 8)
        if _U16.unpack_from(parser.buf, pos)[0] != 0x0002:
            return meta, pos
        tag, vr, length, start = parser.element_head(pos)
        if not vr or vr == "SQ" or length == UNDEFINED:
            raise NotRaw
        parser.need(start + length)
        meta.append(Element(tag, vr, parser.buf[start:start + length]))
        pos = start + length


def text(element: Element | None) -> str:
    if element is None:
        return ""
    return element.value.decode("latin-1").strip(" \x00")


def read_header(fp: BinaryIO) -> RawFile:
    """Parse the header of the Part 10 file at fp's position (fp at 0). NotRaw when
    the file is not one the fast path takes."""
    size = _size(fp)
    want = min(size, FIRST_READ)
    while True:
        fp.seek(0)
        buf = fp.read(want)
        parser = _Parser(buf, complete=len(buf) >= size)
        if len(buf) < PREAMBLE_LEN + 4 or buf[PREAMBLE_LEN:PREAMBLE_LEN + 4] != b"DICM":
            raise NotRaw
        try:
            meta, pos = _meta(parser)
            syntax = text(next((e for e in meta if e.tag == 0x00020010), None))
            if not _fast_syntax(syntax):
                raise NotRaw
            elements, _, pixel_start = parser.data_set(pos, None, 0, top=True)
        except _NeedMore:
            if want >= min(size, HEADER_LIMIT):
                raise NotRaw from None
            want = min(size, HEADER_LIMIT, want * 4)
            continue
        except (struct.error, IndexError):
            raise NotRaw from None
        break
    span = None
    if pixel_start is not None:
        fp.seek(pixel_start)
        try:
            span = _pixel_span(fp, False, True, size)
        except Exception:  # noqa: BLE001 - malformed pixel data: the pydicom path says why
            raise NotRaw from None
        end = span.end + (8 if span.encapsulated else 0)
        if end != size:
            raise NotRaw  # trailing elements or padding after the pixel data
    return RawFile(meta, elements, syntax, span,
                   buf[:pixel_start] if pixel_start is not None else buf)


def _fast_syntax(uid: str) -> bool:
    """Explicit VR little endian, plain or with encapsulated (compressed) pixel data."""
    if uid == EXPLICIT_LITTLE:
        return True
    from pydicom.uid import UID  # the registry of compressed syntaxes

    ts = UID(uid)
    return (ts.is_transfer_syntax and ts.is_compressed and not ts.is_deflated
            and ts.is_little_endian and not ts.is_implicit_VR)


# --- writing ---------------------------------------------------------------------------

def encode(elements: list[Element], out: bytearray) -> None:
    """Append elements (explicit VR little endian, sequences with defined lengths, as
    pydicom writes them) to out."""
    for element in elements:
        tag, vr = element.tag, element.vr
        if element.items is not None:
            body = bytearray()
            for item in element.items:
                item_bytes = bytearray()
                encode(item, item_bytes)
                body += _ITEM_HEAD.pack(0xFFFE, 0xE000, len(item_bytes))
                body += item_bytes
            value: bytes | bytearray = body
        else:
            value = element.value
            if len(value) % 2:  # invalid but common in uploads: pad as pydicom writes it
                if vr not in _PADDABLE:
                    raise NotRaw  # binary numbers of odd length: the pydicom path judges them
                value = pad(value, vr)
        length = len(value)
        if vr in LONG_VRS:
            if length >= UNDEFINED:
                raise NotRaw
            out += _LONG_HEAD.pack(tag >> 16, tag & 0xFFFF, _VR_BYTES[vr], 0, length)
        else:
            if length > 0xFFFF:
                raise NotRaw  # does not fit a short VR: the pydicom path says so
            out += _HEAD_SHORT.pack(tag >> 16, tag & 0xFFFF, _VR_BYTES[vr], length)
        out += value


# VRs whose odd-length values get one padding byte (text: a space; UI, OB, UN: NUL).
_PADDABLE = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT", "OB", "UN"})


def pad(value: bytes, vr: str) -> bytes:
    """Values have even length: UIs are padded with NUL, other text with a space."""
    if len(value) % 2:
        return value + (b"\x00" if vr in ("UI", "OB", "UN") else b" ")
    return value


def file_header(meta: list[Element], elements: list[Element]) -> bytes:
    """Zeroed preamble (CVE-2019-11687), DICM, file meta with its group length, data set."""
    meta_bytes = bytearray()
    encode(meta, meta_bytes)
    out = bytearray(b"\x00" * PREAMBLE_LEN + b"DICM")
    out += struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta_bytes))
    out += meta_bytes
    encode(elements, out)
    return bytes(out)
