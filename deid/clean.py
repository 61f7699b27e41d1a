"""Clean Descriptors: scrub known identifying tokens out of free text we keep."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from deid.walk import iter_elements

# Patterns that look identifying whatever the file says: dates, long digit runs (MRNs,
# phone numbers), e-mail addresses.
_GENERIC = re.compile(
    r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"
    r"|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"
    r"|\d{5,}"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
)


@lru_cache(maxsize=1)
def identifier_tags() -> frozenset[int]:
    text = resources.files("deid").joinpath("data", "identifiers.json").read_text("utf-8")
    tags = (tag_for_keyword(k) for k in json.loads(text)["keywords"])
    return frozenset(t for t in tags if t is not None)


def _date_variants(value: str) -> set[str]:
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2}).*", value)
    if not m:
        return {value} if len(value) >= 4 else set()
    y, mo, d = m.groups()
    out = {y + mo + d}
    for a, b in ((mo, d), (d, mo), (mo.lstrip("0"), d.lstrip("0")), (d.lstrip("0"), mo.lstrip("0"))):
        for sep in "-/.":
            out.add(f"{a}{sep}{b}{sep}{y}")
            out.add(f"{y}{sep}{a}{sep}{b}")
    return out


class Scrubber:
    """Built once per input file from its identifying attributes (any depth)."""

    def __init__(self, substrings: Iterable[str], words: Iterable[str]) -> None:
        subs = sorted({s for s in substrings if len(s) >= 3}, key=len, reverse=True)
        word_list = sorted({w for w in words if len(w) >= 2}, key=len, reverse=True)
        parts = [re.escape(s) for s in subs]
        parts += [rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])" for w in word_list]
        self._known = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Scrubber:
        ids = identifier_tags()
        substrings: set[str] = set()
        words: set[str] = set()
        for elem in iter_elements(ds, want=lambda tag, vr: vr in ("PN", "DA", "DT") or tag in ids):
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                text = str(value).strip() if value is not None else ""
                if not text:
                    continue
                if elem.VR in ("DA", "DT"):
                    substrings |= _date_variants(text)
                    continue
                substrings.add(text)
                if elem.VR == "PN":
                    words.update(p for p in re.split(r"[\^=\s,]+", text) if p)
                else:
                    # Number-bearing parts of IDs and addresses: "MRN-123456" -> "123456".
                    substrings.update(p for p in re.split(r"[^A-Za-z0-9]+", text)
                                      if any(c.isdigit() for c in p))
        return cls(substrings, words)

    def clean(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(" ", text)
        text = _GENERIC.sub(" ", text)
        return re.sub(r"\s{2,}", " ", text).strip(" ,;:-^")
