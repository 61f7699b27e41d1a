"""Independent check of an output file against the identifying values of its input.

Deliberately shares no code with the engine (own tag list, own traversal, own parsing of
the output): a bug in the engine's rules must not also blind the check. Messages name
tags, never values.

Public helpers (importable, see deid/README.md):

- ``identifying_values(ds) -> set[str]``: the identifying values of an input data set.
- ``collect_needles(ds) -> list[Needle]``: those values as search patterns. Each
  ``Needle.pattern`` is a ``str`` regular expression whose UTF-8 encoding is also a valid
  ``bytes`` pattern for the raw file (non-ASCII characters up to U+00FF are written as
  ``\\xHH`` escapes, so the same pattern matches decoded text and Latin-1 bytes; other
  encodings get needles of their own).
- ``verify_output(original, data)``: raise PHIRemainsError if any needle matches the
  output: any element at any depth (file meta, private blocks, binary values included),
  then the raw bytes (preamble included) with the pixel data values blanked, then the
  pixel data values with the long needles only.
- ``scan_bytes(needles, data, where)``: the raw-byte search on its own (e.g. for pixel
  bytes streamed separately).
"""

from __future__ import annotations

import bisect
import io
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from deid import verify_walk
from deid.errors import PHIRemainsError

MIN_LEN = 3  # shortest Latin-script name component / value matched (as a whole word)
MIN_LEN_CJK = 2  # CJK / kana / hangul names are short and distinctive
MIN_PIXEL_LEN = 8  # pixel data is binary: only long values are searched there
MAX_WALK_DEPTH = 64
_PIXEL_GROUP = 0x7FE0
_NUMERIC_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT", "DA", "TM", "DT"}

# tag -> kind. "person": each name component (word) + whole value; "id": whole value,
# its long digit runs and (6+ letters and digits, one a digit) the value with any
# separators between its characters ("123-45-6789" for 123456789); "phone": also its
# digits with any separators; "text": whole value + its distinctive words; "date": the
# date in DICOM, ISO, US/EU and month-name forms; "uid": the exact UID. Every PN value
# and every instance UID of the input counts too.
IDENTIFYING: dict[int, str] = {
    0x00100010: "person",  # PatientName
    0x00101001: "person",  # OtherPatientNames
    0x00101005: "person",  # PatientBirthName
    0x00101060: "person",  # PatientMotherBirthName
    0x00102297: "person",  # ResponsiblePerson
    0x00080090: "person",  # ReferringPhysicianName
    0x00081048: "person",  # PhysiciansOfRecord
    0x00081050: "person",  # PerformingPhysicianName
    0x00081060: "person",  # NameOfPhysiciansReadingStudy
    0x00081070: "person",  # OperatorsName
    0x00321032: "person",  # RequestingPhysician
    0x0040A123: "person",  # PersonName
    0x00100020: "id",  # PatientID (also inside OtherPatientIDsSequence)
    0x00101000: "id",  # OtherPatientIDs
    0x00101002: "id",  # OtherPatientIDsSequence items carry PatientID: see above
    0x00101090: "id",  # MedicalRecordLocator
    0x00080050: "id",  # AccessionNumber
    0x00200010: "id",  # StudyID
    0x00380010: "id",  # AdmissionID
    0x00380060: "id",  # ServiceEpisodeID
    0x00401001: "id",  # RequestedProcedureID
    0x00400253: "id",  # PerformedProcedureStepID
    0x00400009: "id",  # ScheduledProcedureStepID
    0x00402016: "id",  # PlacerOrderNumberImagingServiceRequest
    0x00402017: "id",  # FillerOrderNumberImagingServiceRequest
    0x00120040: "id",  # ClinicalTrialSubjectID
    0x00120042: "id",  # ClinicalTrialSubjectReadingID
    0x00101050: "id",  # InsurancePlanIdentification (retired)
    0x00102154: "phone",  # PatientTelephoneNumbers
    0x00102155: "phone",  # PatientTelecomInformation
    0x00080094: "phone",  # ReferringPhysicianTelephoneNumbers
    0x00401103: "phone",  # PersonTelephoneNumbers
    0x00401104: "phone",  # PersonTelecomInformation
    0x00080080: "text",  # InstitutionName
    0x00080081: "text",  # InstitutionAddress
    0x00081040: "text",  # InstitutionalDepartmentName
    0x00080092: "text",  # ReferringPhysicianAddress
    0x00101040: "text",  # PatientAddress
    0x00401102: "text",  # PersonAddress
    0x00102299: "text",  # ResponsibleOrganization
    0x00100030: "date",  # PatientBirthDate
    0x0020000D: "uid",  # StudyInstanceUID
    0x0020000E: "uid",  # SeriesInstanceUID
    0x00080018: "uid",  # SOPInstanceUID
    0x00200052: "uid",  # FrameOfReferenceUID
    0x00081155: "uid",  # ReferencedSOPInstanceUID
}

