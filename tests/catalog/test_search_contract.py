"""One contract, every backend: the in-memory columns (columnar), PostgreSQL and
Elasticsearch (here osmem-server, an in-memory OpenSearch-compatible server started once by
tests/embedded_services.py; each test writes to a clone of its own) give the same answers
for the same catalog. PostgreSQL is the reference; any difference is a failure.
"""
from __future__ import annotations

import pytest

from catalog.facets import STUDY_FACETS
from catalog.models import Series, Study
from catalog.search import ColumnarSearch, PostgresSearch, SearchBackend
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.query import Query
from catalog.search.service import (
    MIX_DIMENSIONS,
    STUDY_PAGE_SIZE,
    browsable_studies,
    cohort_study_ids,
    cohort_summary,
    facets_and_total,
    fill_the_gap,
)
from catalog.search.vectors import studies_refresh_search_vector

pytestmark = pytest.mark.django_db

BACKENDS = ["columnar", "elasticsearch"]  # each compared with PostgreSQL
DESCRIPTIONS = ["axial chest study", "lungs with nodules", "follow-up of the liver", "knee meniscus tear",
                "running protocol", "nodule, lung apex", ""]
# Keyword searches. PostgreSQL stems the query with its english configuration even where
# the words were indexed with the simple one (body part, modality, maker, model): a maker
# whose english stem differs from the word ("SIEMENS" -> "siemen", "PHILIPS" -> "philip") is never found by
# PostgreSQL (nor the columns, which take its matches), while Elasticsearch analyses the
# query per field and finds it. That exact difference is asserted below, word by word;
# every other word must give identical answers.
KEYWORDS = ["pneumonia", "chest", "axial chest", "lung", "lungs", "nodules", "nodule", "liver",
            "follow-up", "meniscus tear", "tear -knee", "lung or liver", "running", "run", "set", "CT",
            "kernel", "soft tissue", "nosuchword"]
STEMMING_DIFFERS = {"siemens": "SIEMENS", "philips": "PHILIPS"}  # the word -> the manufacturer Elasticsearch finds


@pytest.fixture
def searched(catalog):
    """The catalog with varied descriptions, series, search vectors and snapshots current."""
    studies = list(Study.objects.filter(dataset__in=catalog).order_by("id"))
    for i, study in enumerate(studies):
        study.description = DESCRIPTIONS[i % len(DESCRIPTIONS)]
    Study.objects.bulk_update(studies, ["description"])
    Series.objects.bulk_create([Series(study=s, series_uid=f"1.{s.pk}", modality=(s.modalities or ["OT"])[0],
                                       description="bone kernel" if s.pk % 3 else "soft tissue")
                                for s in studies[::2]])
    for dataset in catalog:
        studies_refresh_search_vector(dataset=dataset)
        snapshot_refresh(dataset_id=dataset.pk)
    return catalog


@pytest.fixture
def backend(request, searched) -> SearchBackend:
    if request.param == "columnar":
        return ColumnarSearch()
    request.getfixturevalue("search_engine")  # this test's own clone of the osmem server
    from catalog.search.elastic import ElasticSearch, index_dataset

    for dataset in searched:
        index_dataset(dataset_id=dataset.pk)
    return ElasticSearch()


def _every(backend: SearchBackend, query: Query, ids: list[int]) -> dict:
    """Everything a backend answers for one query."""
    datasets = backend.datasets(query)
    return {"counts": backend.counts(query, datasets),
            "plain": backend.counts(query, datasets, facets=False),
            "breakdown": backend.breakdown(query, ids, list(STUDY_FACETS)),
            "by_dataset": {name: backend.by_dataset(query, ids, name) for name in MIX_DIMENSIONS},
            "patients": backend.patients(query, ids),
            "study_ids": backend.study_ids(query, ids)}


def test_every_backend_implements_the_protocol(searched) -> None:
    from catalog.search.elastic import ElasticSearch

    for cls in (PostgresSearch, ColumnarSearch, ElasticSearch):
        assert isinstance(cls(), SearchBackend)
        assert cls.__mro__[1:] == (object,), f"{cls.__name__} inherits from another backend"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("q", KEYWORDS)
def test_keyword_searches_agree(backend, searched, q) -> None:
    ids = [d.pk for d in searched]
    query = Query(q=q)
    assert _every(backend, query, ids) == _every(PostgresSearch(), query, ids)


