"""Study-level search, facet counts and cohorts. PostgreSQL is the backend here;
``search_backend()`` is the one place that picks it."""
from __future__ import annotations

from catalog.search.columnar import ColumnarSearch
from catalog.search.dimensions import InvalidQueryError, StudyQuery, study_query_from
from catalog.search.postgres import PostgresSearch


def search_backend() -> PostgresSearch:
    """Counts in memory (columnar.py) by default; in Elasticsearch with
    SEARCH_BACKEND=elasticsearch and ELASTICSEARCH_URL set (elastic.py)."""
    from django.conf import settings

    if settings.SEARCH_BACKEND == "elasticsearch" and settings.ELASTICSEARCH_URL:
        from catalog.search.elastic import ElasticSearch

        return ElasticSearch()
    return ColumnarSearch()


__all__ = ["ColumnarSearch", "InvalidQueryError", "PostgresSearch", "StudyQuery", "search_backend",
           "study_query_from"]
