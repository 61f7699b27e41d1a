from __future__ import annotations

from marketplace.exceptions import ApplicationError


class CatalogError(ApplicationError):
    code = "catalog_error"


class UnsafeArchiveError(CatalogError):
    """A zip we refuse to expand: path traversal, too many members, too large."""

    code = "unsafe_archive"


class ProviderNotApprovedError(CatalogError):
    code = "provider_not_approved"


class ArchiveMemberError(CatalogError):
    """One zip member we cannot extract (damaged data, lying header); the rest goes on.
    The message names the problem, never the member (names may hold PHI)."""

    code = "bad_archive_member"


class LicenceConflictError(CatalogError):
    """Licence terms refused: invalid, or contradicting the licence type, the price or the
    provider's own conditions. ``problems`` lists one message per contradiction."""

    code = "licence_conflict"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems), extra={"problems": problems})
        self.problems = problems


class InvalidQueryError(CatalogError):
    """A search, cohort or saved-search query refused: the one error of the one parser
    (catalog/search/query.py). The message names the parameter; a bad value is echoed only
    as a short code-like excerpt (values are codes such as "F" or "40-49", never PHI)."""

    code = "invalid_search"
