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