# UI attributes naming a class or syntax, not an instance: never needles.
_CLASS_UID_TAGS = {
    0x00020002, 0x00020010, 0x00020012, 0x00080016, 0x00081150, 0x0008001A, 0x0008001B,
    0x0008010C, 0x00041510, 0x00041512, 0x00080062,
}

# Words of institution names/addresses that identify nothing on their own.
_GENERIC_WORDS = frozenset("""
hospital hospitals clinic clinics clinical medical medicine center centre centers general
university universitat universite college school health healthcare care saint sainte
department dept radiology radiological imaging diagnostic diagnostics institute
foundation services service children childrens women womens memorial regional community
national state county city street road avenue drive lane boulevard blvd suite floor
building systems system north south east west unit ward infirmary trust cancer heart nuclear
research district private public group network practice partners associates the and
for with main park place square court hall house level room box
""".split())
# Tokens that appear as dummies in our own outputs or are titles, not names.
_NAME_STOP = frozenset("""
anonymous anonymized anonymised unknown none null patient test phantom
mrs miss prof phd iii
""".split())

_MONTHS = ["jan(?:uary)?", "feb(?:ruary)?", "mar(?:ch)?", "apr(?:il)?", "may", "june?",
           "july?", "aug(?:ust)?", "sep(?:t(?:ember)?)?", "oct(?:ober)?", "nov(?:ember)?",
           "dec(?:ember)?"]
# Extra byte encodings searched for non-ASCII values (Latin-1 is in every pattern).
_ENCODINGS = ("utf-8", "iso8859_2", "iso8859_5", "iso8859_7", "iso8859_8", "iso8859_9",
              "tis-620", "shift_jis", "euc_jp", "iso2022_jp", "euc_kr", "gb18030")
_WB_L = r"(?<![A-Za-z0-9])"
_WB_R = r"(?![A-Za-z0-9])"
_WILD = r"[^\x00-\x7f]{1,4}"  # a character the input could not decode (U+FFFD)


@dataclass(frozen=True)
class Needle:
    source: int  # tag the value came from (named in raw-byte findings)
    regex: str  # the pattern's text (compiled on first use: most needles never run)
    min_len: int = MIN_LEN  # shortest text the pattern can match
    # A purely numeric identifier: not searched in numeric, date or time values (a test
    # file's PatientID equal to its StudyTime is no leak) nor in the raw bytes after the
    # preamble (every text value was already searched element by element).
    short_number: bool = False
    # Lower-case ASCII text that every match contains: a plain substring test decides
    # whether the regular expression needs to run at all. None: always run it.
    literal: str | None = None

    # The exact text every match is, between lookarounds only (UIDs): no regex to
    # parse for the pixel scan.
    plain: str | None = None
    # Phone numbers and ids: the digits (and lower-case letters) every match holds in
    # order with only separators [\s().-/] between them; a lower-cased text without them
    # once separators are deleted cannot match.
    compact: str | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compiled(self.regex)

    @cached_property  # computed once: searched in every file of a series
    def literal_bytes(self) -> bytes | None:
        return self.literal.encode("ascii") if self.literal is not None else None

    @cached_property
    def compact_bytes(self) -> bytes | None:
        return self.compact.encode("ascii") if self.compact is not None else None


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --- collecting the input's identifying values --------------------------------------

