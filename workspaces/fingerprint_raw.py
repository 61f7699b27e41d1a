"""The byte-level path of the per-buyer fingerprint (fingerprint.py).

Building pydicom data sets, converting every value and writing them back cost about
3 ms per file, ten times the copy itself. Delivered files are the de-identifier's
output, almost always explicit VR little endian: their header is split into raw
elements (deid/raw.py), only the UI values that change are decoded and encoded again,
the private block is two elements added in tag order, and the pixel data is copied as
bytes. The output is byte for byte what the pydicom path writes (the tests compare the
two on every fixture this path takes); anything it does not take returns None and the
pydicom path handles it.
"""
from __future__ import annotations

from typing import IO, BinaryIO

from pydicom.uid import UID_dictionary

from deid.raw import Element, NotRaw, file_header, pad, read_header
from deid.stream import write_parts
from deid.uids import remap_uid

_MEDIA_SOP_INSTANCE = 0x00020003
_META_GROUP_LENGTH = 0x00020000
_STUDY, _SERIES, _SOP = 0x0020000D, 0x0020000E, 0x00080018


def fingerprint_raw(fp: BinaryIO, dst: IO[bytes], *, key: bytes, class_uid_tags: frozenset[int],
                    private_group: int, creator: str, marker_element: int,
                    marker: str) -> tuple[str, str, str] | None:
    """Write the fingerprinted copy of the file at fp (position 0) to dst and return its
    (study, series, SOP instance) UIDs; None, with nothing written, when the file is not
    one this path takes."""
    try:
        parsed = read_header(fp)
    except NotRaw:
        return None
    group_start, group_end = private_group << 16, (private_group + 1) << 16
    if any(group_start <= e.tag < group_end for e in parsed.elements):
        return None  # a block is there already: the pydicom path picks the free slot
    try:
        elements = _remapped(parsed.elements, key, class_uid_tags)
        meta = [_remapped_meta(e, key) for e in parsed.meta if e.tag != _META_GROUP_LENGTH]
    except (UnicodeError, NotRaw):
        return None
    block = [Element(group_start | 0x0010, "LO", pad(creator.encode("ascii"), "LO")),
             Element(group_start | (0x10 << 8) | marker_element, "LO", pad(marker.encode("ascii"), "LO"))]
    elements = sorted([*elements, *block], key=lambda e: e.tag)
    try:
        header = file_header(meta, elements)
    except NotRaw:
        return None
    write_parts(fp, parsed.pixel, header, b"", None, dst)
    top = {e.tag: e for e in elements}
    return tuple(_uid_text(top.get(tag)) for tag in (_STUDY, _SERIES, _SOP))  # type: ignore[return-value]


def _uid_text(element: Element | None) -> str:
    return element.value.decode("ascii").strip(" \x00") if element is not None else ""


def _remapped_meta(element: Element, key: bytes) -> Element:
    if element.tag != _MEDIA_SOP_INSTANCE:
        return element
    uid = _uid_text(element)
    return Element(element.tag, "UI", pad(remap_uid(uid, key).encode("ascii"), "UI")) if uid else element


def _remapped(elements: list[Element], key: bytes, class_uid_tags: frozenset[int]) -> list[Element]:
    """A copy of elements with instance UIDs remapped, at every depth (as fingerprint.py's
    _remap_values: private elements keep theirs, class and syntax UIDs are kept)."""
    out = []
    for element in elements:
        if element.items is not None:
            items = [_remapped(item, key, class_uid_tags) for item in element.items]
            out.append(Element(element.tag, element.vr, items=items))
        elif element.vr == "UI" and element.value and not (element.tag >> 16) % 2 \
                and element.tag not in class_uid_tags:
            out.append(_remapped_uids(element, key))
        else:
            out.append(element)
    return out


def _remapped_uids(element: Element, key: bytes) -> Element:
    values = [v.strip().rstrip("\x00") for v in element.value.decode("ascii").split("\\")]
    mapped = [remap_uid(v, key) if v and v not in UID_dictionary else v for v in values]
    if mapped == values:
        return element
    if not all(values):
        raise NotRaw  # an empty value inside a list: pydicom's reading of it decides
    return Element(element.tag, "UI", pad("\\".join(mapped).encode("ascii"), "UI"))
