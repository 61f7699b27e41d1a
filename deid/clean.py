"""Clean Descriptors: scrub known identifying tokens out of free text we keep."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from deid.walk import iter_elements

# Patterns that look identifying whatever the file says: dates, long digit runs (MRNs,
# phone numbers), e-mail addresses.
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_GENERIC = re.compile(
    r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"
    r"|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"
    # "4 March 2021", "4th of Mar. 2021", "March 4, 2021", "Nov 2021"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\.?\s*(?:of\s+)?{_MONTH}\b\.?,?\s*(?:\d{{2,4}}\b)?"
    rf"|\b{_MONTH}\b\.?\s*\d{{1,2}}(?:st|nd|rd|th)?\b,?\s*(?:\d{{4}}\b)?"
    rf"|\b{_MONTH}\b\.?,?\s*\d{{4}}\b"
    r"|\d{5,}"
    r"|\+?\(?\d{2,4}\)?[-. ]\d{3,4}[-. ]\d{2,4}\b"  # phone numbers
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    # Ages over 89 identify (HIPAA Safe Harbor; PatientAge is capped at 090Y the same way):
    # "93 year old", "92yo", "aged 95", "age: 101".
    r"|\b(?:9\d|1\d\d)\s*-?\s*(?:years?|yrs?|y\.?\s?o\b\.?)(?:[\s-]*old\b)?"
    r"|\bage[ds]?\b\s*:?\s*(?:9\d|1\d\d)\b"
    r"|\b\d{3}[- ]\d{2}[- ]\d{4}\b",  # US social security numbers
    re.IGNORECASE,
)
# A title and the capitalised words after it are a name, whether or not the file names
# that person ("Referred by Dr. Avery Quinn"). Case matters: "MR KNEE" and "DR CHEST"
# are modalities, so all-capital titles count only with their period ("DR. QUINN").
_TITLED_NAME = re.compile(
    r"\b(?:Dr|Mr|Mrs|Ms|Prof|Doctor|DOCTOR|Miss)\b\.?[ \t]+[A-Z][A-Za-z'\u2019-]+"
    r"(?:[ \t]+[A-Z][A-Za-z'\u2019-]+)?"
    r"|\b(?:DR|MR|MRS|MS|PROF)\.[ \t]*[A-Z][A-Za-z'\u2019-]+(?:[ \t]+[A-Z][A-Za-z'\u2019-]+)?"
)
# Words of institution names and addresses that identify nothing on their own (the
# rest of an institution's or address's words are scrubbed out of descriptors).
_GENERIC_WORDS = frozenset("""
hospital hospitals clinic clinics clinical medical medicine center centre centers general
university universitat universite college school health healthcare care saint sainte
department dept radiology radiological imaging diagnostic diagnostics institute
foundation services service children childrens women womens memorial regional community
national state county city street road avenue drive lane boulevard blvd suite floor
building systems system north south east west unit ward infirmary trust cancer heart
nuclear research district private public group network practice partners associates
the and for with main park place square court hall house level room box
""".split())
_PLACE_KEYWORDS = frozenset({
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianAddress", "PatientAddress", "PersonAddress", "ResponsibleOrganization",
    "RegionOfResidence",
})


@lru_cache(maxsize=1)
def identifier_tags() -> frozenset[int]:
    text = resources.files("deid").joinpath("data", "identifiers.json").read_text("utf-8")
    tags = (tag_for_keyword(k) for k in json.loads(text)["keywords"])
    return frozenset(t for t in tags if t is not None)


_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                "dec"]


def _date_variants(value: str) -> set[str]:
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2}).*", value)
    if not m:
        return {value} if len(value) >= 4 else set()
    y, mo, d = m.groups()
    out = {y + mo + d}
    for a, b in ((mo, d), (d, mo), (mo.lstrip("0"), d.lstrip("0")), (d.lstrip("0"), mo.lstrip("0"))):
        for sep in "-/. ":
            out.add(f"{a}{sep}{b}{sep}{y}")
            out.add(f"{y}{sep}{a}{sep}{b}")
    return out


def _date_patterns(value: str) -> list[str]:
    """Month-name forms of a DA value: "7 Nov 1963", "November 7th, 1963"."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2}).*", value)
    if not m or not 1 <= int(m[2]) <= 12:
        return []
    y, month, d = m[1], _MONTH_NAMES[int(m[2]) - 1], f"0?{int(m[3])}"
    return [rf"(?<!\d){d}(?:st|nd|rd|th)?[\s.,-]*(?:of\s+)?{month}[a-z]*\.?[\s.,-]*{y}(?!\d)",
            rf"(?<![A-Za-z]){month}[a-z]*\.?[\s.,-]*{d}(?:st|nd|rd|th)?[\s.,-]*{y}(?!\d)"]


