"""The verifier's own reading of an output file: its elements as text, from the bytes.

Part of the independent check (verify.py): it shares no code with the engine's reader
(raw.py) or writer. It reads explicit VR little endian outputs (file meta, the data set,
sequences at any depth) and returns every value as text the way the pydicom reading
would present it for searching: text values decoded with the output's character set,
binary numbers as decimal numbers, other binary values as Latin-1. Anything it does
not expect raises Unwalkable and the verifier re-reads the output with pydicom instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PREAMBLE = 128
MAX_DEPTH = 64
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_GROUP = 0x7FE0
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_SHORT = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"})
_TEXT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                   "TM", "UC", "UI", "UR", "UT"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q", "FL": "f",
            "FD": "d", "AT": "HH"}
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_HEAD = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_VR_NAMES = {vr.encode("latin-1"): vr for vr in _LONG | _SHORT}
NUMERIC_VRS = frozenset({"IS", "DS", "DA", "TM", "DT", *_NUMBERS})
# Character sets whose text is one byte string per value (no code extensions).
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1",
           "ISO_IR 192": "utf-8"}


class Unwalkable(Exception):
    """Not an output this reader takes: re-read it with pydicom."""


@dataclass
class Walked:
    # (tag, VR, value bytes, depth) of every element but top-level pixel data.
    elements: list[tuple[int, str, bytes, int]] = field(default_factory=list)
    # (start, end) of top-level pixel data values (group 7FE0).
    pixel_spans: list[tuple[int, int]] = field(default_factory=list)
    codec: str = "latin_1"

    def text(self, vr: str, value: bytes) -> str:
        if vr in _TEXT:
            return value.decode(self.codec, errors="replace")
        if vr in _NUMBERS:
            return _numbers(vr, value)
        return value.decode("latin-1")

    def texts(self) -> list[tuple[int, bool, str]]:
        """(tag, numeric, text) per element, decoded for searching (values joined by \\)."""
        return [(tag, vr in NUMERIC_VRS, self.text(vr, value))
                for tag, vr, value, _ in self.elements]

    def values(self) -> list[tuple[int, str, list[str], int]]:
        """(tag, VR, values, depth) per element, split into values as pydicom reads them."""
        out = []
        for tag, vr, value, depth in self.elements:
            text = self.text(vr, value)
            multi = vr in _TEXT and vr not in _SINGLE_VALUED or vr in _NUMBERS
            out.append((tag, vr, text.split("\\") if multi else [text], depth))
        return out


def _numbers(vr: str, value: bytes) -> str:
    fmt = "<" + _NUMBERS[vr]
    size = struct.calcsize(fmt)
    if len(value) % size:
        return value.decode("latin-1")
    if vr == "AT":
        return "\\".join(f"{(g << 16) | e}" for g, e in struct.iter_unpack(fmt, value))
    return "\\".join(str(v[0]) for v in struct.iter_unpack(fmt, value))


class _Reader:
    def __init__(self, data: bytes, walked: Walked) -> None:
        self.data = data
        self.walked = walked

    def head(self, pos: int) -> tuple[int, str, int, int]:
        data = self.data
        if pos + 8 > len(data):
            raise Unwalkable
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if group == 0xFFFE:
            return tag, "", struct.unpack_from("<I", data, pos + 4)[0], pos + 8
        vr = data[pos + 4:pos + 6].decode("latin-1")
        if vr in _SHORT:
            return tag, vr, struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if vr in _LONG:
            if pos + 12 > len(data):
                raise Unwalkable
            return tag, vr, struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        raise Unwalkable

    def items(self, pos: int, length: int, depth: int) -> int:
        end = None if length == _UNDEFINED else pos + length
        while end is None or pos < end:
            tag, vr, item_length, pos = self.head(pos)
            if tag == _SEQ_END and end is None:
                return pos
            if tag != _ITEM or vr:
                raise Unwalkable
            item_end = None if item_length == _UNDEFINED else pos + item_length
            pos = self.data_set(pos, item_end, depth + 1)
        if pos != end:
            raise Unwalkable
        return pos

    def data_set(self, pos: int, end: int | None, depth: int, top: bool = False) -> int:
        if depth > MAX_DEPTH:
            raise Unwalkable
        data, append = self.data, self.walked.elements.append
        size = len(data)
        stop = size if end is None else end
        while pos < stop:
            # head(), inlined: this loop runs for every element of every output.
            if pos + 8 > size:
                raise Unwalkable
            group, number, vr_bytes, short_length = _HEAD.unpack_from(data, pos)
            tag = (group << 16) | number
            if group == 0xFFFE:
                if tag == _ITEM_END and end is None and not top:
                    return pos + 8
                raise Unwalkable
            vr = _VR_NAMES.get(vr_bytes)
            if vr is None:
                raise Unwalkable
            if vr in _LONG:
                if pos + 12 > size:
                    raise Unwalkable
                length, start = _U32.unpack_from(data, pos + 8)[0], pos + 12
            else:
                length, start = short_length, pos + 8
            if tag == 0x00080005 and depth:
                raise Unwalkable  # an item's own character set: leave it to pydicom
            if vr == "SQ":
                pos = self.items(start, length, depth)
                continue
            if top and group == _PIXEL_GROUP:
                pos = self.pixel(start, length)
                continue
            pos = start + length
            if length == _UNDEFINED or pos > size:
                raise Unwalkable
            if vr == "UN" and not group % 2:
                raise Unwalkable  # pydicom reads it with its dictionary VR
            append((tag, vr, data[start:pos], depth))
        if end is not None and pos != end:
            raise Unwalkable
        if end is None and not top:
            raise Unwalkable  # an undefined-length item without its delimiter
        return pos

    def pixel(self, start: int, length: int) -> int:
        if length != _UNDEFINED:
            if start + length > len(self.data):
                raise Unwalkable
            self.walked.pixel_spans.append((start, start + length))
            return start + length
        pos = start
        while True:  # encapsulated: items up to the sequence delimiter
            tag, vr, item_length, value = self.head(pos)
            if tag == _SEQ_END:
                self.walked.pixel_spans.append((start, pos))
                return value
            if tag != _ITEM or vr or item_length == _UNDEFINED:
                raise Unwalkable
            pos = value + item_length


def walk(data: bytes) -> Walked:
    """Elements of a Part 10 file (preamble, DICM, file meta, data set). ``data`` may end
    before the pixel data element (an input's header)."""
    if data[PREAMBLE:PREAMBLE + 4] != b"DICM":
        raise Unwalkable
    walked = Walked()
    reader = _Reader(data, walked)
    pos = PREAMBLE + 4
    while pos + 2 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        tag, vr, length, start = reader.head(pos)
        if not vr or vr == "SQ" or length == _UNDEFINED or start + length > len(data):
            raise Unwalkable
        walked.elements.append((tag, vr, data[start:start + length], 0))
        pos = start + length
    meta = {tag: value for tag, _, value, _ in walked.elements}
    syntax = meta.get(0x00020010, b"").decode("latin-1").strip(" \x00")
    if syntax != _EXPLICIT_LITTLE and not _encapsulated(syntax):
        raise Unwalkable
    reader.data_set(pos, None, 0, top=True)
    charset = next((v for t, _, v, _ in walked.elements if t == 0x00080005), b"")
    codec = _CODECS.get(charset.decode("latin-1").strip(" \x00"))
    if codec is None:
        raise Unwalkable
    walked.codec = codec
    return walked


def _encapsulated(syntax: str) -> bool:
    """JPEG, JPEG-LS, JPEG 2000, RLE, MPEG/HEVC: explicit VR little endian data sets."""
    return syntax.startswith(("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5"))
