from __future__ import annotations

from marketplace.exceptions import ApplicationError


class CatalogError(ApplicationError):
    code = "catalog_error"


class UnsafeArchiveError(CatalogError):
    """A zip we refuse to expand: path traversal, too many members, too large."""

    code = "unsafe_archive"


class ProviderNotApprovedError(CatalogError):
    code = "provider_not_approved"