# What may stand between the characters of a phone number or id written another way
# ("555.019.9770", "123-45-6789"): these, deleted for the quick test, and as a pattern.
_SEPARATORS = " \t\n\r\x0b\x0c()./-"
_DELETE_SEPARATORS = str.maketrans("", "", _SEPARATORS)
_SEPARATOR_RUN = r"[\s().\-/]*"


def _spaced(compact: str) -> str:
    return _SEPARATOR_RUN.join(re.escape(c) for c in compact)


def _phone_pattern(value: str) -> tuple[str, str] | None:
    """(digits, pattern) of a phone number written with any separators."""
    digits = re.sub(r"\D", "", value)
    return (digits, rf"(?<!\d){_spaced(digits)}(?!\d)") if len(digits) >= 7 else None


def _spaced_id_pattern(value: str) -> tuple[str, str] | None:
    """(compact form, pattern) of an id written with other separators: 123456789 as
    "123-45-6789", ACC5533Q as "acc 5533q"; ids of 6+ letters and digits, one a digit."""
    compact = re.sub(r"[^0-9A-Za-z]", "", value).lower()
    if len(compact) < 6 or not any(c.isdigit() for c in compact) or not value.isascii():
        return None
    if compact.isdigit():
        return compact, rf"(?<!\d){_spaced(compact)}(?!\d)"
    return compact, rf"(?<![A-Za-z0-9]){_spaced(compact)}(?![A-Za-z0-9])"


def _name_words(text: str) -> set[str]:
    """Components of a person name, also split at hyphens ("SMYTHE-JONES")."""
    words: set[str] = set()
    for part in re.split(r"[^\w'\-]+", text):  # at anything but letters, digits, "_"
        words.update(w.strip("-'") for w in (part, *part.split("-"), *part.split("'")))
    return {w for w in words if w}


# Names keep or lose their marks from one system to the next ("Müller", "Muller",
# "Mueller"): letters NFKD leaves whole, and German / Scandinavian ASCII spellings.
_WHOLE_LETTERS = str.maketrans({"ß": "ss", "Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D",
                                "đ": "d", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe",
                                "Þ": "TH", "þ": "th", "ı": "i", "Ħ": "H", "ħ": "h"})
_SPELLED_OUT = str.maketrans({"Ä": "AE", "ä": "ae", "Ö": "OE", "ö": "oe", "Ü": "UE",
                              "ü": "ue", "Å": "AA", "å": "aa", "Ø": "OE", "ø": "oe"})


def _without_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_WHOLE_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _plain_spellings(values: Iterable[str]) -> set[str]:
    """ASCII spellings of the non-ASCII Latin values: MÜLLER -> MULLER, MUELLER."""
    spellings = set()
    for value in values:
        if not value.isascii():
            spellings |= {s for s in (_without_marks(value),
                                      _without_marks(value.translate(_SPELLED_OUT)))
                          if s.isascii()}
    return spellings


def _marks_dropped_in_place(text: str) -> str:
    """One character for each: a marked Latin letter becomes its base letter."""
    out = []
    for ch in text:
        base = _without_marks(ch) if not ch.isascii() else ch
        out.append(base[0] if base and base[0].isascii() else ch)
    return "".join(out)