def _walk(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, str, object]]:
    """(tag, VR, value) of every element at any depth, private ones included."""
    if depth > MAX_WALK_DEPTH:
        raise PHIRemainsError("verification failed: sequences nested too deep to verify")
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _walk(item, depth + 1)
        else:
            yield int(elem.tag), str(elem.VR), elem.value


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [bytes(value).decode("latin-1")]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [t for v in value for t in _texts(v)]  # type: ignore[attr-defined]
    return [str(value)]


def _kind(tag: int, vr: str) -> str | None:
    kind = IDENTIFYING.get(tag)
    if kind is not None:
        return kind
    if vr == "PN":
        return "person"
    if vr == "UI" and tag not in _CLASS_UID_TAGS and not (tag >> 16) % 2:
        return "uid"
    return None


_DEVICE_KEYWORDS = ("Manufacturer", "ManufacturerModelName")
_DEVICE_TAGS = (0x00080070, 0x00081090)


def _device_text(ds: Dataset) -> str:
    return " ".join(str(ds.get(k, "") or "") for k in _DEVICE_KEYWORDS).lower()


def _identifying(original: Dataset) -> Iterator[tuple[int, str, str]]:
    """(source tag, kind, text) of every identifying value of the input, any depth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield from _identifying_in(((tag, vr, _texts(value)) for tag, vr, value in _walk(original)),
                                   _device_text(original))


def _identifying_in(elements: Iterable[tuple[int, str, list[str]]],
                    device: str) -> Iterator[tuple[int, str, str]]:
    """(source tag, kind, text) from (tag, VR, values) of every element, any depth."""
    # An institution value that is part of the vendor's own name ("TOSHIBA" next to
    # Manufacturer "TOSHIBA_MEC") names the device maker, which is kept on purpose.
    for tag, vr, texts in elements:
        kind = _kind(tag, vr)
        if kind is None:
            continue
        for text in texts:
            text = text.strip().strip("\x00").strip()
            if not text:
                continue
            if kind == "uid" and (text in UID_dictionary or not re.fullmatch(r"[0-9.]+", text)):
                continue
            if kind == "text" and re.search(rf"(?<![a-z0-9]){re.escape(text.lower())}", device):
                continue
            yield tag, kind, text


def identifying_values(ds: Dataset) -> set[str]:
    """The identifying values of a data set (names, ids, addresses, phone numbers, birth
    date, institution, physician names, instance UIDs), at any depth, as found."""
    return {text for _, _, text in _identifying(ds)}


def _is_cjk(text: str) -> bool:
    return any(ord(c) >= 0x2E80 for c in text)


def _lit(text: str) -> str:
    """Regex for text: ASCII escaped, U+0080..U+00FF as \\xHH (= the Latin-1 byte in a
    bytes pattern), U+FFFD as a wildcard, other characters literal (UTF-8 in bytes)."""
    out = []
    for ch in text:
        code = ord(ch)
        if code == 0xFFFD:
            out.append(_WILD)
        elif code < 0x80:
            out.append(re.escape(ch))
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _bytes_lit(raw: bytes) -> str:
    return "".join(re.escape(chr(b)) if b < 0x80 else f"\\x{b:02x}" for b in raw)


# Latin letters that NFKD does not split into an ASCII letter and a mark, and how German
# and Scandinavian names are also written in ASCII (MÜLLER as MUELLER, ÅSE as AASE).
_UNMARKED = {"ß": "ss", "Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "Æ": "AE",
             "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "TH", "þ": "th", "ı": "i", "Ħ": "H", "ħ": "h"}
_TRANSLITERATED = {"Ä": "AE", "ä": "ae", "Ö": "OE", "ö": "oe", "Ü": "UE", "ü": "ue",
                   "Å": "AA", "å": "aa", "Ø": "OE", "ø": "oe"}


def _ascii_spellings(text: str) -> set[str]:
    """A Latin text as written without its marks: MÜLLER as MULLER and MUELLER, WAŁĘSA as
    WALESA, KIERKEGÅRD as KIERKEGARD and KIERKEGAARD (none for other scripts)."""
    if text.isascii():
        return set()
    spellings = set()
    for letters in ({}, _TRANSLITERATED):
        spelled = "".join(letters.get(ch) or _UNMARKED.get(ch) or _unmarked(ch) for ch in text)
        if spelled.isascii():
            spellings.add(spelled)
    return spellings


def _unmarked(ch: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))


def _fold_in_place(text: str) -> str:
    """The text with each marked Latin letter replaced by its base letter, one character
    for one (match positions stay valid): "Müller" -> "Muller"."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        base = _unmarked(ch) if ord(ch) >= 0x80 else ch
        out.append(base if len(base) == 1 and base.isascii() else (_UNMARKED.get(ch) or ch)[0])
    return "".join(out)


