"""What a search backend answers: the one interface the pages, the API, orders and saved
searches use (``search_backend()`` picks the implementation).

Three implementations, none inheriting from another: PostgresSearch (postgres.py, SQL),
ColumnarSearch (memory/columnar.py, numpy columns in memory) and ElasticSearch (elastic.py,
Elasticsearch or OpenSearch). They share helpers as module functions
(postgres.published_datasets, postgres.dataset_passes, postgres.study_rows) and must give
the same answers (tests/catalog/test_search_contract.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from catalog.search.postgres import DatasetInfo
    from catalog.search.query import Query


@runtime_checkable
class SearchBackend(Protocol):
    name: str

    def datasets(self, query: Query) -> dict[int, DatasetInfo]:
        """Published datasets within the price range (and the query's dataset set)."""

    def passes(self, info: DatasetInfo, query: Query, skip: str | None = None) -> bool:
        """Whether a dataset meets the query's dataset-level filters (but ``skip``)."""

    def counts(self, query: Query, datasets: dict[int, DatasetInfo], *,
               facets: bool = True) -> dict[str, dict[str, int]]:
        """{"dataset": {id: studies with every filter}, facet: {value: studies with every
        filter but the facet's own}} (see PostgresSearch.counts)."""

    def breakdown(self, query: Query, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        """Studies per value of each dimension, every filter applied."""

    def by_dataset(self, query: Query, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        """Studies per dataset and value of one dimension, every filter applied."""

    def patients(self, query: Query, dataset_ids: list[int]) -> dict[int, int]:
        """Distinct patients per dataset among the matching studies."""

    def study_ids(self, query: Query, dataset_ids: list[int]) -> list[int]:
        """Every matching study of these datasets, by id (what an order takes)."""

    def studies(self, query: Query, dataset_ids: list[int], *, offset: int,
                limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of matching study rows in the query's sort, and how many match."""


__all__ = ["SearchBackend"]
