"""Study-level search, facet counts and cohorts. ``search_backend()`` is the one place that
picks the backend (catalog.search.backend.SearchBackend): Elasticsearch (or OpenSearch)
when ELASTICSEARCH_URL is set, else the in-memory columns."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from catalog.exceptions import InvalidQueryError
from catalog.search.backend import SearchBackend
from catalog.search.postgres import PostgresSearch
from catalog.search.query import Query, query_from

if TYPE_CHECKING:
    from catalog.search.memory.columnar import ColumnarSearch


def search_backend() -> SearchBackend:
    """Counts in Elasticsearch or OpenSearch (elastic.py) when ELASTICSEARCH_URL is set (the
    URL alone chooses it); in memory (memory/columnar.py) otherwise."""
    from django.conf import settings

    if settings.ELASTICSEARCH_URL:
        from catalog.search.elastic import ElasticSearch

        return ElasticSearch()
    # imported when used: the columns are numpy arrays (numpy costs a web worker about
    # 16 MB), loaded by the first request that searches, not at start
    from catalog.search.memory.columnar import ColumnarSearch

    return ColumnarSearch()


def __getattr__(name: str) -> Any:
    if name == "ColumnarSearch":  # imported when used, as in search_backend()
        from catalog.search.memory.columnar import ColumnarSearch

        return ColumnarSearch
    raise AttributeError(f"module 'catalog.search' has no attribute {name!r}")


__all__ = ["ColumnarSearch", "InvalidQueryError", "PostgresSearch", "Query", "SearchBackend", "query_from",
           "search_backend"]