def _forms(text: str) -> list[str]:
    """Regex forms of one text: itself (and its case variants and other byte encodings
    when it is not ASCII; its UTF-8 reading when it looks like mis-decoded UTF-8; its
    spellings without marks)."""
    variants = {text} | _ascii_spellings(text)
    try:  # "MÃ\x9cLLER" (UTF-8 read as Latin-1): also look for "MÜLLER"
        repaired = text.encode("latin-1").decode("utf-8")
        if repaired != text:
            variants.add(repaired)
    except UnicodeError:
        pass
    forms = []
    for variant in variants:
        forms.append(_lit(variant))
        if variant.isascii() or "\ufffd" in variant:
            continue
        for cased in {variant, variant.upper(), variant.lower()}:
            forms.append(_lit(cased))
            for encoding in _ENCODINGS:
                try:
                    raw = cased.encode(encoding)
                except UnicodeError:
                    continue
                if encoding == "iso2022_jp":  # the JIS X 0208 bytes between escapes
                    raw = re.sub(rb"\x1b[\$\(][@AB]", b"", raw)
                forms.append(_bytes_lit(raw))
    return list(dict.fromkeys(forms))


@lru_cache(maxsize=8192)
def _compiled(pattern: str) -> re.Pattern[str]:
    # Patients recur across files: their patterns are compiled once, not per file.
    return re.compile(pattern, re.IGNORECASE)


@lru_cache(maxsize=8192)
def _compiled_bytes(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode("utf-8"), re.IGNORECASE)


def _needle(source: int, pattern: str, min_len: int, short_number: bool = False,
            literal: str | None = None, plain: str | None = None,
            compact: str | None = None) -> Needle:
    if literal is not None and not (literal.isascii() and literal):
        literal = None
    return Needle(source, pattern, min_len, short_number,
                  literal.lower() if literal is not None else None, plain, compact)


def _ascii_literal(form: str, text: str) -> str | None:
    """The text (or its spelling without marks) when this regex form is that plain ASCII."""
    for spelled in (text, *_ascii_spellings(text)):
        if spelled.isascii() and form == _lit(spelled):
            return spelled
    return None


# Words this long also match glued to other letters ("DrQuimby", "WallabyWay"); shorter
# ones only as whole words ("LEE" is no finding in "SLEEP").
GLUED_LEN = 6


def _word_needles(source: int, word: str) -> list[Needle]:
    # CJK text has no spaces between words, and its byte forms sit next to letters (an
    # ISO 2022 escape ends in "B"; Shift-JIS second bytes are letters): no word edges.
    glued = _is_cjk(word) or len(word) >= GLUED_LEN
    left, right = ("", "") if glued else (_WB_L, _WB_R)
    return [_needle(source, f"{left}{form}{right}", len(word), literal=_ascii_literal(form, word))
            for form in _forms(word)]


def _sub_needles(source: int, text: str) -> list[Needle]:
    return [_needle(source, form, len(text), literal=_ascii_literal(form, text)) for form in _forms(text)]


def _name_words(text: str) -> set[str]:
    words: set[str] = set()
    # Split at every character that is no letter or digit (keeping hyphens and
    # apostrophes for the forms below): "^", "=", spaces, and whatever a damaged value has.
    # Not at "_": labels such as PANCREAS_0001 are no names to take apart.
    for part in re.split(r"[^\w'\-]+", text):
        for word in {part, *part.split("-"), *part.split("'")}:
            word = word.strip("-'")
            limit = MIN_LEN_CJK if _is_cjk(word) else MIN_LEN
            if len(word) >= limit and word.lower() not in _NAME_STOP and not word.isdigit():
                words.add(word)
    return words


