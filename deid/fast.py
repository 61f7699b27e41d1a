"""The fast path: the profile applied to raw elements, the pixel data copied as bytes.

engine.py applies the profile to pydicom data sets; building those, converting every
value and writing them back costs most of the time per file. Here the header is split
into raw elements (raw.py), values the profile keeps stay the input's bytes, and only
the values the profile changes (UIDs, dates, cleaned text, ages) are decoded — with
pydicom's converters or the same reading of simple values, so they read exactly as on
the pydicom path — and encoded again. The decisions (pixels.decide) read the top-level
values the same way; the descriptor scrubber's values and the verifier's needles come
from one pass over the parsed input. Changed values are remembered per key, patient and
series: the files of a series repeat most of them.

Same rules, same output values, same report as the pydicom path: the tests compare both
paths on every fixture the fast path takes. ``deidentify_raw`` returns None for any file
it does not take (other encodings and character sets, masking, odd structure), and the
engine then runs the pydicom path.
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, BinaryIO

from pydicom import config as pydicom_config
from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.values import convert_value

from deid import dates, pixels, stream, uids
from deid.clean import Scrubber, identifier_tags
from deid.decide import (
    A_DROP,
    A_KEEP,
    A_OVERLAY,
    A_PRIVATE_REMOVED,
    A_REMOVE,
    CAP_AGE,
    CLEAN_PATIENT_TEXT,
    CLEAN_TEXT,
    DROP,
    DUMMY,
    EMPTY,
    KEEP,
    PSEUDONYM,
    RECURSE,
    REMAP,
    REMOVE,
    SHIFT_DATE,
    Action,
    decide,
)
from deid.errors import BurnedInAnnotationError
from deid.io import DICOMDIR_SOP_CLASS
from deid.profile import Options, describe, method_codes
from deid.raw import Element, NotRaw, RawFile, encode, file_header, pad, read_header, text
from deid.report import DeidReport, build_metadata
from deid.values import (
    DUMMY_VALUES,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    PATIENT_ID,
    PATIENT_NAME,
    cap_age,
    cleaned_texts,
    patient_seed,
    shifted_dates,
    values_of,
)
from deid.verify import needles_from_walked, verify_output
from deid.verify_stream import PixelScanner
from deid.verify_walk import Unwalkable, Walked
from deid.walk import MAX_DEPTH

# SpecificCharacterSet -> Python codec for values we write. Other character sets (code
# extensions, CJK) take the pydicom path.
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf-8"}
_CHARSET = 0x00080005
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_PIXEL_DATA = 0x7FE00010
_BINARY_DUMMIES = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "UV": "<Q", "SV": "<q",
                   "FL": "<f", "FD": "<d", "AT": "<I"}
_MAX_ELEMENTS = 500_000


# VRs read here as pydicom reads them (values.convert_string / convert_UI / convert_text /
# convert_numbers, IS as the int it is; single values only). The rest, and every value
# that is empty, multi-valued (or holds a 0x5C byte) or escaped, go through pydicom's
# convert_value.
_PLAIN_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_CHARSET_TEXT_VRS = frozenset({"LO", "SH", "UC"})
_NUMBER_FORMATS = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}


def _quick_value(element: Element, codec: str, encodings: list[str] | None) -> Any:
    vr, raw = element.vr, element.value
    if raw and b"\\" not in raw and b"\x1b" not in raw:
        if vr in _PLAIN_STRING_VRS and not pydicom_config.datetime_conversion:
            return raw.decode("latin_1").rstrip(" \x00")
        if vr in _CHARSET_TEXT_VRS:
            try:
                return raw.decode(codec).rstrip("\x00 ")
            except UnicodeDecodeError:
                pass  # pydicom decodes with replacement characters and a warning
        if vr == "IS":  # pydicom's IS is an int; "5.0" and the like: its own reading
            try:
                return int(raw.decode("latin_1"))
            except ValueError:
                pass
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is not None and len(raw) == struct.calcsize(fmt):
            return struct.unpack(fmt, raw)[0]
    return convert_value(vr, _raw(element), encodings)


def _raw(element: Element) -> RawDataElement:
    tag = BaseTag(element.tag)
    return RawDataElement(tag, element.vr, len(element.value), element.value, 0, False, True,
                          True, False)


# decide() per set of options and level (top-level data set or sequence item):
# (tag, VR) -> Action. decide() is pure; a series repeats the same tags.
_DECIDED: dict[tuple[Options, bool], dict[tuple[int, str], Action]] = {}
_DECIDED_MAX = 65_536  # distinct (tag, VR) per options and level before starting again


def _decisions(options: Options, top: bool) -> dict[tuple[int, str], Action]:
    table = _DECIDED.get((options, top))
    if table is None:
        if len(_DECIDED) >= 64:
            _DECIDED.clear()
        table = _DECIDED[(options, top)] = {}
    elif len(table) >= _DECIDED_MAX:
        table.clear()  # hostile files with ever new tags
    return table


@dataclass
class _Rewrite:
    key: bytes
    options: Options
    scrubber: Scrubber
    shift: int | None
    pseudonym: str
    charset: str
    codec: str
    counts: Counter[str]
    elements: int = 0

    # -- decoding and encoding single values (pydicom's converters: same reading) --

    def decode(self, element: Element) -> Any:
        return _quick_value(element, self.codec, self.encodings)

    @cached_property
    def top_decisions(self) -> dict[tuple[int, str], Action]:
        return _decisions(self.options, True)

    @cached_property
    def item_decisions(self) -> dict[tuple[int, str], Action]:
        return _decisions(self.options, False)

    @cached_property
    def encodings(self) -> list[str] | None:
        return convert_encodings([self.charset]) if self.charset else None

    def encode(self, tag: int, vr: str, values: list[Any]) -> Element:
        if vr in _BINARY_DUMMIES:
            raw = b"".join(struct.pack(_BINARY_DUMMIES[vr], v) for v in values)
        elif vr in ("OB", "OW"):
            raw = b"".join(values)
        else:
            codec = "latin_1" if vr == "UI" else self.codec
            raw = "\\".join(str(v) for v in values).encode(codec)
        return Element(tag, vr, pad(raw, vr))

    # -- the profile ----------------------------------------------------------------

    def data_set(self, elements: list[Element], depth: int) -> list[Element]:
        """decide() for every element, carried out on raw elements."""
        if depth > MAX_DEPTH:
            raise NotRaw
        out: dict[int, Element] = {}
        keep_creators: set[int] = set()
        by_tag: dict[int, Element] | None = None
        counts, options = self.counts, self.options
        top = depth == 0
        decisions = self.top_decisions if top else self.item_decisions
        kept = removed = 0
        for element in elements:
            self.elements += 1
            if self.elements > _MAX_ELEMENTS:
                raise NotRaw
            tag, vr = element.tag, element.vr
            if (tag >> 16) % 2:  # private: the decision depends on the creator
                creator_tag, creator = 0, None
                if options.retain_safe_private and tag & 0xFFFF >= 0x1000:
                    if by_tag is None:
                        by_tag = {e.tag: e for e in elements}
                    creator_tag = ((tag >> 16) << 16) | ((tag & 0xFFFF) >> 8)
                    holder = by_tag.get(creator_tag)
                    creator = str(self.decode(holder)).strip().lower() if holder is not None else ""
                action = decide(tag, vr, options, top=top, creator=creator)
                if action is not A_PRIVATE_REMOVED and action is not A_DROP and (
                        vr == "UN" or element.items is not None):
                    raise NotRaw  # a listed attribute: pydicom reads it through its dictionary
                if action.creator:
                    keep_creators.add(creator_tag)
            else:
                action = decisions.get((tag, vr))  # type: ignore[assignment]
                if action is None:
                    action = decisions[(tag, vr)] = decide(tag, vr, options, top=top)
                if vr == "UN" and action is not A_DROP and action is not A_OVERLAY:
                    raise NotRaw  # pydicom reads public UN values with their dictionary VR
            # The most common cases inline; apply() has them too.
            if action is A_KEEP:
                out[tag] = element
                kept += 1
            elif action is A_REMOVE:
                removed += 1
            elif action is not A_DROP:
                self.apply(element, action, out, depth)
        if kept:
            counts["kept"] += kept
        if removed:
            counts["removed"] += removed
        for creator_tag in keep_creators:
            if by_tag is not None and creator_tag in by_tag:
                out[creator_tag] = by_tag[creator_tag]
        return [out[tag] for tag in sorted(out)]

    def apply(self, element: Element, action: Action, out: dict[int, Element], depth: int) -> None:
        """Carry out decide()'s action for one element (as engine._apply does)."""
        tag, vr = element.tag, element.vr
        op, count = action.op, action.count
        if op == KEEP:
            out[tag] = element
        elif op in (DROP, REMOVE):
            pass
        elif op == PSEUDONYM:
            out[tag] = self.encode(tag, "LO" if tag == PATIENT_ID else "PN", [self.pseudonym])
        elif op == RECURSE:
            self.recurse(element, out, depth)
        elif op == REMAP:
            self.remap(element, out)
        elif op == EMPTY:
            out[tag] = Element(tag, vr, b"", [] if vr == "SQ" else None)
        elif op == DUMMY:
            out[tag] = self.encode(tag, vr, [DUMMY_VALUES[vr]])
        elif op == CAP_AGE:
            value = self.decode(element)
            capped = cap_age(value)
            out[tag] = element if capped is value else self.encode(tag, vr, [capped])
        elif op == SHIFT_DATE:
            shifted = self.changed("date", element, self.shifted)
            if shifted is None:  # unparseable: removed, a date cannot be kept unshifted
                count = "removed"
            else:
                out[tag] = Element(tag, vr, shifted)
        elif op == CLEAN_TEXT or (op == CLEAN_PATIENT_TEXT and self.scrubber.names_verifiable):
            out[tag] = Element(tag, vr, self.changed("text", element, self.cleaned))
        elif op == CLEAN_PATIENT_TEXT:  # the file's names cannot be verified: removed
            count = "removed"
        else:  # pragma: no cover - decide() returns only the operations above
            raise ValueError(f"unknown operation {op}")
        if count is not None:
            self.counts[count] += 1

    def recurse(self, element: Element, out: dict[int, Element], depth: int) -> None:
        items = [self.data_set(item, depth + 1) for item in element.items or []]
        out[element.tag] = Element(element.tag, "SQ", items=items)

    @cached_property
    def memo(self) -> dict[tuple[str, str, bytes], bytes | None]:
        return _memo(self.key, self.options, self.shift, self.charset, self.scrubber)

    def changed(self, kind: str, element: Element,
                change: Callable[[Element], bytes | None]) -> bytes | None:
        """change(element): its new value bytes (None: remove it), computed once per
        value — a series repeats most of them (study and series UIDs, dates, texts)."""
        if len(element.value) > _MEMO_LONGEST:
            return change(element)  # long free text rarely repeats: not worth the memory
        key, memo = (kind, element.vr, element.value), self.memo
        if key in memo:
            return memo[key]
        value = change(element)
        if len(memo) >= _MEMO_VALUES:
            memo.clear()  # one-off values (instance UIDs) fill it: start again
        memo[key] = value
        return value

    def remap(self, element: Element, out: dict[int, Element]) -> None:
        out[element.tag] = Element(element.tag, "UI", self.changed("uid", element, self.remapped))
        self.counts["uid_remapped"] += 1

    def remapped(self, element: Element) -> bytes:
        values = [uids.remap_uid(str(v), self.key) for v in values_of(self.decode(element))]
        return self.encode(element.tag, "UI", values).value

    def shifted(self, element: Element) -> bytes | None:
        assert self.shift is not None
        shifted = shifted_dates(element.vr, values_of(self.decode(element)), self.shift)
        return None if shifted is None else self.encode(element.tag, element.vr, shifted).value

    def cleaned(self, element: Element) -> bytes:
        texts = cleaned_texts(self.scrubber, values_of(self.decode(element)))
        return self.encode(element.tag, element.vr, texts).value

    # -- what the engine adds -----------------------------------------------------------

    def attest(self, out: list[Element]) -> list[Element]:
        """PS3.15 E.1.1 attributes, as engine._attest writes them (no pixels are masked
        on this path)."""
        by_tag = {e.tag: e for e in out}
        if PATIENT_ID not in by_tag:
            by_tag[PATIENT_ID] = self.encode(PATIENT_ID, "LO", [self.pseudonym])
            by_tag[PATIENT_NAME] = self.encode(PATIENT_NAME, "PN", [self.pseudonym])
            self.counts["pseudonymized"] += 2
        by_tag.update(_attestation(self.options, self.shift is not None))
        return [by_tag[tag] for tag in sorted(by_tag)]


