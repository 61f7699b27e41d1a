"""The Elasticsearch / OpenSearch backend (elasticsearch.dsl): study counts with the same
facet contract as the other backends (catalog/search/backend.py).

Used when ELASTICSEARCH_URL is set (docker-compose.yml); SEARCH_ENGINE_FLAVOUR=opensearch
for OpenSearch (and osmem-server, the tests' in-memory stand-in), which refuse the
Elasticsearch 9 client's ``compatible-with=9`` media type (``JsonOnlyNode``).

One document per live study, its series as ``nested`` objects, with the same dimension
values the snapshots hold (bands for slice thickness and field strength, "true"/"false"
for the flags) and the words of its PostgreSQL search vector (three text fields: English
stemming for descriptions and the dataset's conditions, plain words for body part,
modality and maker; close to PostgreSQL's configurations but not identical analysers:
see the README). The series' descriptions are also copied into the study's
``description`` so keywords match across study and series text as PostgreSQL's one
vector does. Every facet in catalog/facets.py is a study attribute, so facets count study
documents directly; a series-level facet would be counted with a ``nested`` aggregation
and ``reverse_nested`` (studies, not series), see ``SERIES_FACETS``.

Counting: one request per query, with ``track_total_hits`` (exact totals), the facet
filters as ``post_filter`` (the hits obey every filter, each facet's aggregation every
filter but its own). Pages sort on the index with ``search_after``; an order's study ids
are enumerated with a composite aggregation. Index writes are the worker's
(``index_dataset``, from catalog.tasks.dataset_search_refresh_task); ``search_reindex``
(management command) builds a new index and swaps the alias ELASTICSEARCH_INDEX.
Dataset attributes (published, price, licence, provider, country, conditions) are read
from PostgreSQL, as in the other backends.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from elastic_transport import Urllib3HttpNode
from elasticsearch.dsl import (
    A,
    Boolean,
    Date,
    Document,
    InnerDoc,
    Integer,
    Keyword,
    Nested,
    Q,
    Search,
    Text,
    connections,
)
from elasticsearch.helpers import bulk

from catalog.facets import STUDY_FACETS
from catalog.search.postgres import (
    DatasetInfo,
    condition_label,
    dataset_passes,
    published_datasets,
    ranked_study_rows,
    study_rows,
)
from catalog.search.query import Query

TERMS_SIZE = 10_000
# Patient counts: exact below this many patients per dataset (HyperLogLog above it).
CARDINALITY_PRECISION = 40_000
PAGE_CHUNK = 10_000  # index.max_result_window: deeper pages walk with search_after
COMPOSITE_CHUNK = 10_000
RANK_AT_MOST = 100_000  # as columnar.py: keyword relevance is ranked by PostgreSQL (ts_rank)
# Facets whose values are attributes of series (nested): none in catalog/facets.py today
# (a test counts one this way).
SERIES_FACETS: frozenset[str] = frozenset()


class JsonOnlyNode(Urllib3HttpNode):
    """The Elasticsearch 9 client's node, sending plain JSON: OpenSearch (and osmem) answer
    ``application/vnd.elasticsearch+json; compatible-with=9`` with HTTP 406."""

    def perform_request(self, method: str, target: str, body: bytes | None = None,
                        headers: Any = None, **kwargs: Any) -> Any:
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "vnd.elasticsearch+" in value:
                    headers[name] = "application/x-ndjson" if "x-ndjson" in value else "application/json"
        return super().perform_request(method, target, body=body, headers=headers, **kwargs)


class SeriesDocument(InnerDoc):
    modality = Keyword()
    body_part = Keyword()
    manufacturer = Keyword()
    model = Keyword()
    description = Text(analyzer="english")


def _study_document_class() -> type[Document]:
    fields: dict[str, Any] = {
        "__module__": __name__,
        "study_id": Integer(),  # sort tie-breaker and composite source (sorting on _id is refused)
        "dataset_id": Integer(),
        "patient": Keyword(),
        # The same words PostgreSQL's search vector holds (catalog/search/vectors.py): the study's and
        # its series' descriptions, its body part, modalities, maker and model, and the
        # dataset's conditions.
        "description": Text(analyzer="english"),
        "tags": Text(analyzer="standard"),
        "dataset_text": Text(analyzer="english"),
        "study_date": Date(),
        "instance_count": Integer(),
        "series": Nested(SeriesDocument),
        "live": Boolean(),
    }
    # One keyword field per study-level facet, named as the facet: a facet added to
    # catalog/facets.py is indexed (after a reindex) with no change here.
    fields.update({name: Keyword(multi=facet.array) for name, facet in STUDY_FACETS.items()
                   if name not in SERIES_FACETS})
    return type(Document)("StudyDocument", (Document,), fields)


StudyDocument = _study_document_class()


def _connect() -> Any:
    """The client for the configured server (one per URL and flavour: tests switch them)."""
    url = settings.ELASTICSEARCH_URL
    if not url:
        raise RuntimeError("ELASTICSEARCH_URL is not set")
    flavour = settings.SEARCH_ENGINE_FLAVOUR
    alias = f"{flavour}:{url}"
    try:
        client = connections.get_connection(alias)
    except KeyError:
        options: dict[str, Any] = {"request_timeout": 30}
        if flavour == "opensearch":
            options["node_class"] = JsonOnlyNode
        client = connections.create_connection(alias, hosts=[url], **options)
    connections.add_connection("default", client)  # what Search / Document use
    return client


def index_name() -> str:
    """The alias searched and written (ELASTICSEARCH_INDEX)."""
    return settings.ELASTICSEARCH_INDEX


def building_alias() -> str:
    """The alias of an index being built by ``reindex_all`` (writes go there too)."""
    return f"{index_name()}--building"


def _create_index(*aliases: str) -> str:
    client = _connect()
    name = f"{index_name()}-{time.strftime('%Y%m%d%H%M%S')}-{time.time_ns() % 1_000_000:06d}"
    StudyDocument.init(index=name)
    client.indices.update_aliases(actions=[{"add": {"index": name, "alias": a}} for a in aliases])
    return name


def _indexes_of(alias: str) -> list[str]:
    client = _connect()
    if not client.indices.exists_alias(name=alias):
        return []
    return sorted(client.indices.get_alias(name=alias))


def ensure_index() -> None:
    """Create the first concrete index behind the alias, or add the fields a newer
    StudyDocument has to the mapping of the indexes behind it."""
    client = _connect()
    current = _indexes_of(index_name())
    if not current:
        if client.indices.exists(index=index_name()):
            raise RuntimeError(f"{index_name()} is an index, not an alias: run manage.py search_reindex "
                               "after deleting it")
        _create_index(index_name())
        return
    for name in current:
        client.indices.put_mapping(index=name, body=StudyDocument._doc_type.mapping.to_dict())


def drop_index() -> None:
    """Delete the alias's indexes (tests)."""
    client = _connect()
    for name in _indexes_of(index_name()) + _indexes_of(building_alias()):
        client.indices.delete(index=name, ignore_unavailable=True)