def _squeeze(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def _run_together(text: str) -> set[str]:
    """A name's components written without their spaces, hyphens and apostrophes
    (O'BRIEN as OBRIEN, VAN DER BERG as VANDERBERG, SMYTHE-JONES as SMYTHEJONES), and
    family and given name run together (DOEJANE, JANEDOE)."""
    joined = set()
    for group in text.split("="):  # alphabetic, ideographic, phonetic
        components = group.split("^")
        squeezed = [_squeeze(part) for part in components]
        tokens = [token for part in components for token in re.split(r"[\s-]+", part)]
        joined |= {word for word, part in zip(squeezed + [_squeeze(t) for t in tokens],
                                              components + tokens)
                   if word != part.strip() and len(word) >= 4}
        family, given = (squeezed + ["", ""])[:2]
        if family and given and len(family + given) >= 6:
            joined |= {family + given, given + family}
    return {word for word in joined if not word.isdigit()}


def _date_needles(source: int, text: str) -> list[Needle]:
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    if not m:
        return ([_needle(source, rf"(?<!\d){re.escape(text)}(?!\d)", len(text), literal=text)]
                if len(text) >= 6 else [])
    y, mo, d = m.groups()
    sep = r"[-/. ]"
    mo_, d_ = f"0?{int(mo)}", f"0?{int(d)}"
    month = _MONTHS[int(mo) - 1] if 1 <= int(mo) <= 12 else re.escape(mo)
    patterns = [
        rf"(?<!\d){y}{mo}{d}(?!\d)",
        rf"(?<!\d){y}{sep}{mo_}{sep}{d_}(?!\d)",
        rf"(?<!\d){mo_}{sep}{d_}{sep}{y}(?!\d)",
        rf"(?<!\d){d_}{sep}{mo_}{sep}{y}(?!\d)",
        rf"(?<!\d){d_}(?:st|nd|rd|th)?[\s.,-]*{month}\.?[\s.,-]*{y}(?!\d)",
        rf"{_WB_L}{month}\.?[\s.,-]*{d_}(?:st|nd|rd|th)?[\s.,-]*{y}(?!\d)",
    ]
    return [_needle(source, p, 8, literal=y) for p in patterns]  # every form spells the year


def _needles_for(tag: int, kind: str, text: str, device: str = "") -> tuple[Needle, ...]:
    # A patient's values recur in every file of a study: build their needles once.
    return _needles_for_cached(tag, kind, text, device)


@lru_cache(maxsize=16384)
def _needles_for_cached(tag: int, kind: str, text: str, device: str) -> tuple[Needle, ...]:
    return tuple(_build_needles(tag, kind, text, device))


def _build_needles(tag: int, kind: str, text: str, device: str = "") -> list[Needle]:
    if kind == "uid":
        if len(text) < MIN_LEN:
            return []
        return [_needle(tag, rf"(?<![0-9.]){re.escape(text)}(?![0-9.])", len(text), literal=text,
                        plain=text)]
    if kind == "date":
        return _date_needles(tag, text)
    needles: list[Needle] = []
    limit = MIN_LEN_CJK if _is_cjk(text) else MIN_LEN
    if kind == "person":
        for word in _name_words(text) | _run_together(text):
            needles += _word_needles(tag, word)
        if len(text) >= 6:
            base = re.sub(r"\^+", "^", text.strip("^= "))
            if len(base) >= 6 and "^" in base:
                for variant in {base, base.replace("^", " "), base.replace("^", ", ")}:
                    needles += _sub_needles(tag, variant)
        return needles
    if len(text) < limit:
        return []
    if text.isdigit():
        # A number: whole runs of digits only ("4711" is no leak inside "2.25.9947112").
        needles.append(_needle(tag, rf"(?<!\d){text}(?!\d)", len(text), True, literal=text))
    elif len(text) >= 6:
        needles += _sub_needles(tag, text)
    else:
        needles += _word_needles(tag, text)
    if kind in ("id", "phone", "text"):
        for run in set(re.findall(r"\d{5,}", text)):
            if run != text:
                needles.append(_needle(tag, rf"(?<!\d){run}(?!\d)", len(run), True, literal=run))
    if kind == "phone":
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 7:
            needles.append(_needle(tag, rf"(?<!\d){_flexible(digits)}(?!\d)", len(digits),
                                   compact=digits))
    if kind == "id":
        needles += _spaced_id_needles(tag, text)
    if kind == "text":
        for word in set(re.split(r"[\s,.;:/()\-#&]+", text)):
            if (len(word) >= 4 and word.lower() not in _GENERIC_WORDS
                    and not word.isdigit() and word.lower() != text.lower()
                    and word.lower() not in device):
                needles += _word_needles(tag, word)
    return needles


def _flexible(chars: str) -> str:
    r"""The characters in order with any separators [\s().-/] between them."""
    return SEPARATOR_PATTERN.join(re.escape(c) for c in chars)


def _spaced_id_needles(tag: int, text: str) -> list[Needle]:
    """An id written with other separators: MRN 123456789 as "123-45-6789", accession
    ACC5533Q as "acc-5533q". Only ids of 6+ letters and digits with a digit among them."""
    compact = re.sub(r"[^0-9A-Za-z]", "", text).lower()
    if len(compact) < 6 or not any(c.isdigit() for c in compact) or not text.isascii():
        return []
    if compact.isdigit():  # whole digit runs, not searched among numbers (as above)
        return [_needle(tag, rf"(?<!\d){_flexible(compact)}(?!\d)", len(compact), True,
                        compact=compact)]
    return [_needle(tag, f"{_WB_L}{_flexible(compact)}{_WB_R}", len(compact), compact=compact)]


def collect_needles(original: Dataset) -> list[Needle]:
    """Identifying values of the INPUT, as search patterns (deduplicated)."""
    return _needles(_identifying(original), _device_text(original))


def collect_needles_from_bytes(header: bytes) -> list[Needle]:
    """collect_needles() for an input given as its Part 10 bytes (up to the pixel data at
    least), read by the verifier's own reader (verify_walk). Raises verify_walk.Unwalkable
    for inputs that reader does not take: use collect_needles() on a data set then."""
    return needles_from_walked(verify_walk.walk(header))


def needles_from_walked(walked: verify_walk.Walked) -> list[Needle]:
    """collect_needles() for an input's elements as (tag, VR, value bytes, depth) with
    its codec: read by verify_walk, or by the fast path's own parser (as the pydicom
    path's needles come from pydicom's reading of the input it de-identifies)."""
    # Only identifying elements and the device's name are decoded.
    walked.elements = [e for e in walked.elements
                       if e[0] >> 16 != 0x0002 and (_kind(e[0], e[1]) is not None
                                                    or (e[3] == 0 and e[0] in _DEVICE_TAGS))]
    values = walked.values()
    top = {tag: texts for tag, _, texts, depth in values if depth == 0}
    device = " ".join(" ".join(top.get(tag, [""])).strip() for tag in _DEVICE_TAGS).lower()
    return _needles(_identifying_in(((t, vr, texts) for t, vr, texts, _ in values), device),
                    device)


def _needles(identifying: Iterable[tuple[int, str, str]], device: str) -> list[Needle]:
    seen: set[tuple[int, str]] = set()
    needles: list[Needle] = []
    for tag, kind, text in identifying:
        for needle in _needles_for(tag, kind, text, device):
            if (needle.source, needle.regex) not in seen:
                seen.add((needle.source, needle.regex))
                needles.append(needle)
    return needles


# --- searching the output -----------------------------------------------------------

# What the phone and id patterns allow between characters, as a pattern and (\s as in
# ASCII text) as the characters the prefilters delete.
SEPARATOR_PATTERN = r"[\s().\-/]*"
_SEPARATORS = " \t\n\r\x0b\x0c()./-"
_DELETE_SEPARATORS = str.maketrans("", "", _SEPARATORS)
SEPARATOR_BYTES = _SEPARATORS.encode("ascii")


class _Matcher:
    """Needles with cheap prefilters: a needle's regular expression runs only where its
    literal occurs (plain substring test; needles sharing a literal test it once), and a
    phone number's or id's only where its characters occur once separators are deleted
    from the lower-cased text; needles with neither (non-ASCII forms) always run. Same
    matches as running every pattern.

    ``within(text)`` / ``within_bytes(data)`` narrow the needles to those that can match
    somewhere in a text: a needle that cannot match a whole text cannot match any part
    of it, so the element-by-element and preamble searches test only those."""

    def __init__(self, needles: Iterable[Needle]) -> None:
        self.needles = list(needles)
        self._long = [n for n in self.needles if not n.short_number]

    def within(self, text: str) -> _Matcher:
        # Unicode case-insensitive matching has special cases (e.g. U+017F matches "s")
        # that lower() does not reproduce, and \s is wider in Unicode text: only ASCII
        # text is prefiltered.
        if not text.isascii():
            return self
        lowered = text.lower()
        return self._narrowed(lowered, lambda n: n.literal, lambda n: n.compact,
                              lambda: lowered.translate(_DELETE_SEPARATORS))

    def within_bytes(self, data: bytes) -> _Matcher:
        # bytes patterns ignore case for ASCII only, exactly what bytes.lower() folds.
        lowered = data.lower()
        return self._narrowed(lowered, lambda n: n.literal_bytes,
                              lambda n: n.compact_bytes,
                              lambda: lowered.translate(None, SEPARATOR_BYTES))

    def _narrowed(self, lowered: Any, literal_of: Callable[[Needle], Any],
                  compact_of: Callable[[Needle], Any], squeeze: Callable[[], Any]) -> _Matcher:
        """The needles whose literal is in ``lowered`` (each literal tested once) and
        whose compact form is in ``squeeze()`` (computed once, when a needle needs it)."""
        squeezed = None
        seen: dict[Any, bool] = {}
        kept = []
        for needle in self.needles:
            literal = literal_of(needle)
            if literal is not None:
                found = seen.get(literal)
                if found is None:
                    found = seen[literal] = literal in lowered
                if not found:
                    continue
            elif needle.compact is not None:
                if squeezed is None:
                    squeezed = squeeze()
                if compact_of(needle) not in squeezed:
                    continue
            kept.append(needle)
        return _Matcher(kept)

    def find_text(self, text: str, numeric: bool) -> Needle | None:
        for needle in self.within(text).needles:
            if numeric and needle.short_number:
                continue
            if needle.pattern.search(text):
                return needle
        folded = _fold_in_place(text)  # "Müller" in the text, MULLER in the input
        return self.find_text(folded, numeric) if folded != text else None

    def find_bytes(self, data: bytes, pixel: bool = False,
                   numbers: bool = False) -> tuple[Needle, int] | None:
        needles = self.needles if numbers else self._long  # numbers: every needle (the preamble)
        for needle in _Matcher(needles).within_bytes(data).needles:
            if pixel and needle.min_len < MIN_PIXEL_LEN:
                continue
            m = _compiled_bytes(needle.regex).search(data)
            if m is not None:
                return needle, m.start()
        return None


def _output_elements(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, str, object]]:
    if depth > MAX_WALK_DEPTH:
        raise PHIRemainsError("verification failed: sequences nested too deep to verify")
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - an undecodable value: read it as raw bytes
            raw = ds.get_item(tag, keep_deferred=True)
            yield int(tag), "UN", getattr(raw, "value", None)
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _output_elements(item, depth + 1)
        else:
            yield int(tag), str(elem.VR), elem.value