@lru_cache(maxsize=64)
def _attestation(options: Options, dates_shifted: bool) -> dict[int, Element]:
    """The attestation elements for these options (the same for every file; ASCII)."""
    def ascii_element(tag: int, vr: str, values: list[str]) -> Element:
        return Element(tag, vr, pad("\\".join(values).encode("ascii"), vr))

    codes = method_codes(options, pixels_cleaned=False)
    return {
        0x00120062: ascii_element(0x00120062, "CS", ["YES"]),
        0x00120063: ascii_element(
            0x00120063, "LO", [meaning.removesuffix(" Option")[:64] for _, meaning in codes]),
        0x00120064: Element(0x00120064, "SQ", items=[
            [ascii_element(0x00080100, "SH", [code]), ascii_element(0x00080102, "SH", ["DCM"]),
             ascii_element(0x00080104, "LO", [meaning])]
            for code, meaning in codes]),
        0x00280303: ascii_element(0x00280303, "CS", ["MODIFIED" if dates_shifted else "REMOVED"]),
    }


# Bounds of what is remembered: values up to 256 bytes, 2048 per context, 32 contexts
# (a few MB at most).
_MEMO_LONGEST = 256
_MEMO_VALUES = 2048


@lru_cache(maxsize=32)
def _memo(key: bytes, options: Options, shift: int | None, charset: str,
          scrubber: Scrubber) -> dict[tuple[str, str, bytes], bytes | None]:
    """Changed values of one context (key, options, patient's shift, character set,
    the series' scrubber), shared by the files of a series."""
    return {}