# A study row: these columns, then each study-level facet's value (its column, or its band).
_COLUMNS = ("id, dataset_id, pseudo_patient_id, description, modalities, body_part, manufacturer, model, "
            "(SELECT string_agg(DISTINCT r.description, ' ') FROM catalog_series r "
            " WHERE r.study_id = catalog_study.id), study_date, instance_count")
_FACETS_INDEXED = [facet for name, facet in STUDY_FACETS.items() if name not in SERIES_FACETS]
_SOURCE = ", ".join([_COLUMNS, *(facet.on_study() for facet in _FACETS_INDEXED)])


def _facet_value(facet: Any, value: Any) -> Any:
    """A facet's value as the snapshots hold it: "true"/"false" for flags, a sorted list of
    distinct codes for list columns."""
    if facet.boolean:
        return "true" if value else "false"
    if facet.array:
        return sorted(set(value or []))
    return value


def study_document(row: tuple, dataset_text: str, series: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The indexed fields of one study (a row of _SOURCE) and its series."""
    (study_id, dataset_id, patient, description, modalities, body_part, manufacturer, model, series_text,
     study_date, instance_count), facet_values = row[:11], row[11:]
    document = {
        "study_id": study_id, "dataset_id": dataset_id, "patient": f"{dataset_id}:{patient}",
        "description": " ".join(part for part in (description, series_text) if part),
        "tags": " ".join([body_part or "", *(modalities or []), manufacturer or "", model or ""]).strip(),
        "dataset_text": dataset_text,
        "study_date": study_date.isoformat() if study_date else None,
        "instance_count": instance_count,
        "series": series or [], "live": True}
    document.update({facet.name: _facet_value(facet, value) for facet, value in zip(_FACETS_INDEXED, facet_values)})
    return document


def dataset_text(dataset_id: int) -> str:
    from catalog.models import Dataset

    dataset = Dataset.objects.get(pk=dataset_id)
    # As in the study's PostgreSQL vector: its conditions, not the dataset's title.
    return " ".join(condition_label(c) for c in dataset.conditions)


def _series_of(study_ids: list[int]) -> dict[int, list[dict[str, str]]]:
    out: dict[int, list[dict[str, str]]] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT study_id, modality, body_part, manufacturer, model, description "
                       "FROM catalog_series WHERE study_id = ANY(%s) ORDER BY study_id, id", [study_ids])
        for study_id, *values in cursor.fetchall():
            out.setdefault(study_id, []).append(dict(zip(
                ("modality", "body_part", "manufacturer", "model", "description"), values)))
    return out


def _actions(dataset_id: int, target: str) -> Iterator[dict[str, Any]]:
    shared_text = dataset_text(dataset_id)
    batch: list[tuple] = []

    def flush() -> Iterator[dict[str, Any]]:
        series = _series_of([row[0] for row in batch])
        for row in batch:
            yield {"_index": target, "_id": row[0], "_source": study_document(row, shared_text, series.get(row[0]))}
        batch.clear()

    for row in study_rows_for_index(dataset_id):
        batch.append(row)
        if len(batch) >= 2000:
            yield from flush()
    yield from flush()


def _write_targets() -> list[str]:
    """The index behind the alias, and one being built by ``reindex_all`` if any."""
    return [index_name(), *([building_alias()] if _indexes_of(building_alias()) else [])]


def index_dataset(*, dataset_id: int) -> int:
    """Replace the dataset's documents with its current live studies, in the index behind
    the alias and in one being built by ``reindex_all``; returns how many. The worker's
    (catalog.tasks.dataset_search_refresh_task): web processes only search."""
    client = _connect()
    ensure_index()
    done = 0
    for target in _write_targets():
        client.delete_by_query(index=target, query={"term": {"dataset_id": dataset_id}},
                               refresh=True, conflicts="proceed")
        done, _ = bulk(client, _actions(dataset_id, target), refresh="wait_for")
    return int(done)


def unindex_dataset(*, dataset_id: int) -> int:
    """Remove a deleted dataset's documents (catalog.tasks.dataset_search_remove_task);
    returns how many were removed."""
    client = _connect()
    if not _indexes_of(index_name()):
        return 0
    removed = 0
    for target in _write_targets():
        answer = client.delete_by_query(index=target, query={"term": {"dataset_id": dataset_id}},
                                        refresh=True, conflicts="proceed")
        removed += int(answer.get("deleted", 0))
    return removed


def reindex_all() -> tuple[str, int]:
    """Build a new index of every dataset's live studies, then point the alias at it in one
    atomic alias update (searches never see a missing or half-built index) and delete the
    old ones. Returns the new index and how many documents it holds."""
    from catalog.models import Study

    client = _connect()
    for stale in _indexes_of(building_alias()):  # an earlier run that died
        client.indices.delete(index=stale, ignore_unavailable=True)
    new = _create_index(building_alias())
    total = 0
    for dataset_id in Study.objects.filter(instance_count__gt=0).values_list(
            "dataset_id", flat=True).distinct().order_by("dataset_id"):
        done, _ = bulk(client, _actions(dataset_id, new), refresh=False)
        total += int(done)
    client.indices.refresh(index=new)
    old = _indexes_of(index_name())
    if client.indices.exists(index=index_name()) and not old:  # a plain index of that name
        client.indices.delete(index=index_name())
    client.indices.update_aliases(actions=[
        *({"remove": {"index": name, "alias": index_name()}} for name in old),
        {"add": {"index": new, "alias": index_name()}},
        {"remove": {"index": new, "alias": building_alias()}}])
    for name in old:
        client.indices.delete(index=name, ignore_unavailable=True)
    return new, total


def study_rows_for_index(dataset_id: int) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SOURCE} FROM catalog_study WHERE dataset_id = %s AND instance_count > 0 "
                       "ORDER BY id", [dataset_id])
        while rows := cursor.fetchmany(5000):
            yield from rows


# The fields a keyword may match, like the single search vector in PostgreSQL.
KEYWORD_FIELDS = ["description", "tags", "dataset_text"]


def _field(name: str) -> str:
    if name in SERIES_FACETS:
        return f"series.{name}"
    return "modality" if STUDY_FACETS[name].array else name


def _facet_filter(name: str, values: list[str]) -> Q:
    if name in SERIES_FACETS:
        return Q("nested", path="series", query=Q("terms", **{_field(name): values}))
    return Q("terms", **{_field(name): values})


def _facet_filters(query: Query) -> dict[str, Q]:
    return {name: _facet_filter(name, values) for name, values in query.study_filters().items()}


def simple_query(q: str) -> str:
    """PostgreSQL's websearch syntax (websearch_to_tsquery: "or" between words, -word,
    "phrases") in simple_query_string's (| for or; - and quotes alike)."""
    return " ".join("|" if word.lower() == "or" else word for word in q.split())