def _pixel_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of top-level pixel data values in the output."""
    spans = []
    ds = dcmread(io.BytesIO(data), defer_size=512)
    for tag in list(ds.keys()):
        if tag.group != _PIXEL_GROUP:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            continue
        length = raw.length if raw.length != 0xFFFFFFFF else len(raw.value or b"")
        spans.append((raw.value_tell, raw.value_tell + length))
    return spans


def scan_bytes(needles: Iterable[Needle], data: bytes, where: str = "output bytes", *,
               pixel: bool = False, numbers: bool = False) -> None:
    """Raise PHIRemainsError if a needle occurs in raw ``data`` (any of the encodings).
    ``pixel=True`` searches only needles of at least MIN_PIXEL_LEN characters;
    ``numbers=True`` also the purely numeric ids (for bytes that are text)."""
    found = _Matcher(needles).find_bytes(bytes(data), pixel=pixel, numbers=numbers)
    if found is not None:
        raise PHIRemainsError(
            f"verification failed: identifying value from {_tag(found[0].source)} remains in {where}")


def _read_with_pydicom(data: bytes) -> tuple[list[tuple[int, bool, str]], list[tuple[int, int]]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = dcmread(io.BytesIO(data))
            spans = _pixel_spans(data)
            elements = list(_output_elements(output.file_meta)) + list(_output_elements(output))
    except PHIRemainsError:
        raise
    except Exception:  # noqa: BLE001 - what we cannot re-read we cannot let out
        raise PHIRemainsError("verification failed: the output could not be re-read") from None
    texts = [(tag, vr in _NUMERIC_VRS, text) for tag, vr, value in elements
             if tag >> 16 != _PIXEL_GROUP for text in _texts(value)]
    return texts, spans


def _search_values(matcher: _Matcher, texts: list[tuple[int, bool, str]], numeric: bool) -> None:
    """Search all values at once, joined by NUL (which no needle matches), and name the
    element a match falls in."""
    if not texts:
        return
    starts, position = [], 0
    for _, _, text in texts:
        starts.append(position)
        position += len(text) + 1
    joined = "\x00".join(text for _, _, text in texts)
    needle = matcher.find_text(joined, numeric=numeric)
    if needle is None:
        return
    match = needle.pattern.search(joined) or needle.pattern.search(_fold_in_place(joined))
    index = bisect.bisect_right(starts, match.start() if match else 0) - 1
    tag = texts[max(index, 0)][0]
    raise PHIRemainsError(f"verification failed: identifying value remains in {_tag(tag)}")


def verify_output(original: Dataset | None, data: bytes, *,
                  needles: list[Needle] | None = None) -> None:
    """Raise PHIRemainsError if any identifying input value appears in ``data``.

    ``data`` is a Part 10 file, or its header only (pixel data streamed and scanned
    separately with ``scan_bytes(..., pixel=True)``). ``needles``: collect_needles(original)
    when the caller has them already."""
    if needles is None:
        if original is None:
            raise ValueError("verify_output needs the input data set or its needles")
        needles = collect_needles(original)
    matcher = _Matcher(needles)
    if not matcher.needles:
        return
    try:
        # Our own reading of the bytes for the usual outputs, pydicom's for the rest.
        walked = verify_walk.walk(data)
        texts, spans = walked.texts(), walked.pixel_spans
    except verify_walk.Unwalkable:
        texts, spans = _read_with_pydicom(data)
    # 1. Every element, decoded with the output's character set; binary values as
    #    Latin-1 (which the \xHH forms of every needle match).
    in_text = matcher.within("\x00".join(t for _, _, t in texts))
    for numeric in (False, True):
        _search_values(in_text, [t for t in texts if t[1] == numeric], numeric)
    # 2. The raw bytes outside pixel data: preamble, undecodable values, anything else.
    buffer = bytearray(data)
    for start, end in spans:
        buffer[start:end] = b"\x00" * (end - start)
    outside = bytes(buffer)
    in_bytes = matcher.within_bytes(outside)
    found = in_bytes.find_bytes(outside[:128], numbers=True) or in_bytes.find_bytes(outside)
    if found is not None:
        needle, offset = found
        where = "the preamble" if offset < 128 else "output bytes"
        raise PHIRemainsError(
            f"verification failed: identifying value from {_tag(needle.source)} remains in {where}")
    # 3. Pixel data values: long values only (short ones match binary data by chance).
    for start, end in spans:
        found = matcher.find_bytes(data[start:end], pixel=True)
        if found is not None:
            raise PHIRemainsError(
                "verification failed: identifying value from "
                f"{_tag(found[0].source)} remains in pixel data bytes")
