"""Kept for imports only: the facets live in the vocabulary (catalog/facets.py), the query
and its parser in catalog/search/query.py. New code imports from those."""
from __future__ import annotations

from catalog.exceptions import InvalidQueryError
from catalog.facets import (
    ALL_FILTERS, DATASET_LEVEL, FIELD_BANDS, FIELD_SQL, MAX_VALUES, RANGES, SEX_LABELS, SLICE_BANDS, SLICE_SQL,
    SORTS, STUDY_FACETS, YES_NO, Facet,
)
from catalog.search.query import MAX_QUERY_CHARS, Query, query_from

StudyQuery = Query
study_query_from = query_from

__all__ = ["ALL_FILTERS", "DATASET_LEVEL", "FIELD_BANDS", "FIELD_SQL", "MAX_QUERY_CHARS", "MAX_VALUES", "RANGES",
           "SEX_LABELS", "SLICE_BANDS", "SLICE_SQL", "SORTS", "STUDY_FACETS", "YES_NO", "Facet",
           "InvalidQueryError", "StudyQuery", "study_query_from"]