def _keyword(query: Query) -> Q | None:
    # simple_query_string never raises on odd syntax (quotes, operators, 10,000 characters).
    if not query.q:
        return None
    return Q("simple_query_string", query=simple_query(query.q), fields=KEYWORD_FIELDS, default_operator="and")


def _values_agg(name: str) -> A:
    """Studies per value of a facet (series-level: per series value, counted in studies)."""
    if name in SERIES_FACETS:
        inner = A("terms", field=_field(name), size=TERMS_SIZE)
        inner.bucket("studies", A("reverse_nested"))
        outer = A("nested", path="series")
        outer.bucket("values", inner)
        return outer
    return A("terms", field=_field(name), size=TERMS_SIZE)


def _buckets(agg: Any, name: str) -> dict[str, int]:
    if name in SERIES_FACETS:
        return {str(b.key): int(b.studies.doc_count) for b in agg["values"].buckets if b.studies.doc_count}
    return {str(b.key): int(b.doc_count) for b in agg.buckets}


def counts_search(query: Query, universe: list[int], chosen: list[int], *, facets: bool = True) -> Search:
    """The one request that counts everything (see PostgresSearch.counts for the contract):
    the datasets and keywords as the query, every facet filter (and the dataset-level
    choice) as the post_filter, each facet's aggregation under every filter but its own."""
    filters = _facet_filters(query)
    filters["_dataset"] = Q("terms", dataset_id=chosen)
    search = Search(index=index_name()).extra(size=0, track_total_hits=True)
    search = search.filter("terms", dataset_id=universe)
    keyword = _keyword(query)
    if keyword is not None:
        search = search.filter(keyword)
    search = search.post_filter(Q("bool", filter=list(filters.values())))

    def all_but(skip: str) -> Q:
        return Q("bool", filter=[q for name, q in filters.items() if name != skip])

    search.aggs.bucket("dataset", A("filter", all_but("_dataset"))).bucket(
        "values", A("terms", field="dataset_id", size=TERMS_SIZE))
    if facets:
        for name in STUDY_FACETS:
            search.aggs.bucket(f"facet_{name}", A("filter", all_but(name))).bucket("values", _values_agg(name))
    return search