@lru_cache(maxsize=256)
def _scrubber(values: tuple[tuple[int, str, str], ...], device: str) -> Scrubber:
    # The files of a series share their identifying values: one scrubber for them all.
    return Scrubber.from_values(values, device)


_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


class _Header:
    """Top-level values as pydicom reads them, converted on first use: ``get(keyword)``
    and ``tag in header``, what pixels.decide() and report.build_metadata() read."""

    def __init__(self, by_tag: dict[int, Element], encodings: list[str] | None,
                 extra_tags: tuple[int, ...] = (), codec: str = "latin_1") -> None:
        self._by_tag = by_tag
        self._encodings = encodings
        self._codec = codec
        self._extra_tags = extra_tags
        self._values: dict[str, Any] = {}

    def __contains__(self, tag: object) -> bool:
        return tag in self._by_tag or tag in self._extra_tags

    def get(self, keyword: str, default: Any = None) -> Any:
        """A top-level value; "A.B.C": C in the first item of B in the first item of A."""
        if keyword not in self._values:
            *path, last = keyword.split(".")
            elements: dict[int, Element] | None = self._by_tag
            for name in path:
                holder = elements.get(tag_for_keyword(name) or -1) if elements else None
                items = holder.items if holder is not None else None
                elements = {e.tag: e for e in items[0]} if items else None
            element = elements.get(tag_for_keyword(last) or -1) if elements else None
            value = None
            if element is not None and element.items is None:
                value = _quick_value(element, self._codec, self._encodings)
            self._values[keyword] = value
        value = self._values[keyword]
        return default if value is None else value