@pytest.mark.parametrize("q", sorted(STEMMING_DIFFERS))
def test_the_one_stemming_difference_is_what_the_readme_says(searched, search_engine, q) -> None:
    from catalog.search.elastic import ElasticSearch, index_dataset

    for dataset in searched:
        index_dataset(dataset_id=dataset.pk)
    ids, query = [d.pk for d in searched], Query(q=q)
    assert PostgresSearch().study_ids(query, ids) == ColumnarSearch().study_ids(query, ids) == []
    maker = Query(filters={"manufacturer": [STEMMING_DIFFERS[q]]})
    assert ElasticSearch().study_ids(query, ids) == PostgresSearch().study_ids(maker, ids) != []


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_every_facet_agrees(backend, searched) -> None:
    ids = [d.pk for d in searched]
    sql = PostgresSearch()
    everything = sql.counts(Query(), sql.datasets(Query()))
    for name in STUDY_FACETS:
        values = sorted(everything[name])
        assert values, name
        for chosen in ([values[0]], values[:2], [values[-1]]):
            query = Query(filters={name: chosen})
            assert _every(backend, query, ids) == _every(sql, query, ids), (name, chosen)
        # with a keyword and a dataset-level filter besides
        query = Query(q="chest", filters={name: values[:1], "licence": ["academic", "free"]})
        assert _every(backend, query, ids) == _every(sql, query, ids), name


COHORTS = [Query(), Query(filters={"sex": ["F"]}),
           Query(q="lung", filters={"modality": ["CT"], "age_band": ["40-49", "60-69"]}),
           Query(filters={"slice_thickness": ["<1mm", "unknown"], "has_report": ["true"]}),
           Query(filters={"country": ["DE"], "manufacturer": ["GE"]}),
           Query(filters={"ethnicity": ["ASIAN"], "body_part": ["KNEE"], "sex": ["M"]})]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_cohorts_and_fill_the_gap_agree(backend, searched) -> None:
    sql = PostgresSearch()
    for query in COHORTS:
        assert cohort_summary(query=query, user=None, backend=backend) == \
            cohort_summary(query=query, user=None, backend=sql), query
        ids = sorted(backend.datasets(query))
        mix = sql.breakdown(query, ids, MIX_DIMENSIONS)
        assert fill_the_gap(query=query, user=None, backend=backend, mix=mix, chosen_ids=ids[:1]) == \
            fill_the_gap(query=query, user=None, backend=sql, mix=mix, chosen_ids=ids[:1]), query
        for dataset in searched:
            assert cohort_study_ids(query=query, dataset_id=dataset.pk, backend=backend) == \
                cohort_study_ids(query=query, dataset_id=dataset.pk, backend=sql)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_disclosure_hides_the_same_counts(backend, searched, alice) -> None:
    sql = PostgresSearch()
    small = [Query(filters={"ethnicity": ["ASIAN"], "body_part": ["KNEE"], "sex": ["M"],
                                 "age_band": ["18-29"]}),
             Query(filters={"licence": ["free"]}), Query(q="meniscus", filters={"sex": ["F"]})]
    for query in [*COHORTS, *small]:
        for user in (None, alice):
            mine = facets_and_total(query=query, user=user, backend=backend)
            assert mine == facets_and_total(query=query, user=user, backend=sql), query
    shown = facets_and_total(query=small[1], user=None, backend=backend)
    assert shown["total"] == "suppressed"  # 6 studies: below the threshold, hidden by every backend


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("sort", ["relevance", "newest", "size", "price", "-price"])
def test_pages_agree_in_every_sort(backend, searched, sort, settings) -> None:
    sql = PostgresSearch()
    ids = [d.pk for d in searched]
    for q in ["", "chest"]:
        query = Query(q=q, sort=sort, filters={"modality": ["CT", "MR"]})
        rows, total = sql.studies(query, ids, offset=0, limit=10_000)
        assert total > 100
        for offset, limit in [(0, 25), (25, 25), (total - 10, 25), (total, 25), (0, total)]:
            assert backend.studies(query, ids, offset=offset, limit=limit) == \
                sql.studies(query, ids, offset=offset, limit=limit), (q, offset, limit)
        assert browsable_studies(query=query, user=None, page=2, backend=backend) == \
            browsable_studies(query=query, user=None, page=2, backend=sql)
    assert STUDY_PAGE_SIZE == 25


def test_elasticsearch_pages_deeper_than_one_request_with_search_after(searched, search_engine, monkeypatch) -> None:
    """A page beyond one request's window (index.max_result_window; 7 here) is reached by
    search_after, never by ``from``; every study id of an order by composite pages."""
    from catalog.search import elastic

    for dataset in searched:
        elastic.index_dataset(dataset_id=dataset.pk)
    monkeypatch.setattr(elastic, "PAGE_CHUNK", 7)
    monkeypatch.setattr(elastic, "COMPOSITE_CHUNK", 9)
    ids = [d.pk for d in searched]
    for sort in ["newest", "size", "relevance", "price"]:
        query = Query(sort=sort)
        assert elastic.ElasticSearch().studies(query, ids, offset=600, limit=30) == \
            PostgresSearch().studies(query, ids, offset=600, limit=30), sort
    assert elastic.ElasticSearch().study_ids(Query(q="lung"), ids) == \
        PostgresSearch().study_ids(Query(q="lung"), ids)
