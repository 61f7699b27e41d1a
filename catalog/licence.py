"""Licence terms as structured data: one vocabulary for datasets, offers, order lines and
agreements, so that a page, a PDF and the entitlement job read the same terms.

Redistribution is never allowed: it is not a term anyone can set, only a line every
agreement states.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

USE_RESEARCH = "research"
USE_COMMERCIAL = "commercial"
USES = {USE_RESEARCH: "Research only (non-commercial)", USE_COMMERCIAL: "Research and commercial use"}
ACCESS_DOWNLOAD = "download"
ACCESS_VIEW_ONLY = "view_only"
ACCESS_MODES = {ACCESS_DOWNLOAD: "Download", ACCESS_VIEW_ONLY: "View in the browser only"}
WORLDWIDE = "worldwide"
MAX_TERM_MONTHS = 120
MAX_SEATS = 10_000
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class LicenceTermsError(ValueError):
    """Terms that cannot be stored; the message names the term and what is wrong."""


@dataclass(frozen=True)
class LicenceTerms:
    use: str = USE_RESEARCH
    term_months: int | None = 12  # None: perpetual
    seats: int | None = 5  # named users at the buyer; None: the whole buyer organization
    derivative_models: bool = True  # models trained on the data may be kept and used
    publication: bool = True  # results may be published (no images re-identifying anyone)
    territory: tuple[str, ...] = field(default=(WORLDWIDE,))  # ISO 3166 codes or "worldwide"
    access: str = ACCESS_DOWNLOAD

    redistribution = False  # class constant: never a term, always refused

    @classmethod
    def from_dict(cls, data: dict | None) -> LicenceTerms:
        """Validates and normalises stored or submitted terms; unknown keys are refused."""
        data = dict(data or {})
        if data.pop("redistribution", False) not in (False, None, "false", "no", ""):
            raise LicenceTermsError("Redistribution of the data is never allowed on this marketplace.")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise LicenceTermsError(f"Unknown licence term(s): {', '.join(sorted(unknown))}.")
        defaults = cls()
        use = data.get("use", defaults.use)
        if use not in USES:
            raise LicenceTermsError(f"Licence use must be one of {', '.join(USES)}, not {use!r}.")
        term = _optional_int(data.get("term_months", defaults.term_months), "term_months", 1, MAX_TERM_MONTHS)
        seats = _optional_int(data.get("seats", defaults.seats), "seats", 1, MAX_SEATS)
        territory = data.get("territory", defaults.territory)
        if isinstance(territory, str):
            territory = [t for t in re.split(r"[\s,]+", territory) if t]
        territory = tuple(str(t).strip().upper() if str(t).lower() != WORLDWIDE else WORLDWIDE for t in territory)
        if not territory:
            raise LicenceTermsError("Licence territory is empty: give country codes or 'worldwide'.")
        if WORLDWIDE in territory and len(territory) > 1:
            raise LicenceTermsError("Licence territory is either 'worldwide' or a list of countries, not both.")
        bad = [t for t in territory if t != WORLDWIDE and not _COUNTRY.match(t)]
        if bad:
            raise LicenceTermsError(f"Licence territory has codes that are not ISO 3166 country codes: {', '.join(bad)}.")
        access = data.get("access", defaults.access)
        if access not in ACCESS_MODES:
            raise LicenceTermsError(f"Licence access must be one of {', '.join(ACCESS_MODES)}, not {access!r}.")
        return cls(use=use, term_months=term, seats=seats,
                   derivative_models=_bool(data.get("derivative_models", defaults.derivative_models), "derivative_models"),
                   publication=_bool(data.get("publication", defaults.publication), "publication"),
                   territory=tuple(sorted(set(territory))), access=access)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["territory"] = list(self.territory)
        data["redistribution"] = False
        return data

    @property
    def is_perpetual(self) -> bool:
        return self.term_months is None

    def allows_country(self, country: str) -> bool:
        return WORLDWIDE in self.territory or (country or "").upper() in self.territory

    def describe(self) -> list[tuple[str, str]]:
        """(label, readable value) rows in a fixed order, for pages, PDFs and diffs."""
        return [
            ("Use", USES[self.use]),
            ("Term", "Perpetual" if self.term_months is None else _months(self.term_months)),
            ("Named users", "Whole buyer organization" if self.seats is None else str(self.seats)),
            ("Models trained on the data",
             "May be kept and used" if self.derivative_models else "Must be deleted at the end of the term"),
            ("Publication of results", "Allowed" if self.publication else "Not without the provider's written consent"),
            ("Redistribution of the data", "Never allowed"),
            ("Territory", "Worldwide" if WORLDWIDE in self.territory else ", ".join(self.territory)),
            ("Access", ACCESS_MODES[self.access]),
        ]


def terms_diff(old: LicenceTerms, new: LicenceTerms) -> list[tuple[str, str, str]]:
    """(label, before, after) for each term that differs, in display order."""
    return [(label, before, after) for (label, before), (_, after) in zip(old.describe(), new.describe())
            if before != after]


def _months(n: int) -> str:
    if n % 12 == 0:
        years = n // 12
        return f"{years} year" + ("s" if years != 1 else "")
    return f"{n} month" + ("s" if n != 1 else "")


def _optional_int(value: object, name: str, low: int, high: int) -> int | None:
    if value in (None, "", "perpetual", "unlimited"):
        return None
    if isinstance(value, bool):
        raise LicenceTermsError(f"Licence {name} must be a whole number, not {value!r}.")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise LicenceTermsError(f"Licence {name} must be a whole number, not {value!r}.") from None
    if not low <= number <= high:
        raise LicenceTermsError(f"Licence {name} must be between {low} and {high}, not {number}.")
    return number


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off", ""):
        return False
    raise LicenceTermsError(f"Licence {name} must be yes or no, not {value!r}.")


# ---- a dataset's licence type, price and own text beside its terms ---------------------------
# The licence types of catalog.models.LicenceType (search facets use them), as plain strings:
# this module stays free of Django.
LICENCE_COMMERCIAL, LICENCE_ACADEMIC, LICENCE_FREE = "commercial", "academic", "free"
LICENCE_TYPE_LABELS = {LICENCE_COMMERCIAL: "Commercial use", LICENCE_ACADEMIC: "Academic research",
                       LICENCE_FREE: "Free / open"}

# Phrases in a provider's own conditions that limit the data to research, and phrases that
# permit commercial use. A simple check: it catches a copied text that contradicts the
# structured terms, not every way of saying so.
_RESEARCH_ONLY = re.compile(
    r"non[- ]?commercial"
    r"|research[- ](?:use[- ]|purposes[- ])?only"
    r"|(?:academic|research) (?:research |use |purposes )?only"
    r"|only for (?:academic |non-?commercial )?research"
    r"|not (?:be )?(?:used )?for (?:any )?commercial"
    r"|no commercial (?:use|purposes?)"
    r"|commercial (?:use|purposes) (?:is |are )?(?:not (?:permitted|allowed)|prohibited|forbidden|excluded)",
    re.IGNORECASE)
_COMMERCIAL_OK = re.compile(
    r"(?<![-\w])(?<!non )commercial (?:use|purposes)(?: is| are)? (?:permitted|allowed)"
    r"|(?<![-\w])(?<!non )commercial use, including"
    r"|(?:permits?|allows?|including) commercial (?:use|purposes|products)"
    r"|may be used (?:commercially|for commercial)"
    r"|(?<!not )for commercial (?:use|purposes)",
    re.IGNORECASE)


def terms_for_licence_type(licence_type: str, *, pricing_model: str = "") -> LicenceTerms:
    """The terms a dataset had before terms were structured, from its licence type: what it
    was sold under (no term, the whole buyer organization), a yearly term for a
    subscription. Commercial allows commercial use; academic and free are research only."""
    return LicenceTerms(
        use=USE_COMMERCIAL if licence_type == LICENCE_COMMERCIAL else USE_RESEARCH,
        term_months=12 if pricing_model == "subscription" and licence_type != LICENCE_FREE else None,
        seats=None)


def licence_text_says_research_only(text: str) -> str:
    """The phrase of ``text`` limiting the data to research or non-commercial use, or ""."""
    found = _RESEARCH_ONLY.search(text or "")
    return found.group(0) if found else ""


def licence_text_permits_commercial(text: str) -> str:
    """The phrase of ``text`` permitting commercial use, or "" (phrases that limit the data
    to research are left out first: "not for commercial use" permits nothing)."""
    found = _COMMERCIAL_OK.search(_RESEARCH_ONLY.sub(" ", text or ""))
    return found.group(0) if found else ""


def terms_conflicts(terms: LicenceTerms, *, licence_type: str, price_minor: int, licence_text: str) -> list[str]:
    """Contradictions between a dataset's structured terms, its licence type, its price and
    the provider's own conditions, each message naming the fields; [] when consistent.
    Every writer of a dataset's terms (form, API, seed) refuses what this returns."""
    problems = []
    use_label = USES[terms.use]
    type_label = LICENCE_TYPE_LABELS.get(licence_type, licence_type)
    if licence_type == LICENCE_FREE and price_minor > 0:
        problems.append("Licence type and Price: a free / open licence is priced 0; set the price to 0 or "
                        "choose another licence type.")
    if licence_type == LICENCE_COMMERCIAL and terms.use != USE_COMMERCIAL:
        problems.append(f"Licence type and Use: the licence type is {type_label!r} but the use is "
                        f"{use_label!r}; choose research and commercial use, or another licence type.")
    if licence_type == LICENCE_ACADEMIC and terms.use != USE_RESEARCH:
        problems.append(f"Licence type and Use: the licence type is {type_label!r} but the use is "
                        f"{use_label!r}; choose research only, or the commercial licence type.")
    research_phrase = licence_text_says_research_only(licence_text)
    if research_phrase and terms.use == USE_COMMERCIAL:
        problems.append(f"Licence text and Use: the text says {research_phrase!r} but the use is "
                        f"{use_label!r}; change the text or choose research only.")
    commercial_phrase = licence_text_permits_commercial(licence_text)
    if commercial_phrase and terms.use == USE_RESEARCH:
        problems.append(f"Licence text and Use: the text says {commercial_phrase!r} but the use is "
                        f"{use_label!r}; change the text or allow commercial use.")
    return problems