def _read_input(elements: list[Element], codec: str) -> tuple[Walked, list[tuple[int, str, str]]]:
    """One pass over the parsed input (any depth) for what the checks need:

    - the elements as the verifier's reader presents an input (values as bytes), for
      its needles; as the pydicom path's needles come from pydicom's reading of the
      input it de-identifies, the fast path's come from its own parse;
    - (tag, VR, value) for Scrubber.from_values: standard attributes outside private
      sequences, as iter_elements() gives them on the pydicom path.

    An item with a character set of its own raises Unwalkable (the pydicom path decodes
    its values with it)."""
    walked = Walked(codec=codec)
    flat = walked.elements
    wanted = identifier_tags()
    scrub: list[tuple[int, str, str]] = []

    def add(items: list[Element], depth: int, private: bool) -> None:
        for element in items:
            tag, vr = element.tag, element.vr
            if element.items is not None:
                inside = private or bool((tag >> 16) % 2)
                for item in element.items:
                    add(item, depth + 1, inside)
                continue
            if depth and tag == _CHARSET:
                raise Unwalkable
            flat.append((tag, vr, element.value, depth))
            if not private and not (tag >> 16) % 2 and (vr in ("PN", "DA", "DT") or tag in wanted):
                text = element.value.decode(codec, errors="replace")
                parts = [text] if vr in _SINGLE_VALUED else text.split("\\")
                scrub.extend((tag, vr, part) for part in parts)

    add(elements, 0, False)
    return walked, scrub