def _sort_keys(sort: str) -> list[dict[str, Any]] | None:
    """The index's sort for a page (ties by study id), as PostgresSearch.studies orders."""
    return {"relevance": [{"study_id": "asc"}],
            "newest": [{"study_date": {"order": "desc", "missing": "_last"}}, {"study_id": "asc"}],
            "size": [{"instance_count": {"order": "desc"}}, {"study_id": "asc"}]}.get(sort)


class ElasticSearch:
    """The Elasticsearch / OpenSearch implementation of catalog.search.backend.SearchBackend."""

    name = "elasticsearch"

    def datasets(self, query: Query) -> dict[int, DatasetInfo]:
        return published_datasets(query)

    @staticmethod
    def passes(info: DatasetInfo, query: Query, skip: str | None = None) -> bool:
        return dataset_passes(info, query, skip)

    def counts(self, query: Query, datasets: dict[int, DatasetInfo], *,
               facets: bool = True) -> dict[str, dict[str, int]]:
        _connect()
        chosen = [i for i, info in datasets.items() if self.passes(info, query)]
        response = counts_search(query, list(datasets), chosen, facets=facets).execute()
        aggs = response.aggregations
        out = {"dataset": {str(b.key): int(b.doc_count) for b in aggs.dataset["values"].buckets}}
        if facets:
            for name in STUDY_FACETS:
                out[name] = _buckets(aggs[f"facet_{name}"]["values"], name)
        return out

    def _matching(self, query: Query, dataset_ids: list[int]) -> Search:
        _connect()
        search = Search(index=index_name()).extra(size=0, track_total_hits=True)
        search = search.filter("terms", dataset_id=dataset_ids)
        for q in _facet_filters(query).values():
            search = search.filter(q)
        keyword = _keyword(query)
        return search.filter(keyword) if keyword is not None else search

    def breakdown(self, query: Query, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        if not dataset_ids:
            return {name: {} for name in dimensions}
        search = self._matching(query, dataset_ids)
        for name in dimensions:
            search.aggs.bucket(name, _values_agg(name))
        aggs = search.execute().aggregations
        return {name: _buckets(aggs[name], name) for name in dimensions}

    def by_dataset(self, query: Query, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        if not dataset_ids:
            return {}
        search = self._matching(query, dataset_ids)
        search.aggs.bucket("dataset", A("terms", field="dataset_id", size=TERMS_SIZE)).bucket(
            "values", _values_agg(dimension))
        aggs = search.execute().aggregations
        return {int(b.key): _buckets(b["values"], dimension) for b in aggs.dataset.buckets}

    def patients(self, query: Query, dataset_ids: list[int]) -> dict[int, int]:
        if not dataset_ids:
            return {}
        search = self._matching(query, dataset_ids)
        search.aggs.bucket("dataset", A("terms", field="dataset_id", size=TERMS_SIZE)).metric(
            "patients", A("cardinality", field="patient", precision_threshold=CARDINALITY_PRECISION))
        aggs = search.execute().aggregations
        return {int(b.key): int(b.patients.value) for b in aggs.dataset.buckets}

    def _all_ids(self, query: Query, dataset_ids: list[int]) -> Iterator[int]:
        """Every matching study id, ascending, a composite aggregation page at a time."""
        after: dict[str, Any] | None = None
        while True:
            search = self._matching(query, dataset_ids).extra(track_total_hits=False)
            options: dict[str, Any] = {"size": COMPOSITE_CHUNK,
                                       "sources": [{"id": {"terms": {"field": "study_id"}}}]}
            if after:
                options["after"] = after
            search.aggs.bucket("ids", A("composite", **options))
            result = search.execute().aggregations.ids
            yield from (int(b.key.id) for b in result.buckets)
            after = result.to_dict().get("after_key")
            if not after or len(result.buckets) < COMPOSITE_CHUNK:
                return

    def study_ids(self, query: Query, dataset_ids: list[int]) -> list[int]:
        if not dataset_ids:
            return []
        return list(self._all_ids(query, dataset_ids))

    def _page_ids(self, query: Query, dataset_ids: list[int], sort: list[dict[str, Any]],
                  offset: int, limit: int) -> tuple[list[int], int]:
        """Study ids of one page in this sort, and how many match (exact): ``search_after``
        in chunks of at most PAGE_CHUNK hits, so a page beyond index.max_result_window
        is reached without ``from``."""
        total, after, skipped, ids = 0, None, 0, []
        while True:
            want = min(PAGE_CHUNK, offset + limit - skipped - len(ids))
            search = self._matching(query, dataset_ids).extra(
                size=want, sort=sort, _source=False, track_total_hits=after is None)
            if after is not None:
                search = search.extra(search_after=after)
            response = search.execute()
            if after is None:
                total = int(response.hits.total.value)
            hits = list(response.hits)
            for hit in hits:
                if skipped < offset:
                    skipped += 1
                else:
                    ids.append(int(hit.meta.sort[-1]))
            if len(hits) < want or len(ids) >= limit:
                return ids[:limit], total
            after = list(hits[-1].meta.sort)

    def studies(self, query: Query, dataset_ids: list[int], *, offset: int,
                limit: int) -> tuple[list[dict[str, Any]], int]:
        """Pages in the same order as PostgresSearch.studies. Keyword relevance is ranked by
        PostgreSQL's ts_rank over the ids matched here (BM25 would order differently);
        price sorts walk the datasets in price order (price is a dataset attribute)."""
        if not dataset_ids:
            return [], 0
        _connect()
        if query.q and query.sort == "relevance":
            ids = list(self._all_ids(query, dataset_ids))
            if len(ids) > RANK_AT_MOST:
                from catalog.search.postgres import PostgresSearch

                return PostgresSearch().studies(query, dataset_ids, offset=offset, limit=limit)
            return ranked_study_rows(ids, query.q, offset, limit), len(ids)
        sort = _sort_keys(query.sort)
        if sort is not None:
            ids, total = self._page_ids(query, dataset_ids, sort, offset, limit)
            return study_rows(ids), total
        return self._price_page(query, dataset_ids, offset, limit)

    def _price_page(self, query: Query, dataset_ids: list[int], offset: int,
                    limit: int) -> tuple[list[dict[str, Any]], int]:
        """Price, then study id: datasets of equal price form one group paged by study id;
        the groups before the page are skipped by their counts."""
        from catalog.models import Dataset

        search = self._matching(query, dataset_ids)
        search.aggs.bucket("dataset", A("terms", field="dataset_id", size=TERMS_SIZE))
        per_dataset = {str(b.key): int(b.doc_count) for b in search.execute().aggregations.dataset.buckets}
        prices: dict[Any, list[int]] = {}
        for dataset_id, price in Dataset.objects.filter(id__in=dataset_ids).values_list("id", "price_per_study"):
            prices.setdefault(price, []).append(dataset_id)
        order = sorted(prices, reverse=query.sort == "-price")
        total = sum(per_dataset.values())
        ids: list[int] = []
        for price in order:
            group = prices[price]
            size = sum(per_dataset.get(str(i), 0) for i in group)
            if offset >= size:
                offset -= size
                continue
            page, _ = self._page_ids(query, group, [{"study_id": "asc"}], offset, limit - len(ids))
            ids += page
            offset = 0
            if len(ids) >= limit:
                break
        return study_rows(ids), total


__all__ = ["ElasticSearch", "JsonOnlyNode", "ensure_index", "index_dataset", "reindex_all", "unindex_dataset"]