def _written_together(text: str) -> set[str]:
    """A person name's parts without spaces, hyphens, apostrophes (OBRIEN, VANDERBERG),
    and family + given name in either order (DOEJANE, JANEDOE)."""
    found = set()
    for group in text.split("="):
        parts = group.split("^")
        plain = [re.sub(r"[\W_]+", "", part) for part in parts]
        found.update(p for p, part in zip(plain, parts) if len(p) >= 4 and p != part.strip())
        for token in (t for part in parts for t in re.split(r"[\s-]+", part)):
            if len(squeezed := re.sub(r"[\W_]+", "", token)) >= 4 and squeezed != token:
                found.add(squeezed)  # O'BRIEN-VAN DER BERG: OBRIEN
        if len(plain) > 1 and plain[0] and plain[1] and len(plain[0] + plain[1]) >= 6:
            found.update((plain[0] + plain[1], plain[1] + plain[0]))
    return {word for word in found if not word.isdigit()}


# Words this long are scrubbed also where glued to other letters ("DrQuimby"), as the
# verifier finds them there; shorter ones only as whole words.
GLUED_LEN = 6


_PATIENT_NAME = 0x00100010


def latin_name(text: str) -> bool:
    """Whether a person name is written in Latin script only (ASCII, or Latin letters
    with marks: MÜLLER, ŁUKASIEWICZ). A name in another script (山田^太郎) has romanised
    forms ("Yamada Taro") that neither the scrubber nor the verifier can know; a value
    that did not decode (U+FFFD) is not Latin either."""
    if text.isascii():
        return True
    for ch in text:
        if ch.isalpha() and not ch.isascii():
            if not unicodedata.name(ch, "").startswith("LATIN "):
                return False
        elif not ch.isascii() and not ch.isspace() and ch not in "'\u2019-.":
            return False
    return True


