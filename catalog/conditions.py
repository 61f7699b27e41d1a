"""The conditions a provider tags a dataset with: ICD-10 codes picked from a curated list of
conditions commonly imaged (catalog/data/icd10_imaging.tsv), stored as the dataset has
always stored them, "ICD10:J18.9|Pneumonia, unspecified".

The provider form takes a code only from the list (a typo is refused, naming it); other
schemes ("SCT:233604007|Pneumonia") and the API keep the typed SCHEME:CODE|Label form
(catalog.datasets.services.clean_conditions)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

SCHEME = "ICD10"


@lru_cache(maxsize=1)
def icd10_titles() -> dict[str, str]:
    """Code → title, in file order."""
    text = resources.files("catalog").joinpath("data/icd10_imaging.tsv").read_text(encoding="utf-8")
    titles: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            code, title = line.split("\t", 1)
            titles[code.strip().upper()] = title.strip()
    return titles


def condition_value(code: str) -> str:
    """The stored form of a listed code: "ICD10:J18.9|Pneumonia, unspecified"."""
    return f"{SCHEME}:{code}|{icd10_titles()[code]}"


def picker_options() -> list[tuple[str, str]]:
    """(stored value, what the list shows) for every listed code, sorted by code."""
    return [(condition_value(code), f"{code} {title}") for code, title in sorted(icd10_titles().items())]


class UnknownConditionError(ValueError):
    pass


def resolve_condition(text: str, *, known: frozenset[str] = frozenset()) -> str:
    """One line the provider typed or picked, as a stored condition. A bare listed code
    ("J18.9") or an ICD-10 one without a title gets the list's title; a title the provider
    wrote is kept. ``known`` are the dataset's current conditions, accepted as they are
    (data from before the list). Other schemes pass through for the service to check."""
    text = " ".join(text.split())
    if text in known:
        return text
    code_part, bar, label = text.partition("|")
    scheme, colon, code = code_part.partition(":")
    if not colon:  # no scheme: a bare code, or a pasted "J18.9 Pneumonia" from the list
        scheme, code = SCHEME, code_part.split(" ", 1)[0]
    if scheme.strip().upper().replace("-", "") != SCHEME:
        return text
    code = code.strip().upper()
    if code not in icd10_titles():
        raise UnknownConditionError(
            f"{text[:60]!r} is not an ICD-10 code in our list of imaging conditions; search the list by code or "
            "name, or give another scheme as SCHEME:CODE|Label.")
    return f"{SCHEME}:{code}|{label.strip()}" if bar and label.strip() else condition_value(code)