def _meta(out: list[Element], transfer_syntax: str, rewrite: _Rewrite) -> list[Element]:
    by_tag = {e.tag: e for e in out}
    if _SOP_CLASS not in by_tag or _SOP_INSTANCE not in by_tag:
        raise NotRaw  # not kept (e.g. written with another VR): the pydicom path says why
    return [
        Element(0x00020001, "OB", b"\x00\x01"),
        Element(0x00020002, "UI", by_tag[_SOP_CLASS].value),
        Element(0x00020003, "UI", by_tag[_SOP_INSTANCE].value),
        rewrite.encode(0x00020010, "UI", [transfer_syntax]),
        rewrite.encode(0x00020012, "UI", [IMPLEMENTATION_CLASS_UID]),
        rewrite.encode(0x00020013, "SH", [IMPLEMENTATION_VERSION]),
    ]


def deidentify_raw(fp: BinaryIO, dst: Any, *, key: bytes, options: Options) -> DeidReport | None:
    """De-identify the file at fp on the fast path; None when it is not one for it."""
    try:
        parsed = read_header(fp)
    except NotRaw:
        return None
    top = {e.tag: e for e in parsed.elements}
    charset = text(top.get(_CHARSET))
    codec = _CODECS.get(charset)
    if codec is None:
        return None
    sop_class = text(top.get(_SOP_CLASS))
    if not (sop_class and text(top.get(_SOP_INSTANCE))) or sop_class == DICOMDIR_SOP_CLASS:
        # The pydicom path takes them from the file meta, or says they are missing; it
        # also refuses DICOMDIRs, whose class may be in the file meta only.
        return None
    encodings = convert_encodings([charset]) if charset else None
    header = _Header(top, encodings,
                     (parsed.pixel.tag,) if parsed.pixel is not None else (), codec)
    decision = _decide(header, top, parsed.pixel.tag if parsed.pixel is not None else None,
                       codec, options)
    if decision.action == "reject":
        raise BurnedInAnnotationError(decision.reason)
    if decision.action == "mask":
        return None  # masking decodes pixels: the pydicom path
    try:
        walked, scrub_values = _read_input(parsed.elements, codec)
        output = _rewrite(parsed, header, scrub_values, key=key, options=options,
                          charset=charset, codec=codec)
    except (NotRaw, UnicodeError, Unwalkable):
        return None  # nothing written yet: the pydicom path takes the file
    needles = needles_from_walked(walked)
    # The verifier's full check on everything but the pixel data value...
    verify_output(None, output.header + output.trailer, needles=needles)
    pixel = parsed.pixel if output.keep_pixels else None
    scanner = (PixelScanner(None, needles=needles, encapsulated=pixel.encapsulated)
               if pixel is not None else None)
    # ...and the pixel bytes scanned while they are copied.
    stream.write_parts(fp, pixel, output.header, output.trailer, scanner, dst)
    return output.report