class Scrubber:
    """Built once per input file from its identifying attributes (any depth)."""

    def __init__(self, substrings: Iterable[str], words: Iterable[str],
                 patterns: Iterable[str] = (), spaced: Iterable[tuple[str, str]] = (),
                 names_verifiable: bool = False) -> None:
        """``spaced``: (compact form, pattern) of values written with any separators.
        ``names_verifiable``: the file names its patient and every person name in it is
        in Latin script (see latin_names); only then is opted-in patient free text kept."""
        self.names_verifiable = names_verifiable
        subs = sorted({s for s in substrings if len(s) >= 3}, key=len, reverse=True)
        word_list = sorted({w for w in words if len(w) >= 2}, key=len, reverse=True)
        parts = sorted(set(patterns), key=len, reverse=True)
        # (lower-case literal every match contains, or None; lower-case letters and digits
        # a match holds once separators are deleted, or None; regex), in the order of the
        # one alternation they form: longest first.
        self._parts: list[tuple[str | None, str | None, str]] = sorted(
            ((None, compact, p) for compact, p in set(spaced)), key=lambda t: -len(t[2]))
        self._parts += [(_literal(p), None, p) for p in parts]
        self._parts += [(_ascii_lower(s), None, re.escape(s)) for s in subs]
        self._parts += [(_ascii_lower(w), None, re.escape(w) if len(w) >= GLUED_LEN
                         else rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])")
                        for w in word_list]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Scrubber:
        values = []
        for elem in iter_elements(ds, want=_wanted):
            for value in (elem.value if elem.VM > 1 else [elem.value]):
                values.append((int(elem.tag), elem.VR, str(value) if value is not None else ""))
        return cls.from_values(values, device=" ".join(
            str(ds.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")))

    @classmethod
    def from_values(cls, values: Iterable[tuple[int, str, str]], device: str) -> Scrubber:
        """From (tag, VR, one value) of every PN, DA and DT value and every value of the
        identifier attributes (identifier_tags), standard attributes at any depth."""
        device = device.lower()
        places = _place_tags()
        substrings: set[str] = set()
        words: set[str] = set()
        patterns: set[str] = set()
        spaced: set[tuple[str, str]] = set()
        patient_named, names_latin = False, True
        for tag, vr, value in values:
            text = value.strip().strip("\x00")
            if vr == "PN":
                names_latin = names_latin and latin_name(text)
                patient_named = patient_named or (tag == _PATIENT_NAME and bool(text.strip("^= ")))
            if not text:
                continue
            if vr in ("DA", "DT"):
                substrings |= _date_variants(text)
                patterns.update(_date_patterns(text))
                continue
            substrings.add(text)
            phone = _phone_pattern(text) if tag in _telephone_tags() else None
            if phone:
                spaced.add(phone)
            if vr == "PN":
                words.update(_name_words(text) | _written_together(text))
                base = re.sub(r"\^+", "^", text.strip("^= "))
                substrings.update({base.replace("^", " "), base.replace("^", ", ")})
            else:
                if tag in places:
                    words.update(w for w in re.split(r"[\s,.;:/()\-#&]+", text)
                                 if len(w) >= 4 and not w.isdigit()
                                 and w.lower() not in _GENERIC_WORDS
                                 and w.lower() not in device)
                # Number-bearing parts of IDs and addresses: "MRN-123456" -> "123456".
                substrings.update(p for p in re.split(r"[^A-Za-z0-9]+", text)
                                  if any(c.isdigit() for c in p))
                if (written_otherwise := _spaced_id_pattern(text)) is not None:
                    spaced.add(written_otherwise)
        substrings |= _plain_spellings(substrings)
        words |= _plain_spellings(words)
        return cls(substrings, words, patterns, spaced,
                   names_verifiable=patient_named and names_latin)

    def clean(self, text: str) -> str:
        # Titled names first: a known value may be the title itself (a name suffix "DR" in
        # the file), and removing it first would leave "for . Avery Quinn" unmatched.
        text = _TITLED_NAME.sub(" ", text)
        # Only the known values that can occur in this text go into the expression
        # (a plain substring test on ASCII text): same result, a fraction of the cost.
        lowered = text.lower() if text.isascii() else None
        if lowered is None:
            candidates = tuple(part for _, _, part in self._parts)
        else:
            squeezed = None
            kept = []
            for literal, compact, part in self._parts:
                if literal is not None and literal not in lowered:
                    continue
                if compact is not None:
                    if squeezed is None:
                        squeezed = lowered.translate(_DELETE_SEPARATORS)
                    if compact not in squeezed:
                        continue
                kept.append(part)
            candidates = tuple(kept)
        if candidates:
            pattern = _alternation(candidates)
            text = pattern.sub(" ", text)
            if not text.isascii():  # "Müller" written, MULLER in the file: same places
                text = _cut(text, pattern.finditer(_marks_dropped_in_place(text)))
        text = _GENERIC.sub(" ", text)
        text = _TITLED_NAME.sub(" ", text)
        return re.sub(r"\s{2,}", " ", text).strip(" ,;:-^")


def _cut(text: str, matches: Iterable[re.Match[str]]) -> str:
    pieces, last = [], 0
    for match in matches:
        pieces += [text[last:match.start()], " "]
        last = match.end()
    return "".join(pieces) + text[last:]


def _wanted(tag: int, vr: str) -> bool:
    return vr in ("PN", "DA", "DT") or tag in identifier_tags()


@lru_cache(maxsize=1)
def _place_tags() -> frozenset[int]:
    return frozenset(t for t in (tag_for_keyword(k) for k in _PLACE_KEYWORDS) if t is not None)


@lru_cache(maxsize=1)
def _telephone_tags() -> frozenset[int]:
    return frozenset(t for t in identifier_tags() if "Telephone" in (keyword_for_tag(t) or ""))


@lru_cache(maxsize=4096)
def _alternation(parts: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(parts), re.IGNORECASE)


def _ascii_lower(text: str) -> str | None:
    return text.lower() if text.isascii() else None


def _literal(pattern: str) -> str | None:
    """The year every date pattern spells (they end in it), for the substring test."""
    m = re.search(r"(\d{4})\(\?!\\d\)$", pattern)
    return m.group(1) if m else None