_DECISIONS: dict[tuple[Any, ...], tuple[object, pixels.PixelDecision]] = {}


@lru_cache(maxsize=1)
def _decision_tags() -> tuple[int, ...]:
    return tuple(tag_for_keyword(k) or -1 for k in pixels.DECISION_KEYWORDS)


def _decide(header: _Header, top: dict[int, Element], pixel_tag: int | None, codec: str,
            options: Options) -> pixels.PixelDecision:
    """pixels.decide(), once per distinct set of the values it reads (a series shares
    them): keyed by those elements' VRs and bytes, the character set, the options, and
    the deciding function and rule set in use (a cached answer of other rules is void)."""
    decide, rules = pixels.decide, pixels.shipped_rules()
    key = (decide, id(rules), options, pixel_tag, codec, tuple(
        None if (e := top.get(tag)) is None else (e.vr, e.value, e.items is not None)
        for tag in _decision_tags()))
    cached = _DECISIONS.get(key)
    if cached is not None and cached[0] is rules:
        return cached[1]
    decision = decide(header, options)
    if len(_DECISIONS) >= 4096:
        _DECISIONS.clear()
    _DECISIONS[key] = (rules, decision)
    return decision


@dataclass
class _Output:
    header: bytes  # preamble, file meta and the elements before the pixel data
    trailer: bytes  # elements after it
    keep_pixels: bool
    report: DeidReport


def _rewrite(parsed: RawFile, header: _Header, scrub_values: list[tuple[int, str, str]], *,
             key: bytes, options: Options, charset: str,
             codec: str) -> _Output:
    get = header.get
    seed = patient_seed(str(get("PatientID") or ""), str(get("StudyInstanceUID") or ""))
    device = " ".join(str(get(k) or "") for k in ("Manufacturer", "ManufacturerModelName"))
    rewrite = _Rewrite(
        key=key,
        options=options,
        scrubber=_scrubber(tuple(scrub_values), device),
        shift=dates.shift_days(seed, key) if options.retain_longitudinal_modified_dates else None,
        pseudonym=uids.patient_pseudonym(seed, key),
        charset=charset,
        codec=codec,
        counts=Counter(),
    )
    pixel = parsed.pixel
    elements = parsed.elements
    if pixel is not None:
        elements = [*elements, Element(pixel.tag, pixel.vr)]  # decides whether it is kept
    out = rewrite.attest(rewrite.data_set(elements, 0))
    if pixel is None:
        keep_pixels, head, tail = False, out, []
    else:
        at = bisect.bisect_left([e.tag for e in out], pixel.tag)  # out is in tag order
        keep_pixels = at < len(out) and out[at].tag == pixel.tag
        head, tail = out[:at], out[at + keep_pixels:]
    trailer = bytearray()
    encode(tail, trailer)
    report = DeidReport(
        metadata=build_metadata(_Header({e.tag: e for e in out}, rewrite.encodings, codec=codec).get, parsed.transfer_syntax,
                                has_pixels=keep_pixels and pixel is not None and pixel.tag == _PIXEL_DATA),
        actions=dict(sorted(rewrite.counts.items())),
        profile=describe(options),
        method_codes=[code for code, _ in method_codes(options, pixels_cleaned=False)],
        verified=True,  # set before writing: write_parts writes only after both checks
    )
    return _Output(file_header(_meta(out, parsed.transfer_syntax, rewrite), head), bytes(trailer),
                   keep_pixels, report)
