"""The Elasticsearch backend (elasticsearch.dsl): study counts with the same facet contract.

Used when SEARCH_BACKEND=elasticsearch and ELASTICSEARCH_URL are set (docker-compose.yml).
One document per live study, with the same dimension values the snapshots hold (bands for
slice thickness and field strength, "true"/"false" for the flags) and the words of its
PostgreSQL search vector (three text fields: English stemming for descriptions and the
dataset's title and conditions, plain words for body part, modality and maker, close to
PostgreSQL's configurations but not identical analysers); the worker bulk-indexes
a dataset's studies whenever they change (``index_dataset``). Counting: one request per
query, one ``filter`` aggregation per facet holding every filter but the facet's own, a
``terms`` aggregation inside. Dataset attributes (published, price, licence, provider,
country, conditions) are still read from PostgreSQL, as in the other backends, and study
pages still come from PostgreSQL.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from elasticsearch.dsl import A, Boolean, Document, Integer, Keyword, Q, Search, Text, connections
from elasticsearch.helpers import bulk

from catalog.search.dimensions import FIELD_SQL, SLICE_SQL, STUDY_FACETS, StudyQuery
from catalog.search.postgres import DatasetInfo, PostgresSearch, condition_label

TERMS_SIZE = 10_000
# Patient counts: exact below this many patients per dataset (HyperLogLog above it).
CARDINALITY_PRECISION = 40_000


class StudyDocument(Document):
    dataset_id = Integer()
    patient = Keyword()
    # The same words PostgreSQL's search vector holds (services/stats.py): the study's and
    # its series' descriptions, its body part, modalities, maker and model, and the
    # dataset's title and conditions.
    description = Text(analyzer="english")
    tags = Text(analyzer="standard")
    dataset_text = Text(analyzer="english")
    modality = Keyword(multi=True)
    body_part = Keyword()
    sex = Keyword()
    age_band = Keyword()
    ethnicity = Keyword()
    manufacturer = Keyword()
    model = Keyword()
    slice_thickness = Keyword()
    field_strength = Keyword()
    has_report = Keyword()
    has_annotation = Keyword()
    live = Boolean()

    class Index:
        name = "marketplace-studies"


def _connect() -> Any:
    if not settings.ELASTICSEARCH_URL:
        raise RuntimeError("ELASTICSEARCH_URL is not set")
    try:
        return connections.get_connection()
    except KeyError:
        return connections.create_connection(hosts=[settings.ELASTICSEARCH_URL], request_timeout=30)


def index_name() -> str:
    return settings.ELASTICSEARCH_INDEX


def ensure_index() -> None:
    """Create the index, or add the fields a newer StudyDocument has to its mapping
    (documents indexed before get them when their dataset is indexed again)."""
    _connect()
    StudyDocument.init(index=index_name())


_SOURCE = (f"id, dataset_id, pseudo_patient_id, description, modalities, body_part, patient_sex, age_band, "
           f"ethnicity, manufacturer, model, {SLICE_SQL}, {FIELD_SQL}, has_report, has_annotation, "
           "(SELECT string_agg(DISTINCT r.description, ' ') FROM catalog_series r "
           " WHERE r.study_id = catalog_study.id)")


def study_document(row: tuple, dataset_text: str) -> dict[str, Any]:
    """The indexed fields of one study (a row of _SOURCE)."""
    return {
        "dataset_id": row[1], "patient": f"{row[1]}:{row[2]}",
        "description": " ".join(part for part in (row[3], row[15]) if part),
        "tags": " ".join([row[5] or "", *(row[4] or []), row[9] or "", row[10] or ""]).strip(),
        "dataset_text": dataset_text,
        "modality": sorted(set(row[4] or [])), "body_part": row[5], "sex": row[6],
        "age_band": row[7], "ethnicity": row[8], "manufacturer": row[9], "model": row[10],
        "slice_thickness": row[11], "field_strength": row[12],
        "has_report": "true" if row[13] else "false",
        "has_annotation": "true" if row[14] else "false", "live": True}


def dataset_text(dataset_id: int) -> str:
    from catalog.models import Dataset

    dataset = Dataset.objects.get(pk=dataset_id)
    # As in the study's PostgreSQL vector: its conditions, not the dataset's title.
    return " ".join(condition_label(c) for c in dataset.conditions)


def index_dataset(*, dataset_id: int) -> int:
    """Replace the dataset's documents with its current live studies; returns how many."""
    client = _connect()
    ensure_index()
    client.delete_by_query(index=index_name(), query={"term": {"dataset_id": dataset_id}},
                           refresh=True, conflicts="proceed")

    shared_text = dataset_text(dataset_id)

    def actions():  # noqa: ANN202
        for row in study_rows_for_index(dataset_id):
            yield {"_index": index_name(), "_id": row[0], "_source": study_document(row, shared_text)}

    done, _ = bulk(client, actions(), refresh="wait_for")
    return int(done)


def study_rows_for_index(dataset_id: int) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SOURCE} FROM catalog_study WHERE dataset_id = %s AND instance_count > 0",
                       [dataset_id])
        while rows := cursor.fetchmany(5000):
            yield from rows


# The fields a keyword may match, like the single search vector in PostgreSQL.
KEYWORD_FIELDS = ["description", "tags", "dataset_text"]


def _facet_filters(query: StudyQuery) -> dict[str, Q]:
    return {name: Q("terms", **{name if not STUDY_FACETS[name].array else "modality": values})
            for name, values in query.study_filters().items()}


def _keyword(query: StudyQuery) -> Q | None:
    # simple_query_string never raises on odd syntax (quotes, operators, 10,000 characters).
    if not query.q:
        return None
    return Q("simple_query_string", query=query.q, fields=KEYWORD_FIELDS, default_operator="and")


def _field(name: str) -> str:
    return "modality" if STUDY_FACETS[name].array else name


def counts_search(query: StudyQuery, universe: list[int], chosen: list[int], *, facets: bool = True) -> Search:
    """The one request that counts everything (see PostgresSearch.counts for the contract)."""
    filters = _facet_filters(query)
    filters["_dataset"] = Q("terms", dataset_id=chosen)
    search = Search(index=index_name()).extra(size=0, track_total_hits=False)
    search = search.filter("terms", dataset_id=universe)
    keyword = _keyword(query)
    if keyword is not None:
        search = search.filter(keyword)

    def all_but(skip: str) -> Q:
        return Q("bool", filter=[q for name, q in filters.items() if name != skip])

    search.aggs.bucket("dataset", A("filter", all_but("_dataset"))).bucket(
        "values", A("terms", field="dataset_id", size=TERMS_SIZE))
    if facets:
        for name in STUDY_FACETS:
            search.aggs.bucket(f"facet_{name}", A("filter", all_but(name))).bucket(
                "values", A("terms", field=_field(name), size=TERMS_SIZE))
    return search


class ElasticSearch(PostgresSearch):
    name = "elasticsearch"

    def counts(self, query: StudyQuery, datasets: dict[int, DatasetInfo], *,
               facets: bool = True) -> dict[str, dict[str, int]]:
        _connect()
        chosen = [i for i, info in datasets.items() if self.passes(info, query)]
        response = counts_search(query, list(datasets), chosen, facets=facets).execute()
        aggs = response.aggregations
        out = {"dataset": {str(b.key): int(b.doc_count) for b in aggs.dataset.values.buckets}}
        if facets:
            for name in STUDY_FACETS:
                out[name] = {str(b.key): int(b.doc_count) for b in aggs[f"facet_{name}"].values.buckets}
        return out

    def _matching(self, query: StudyQuery, dataset_ids: list[int]) -> Search:
        _connect()
        search = Search(index=index_name()).extra(size=0, track_total_hits=False)
        search = search.filter("terms", dataset_id=dataset_ids)
        for q in _facet_filters(query).values():
            search = search.filter(q)
        keyword = _keyword(query)
        return search.filter(keyword) if keyword is not None else search

    def breakdown(self, query: StudyQuery, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        search = self._matching(query, dataset_ids)
        for name in dimensions:
            search.aggs.bucket(name, A("terms", field=_field(name), size=TERMS_SIZE))
        aggs = search.execute().aggregations
        return {name: {str(b.key): int(b.doc_count) for b in aggs[name].buckets} for name in dimensions}

    def by_dataset(self, query: StudyQuery, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        search = self._matching(query, dataset_ids)
        search.aggs.bucket("dataset", A("terms", field="dataset_id", size=TERMS_SIZE)).bucket(
            "values", A("terms", field=_field(dimension), size=TERMS_SIZE))
        aggs = search.execute().aggregations
        return {int(b.key): {str(v.key): int(v.doc_count) for v in b["values"].buckets}
                for b in aggs.dataset.buckets}

    def patients(self, query: StudyQuery, dataset_ids: list[int]) -> dict[int, int]:
        search = self._matching(query, dataset_ids)
        search.aggs.bucket("dataset", A("terms", field="dataset_id", size=TERMS_SIZE)).metric(
            "patients", A("cardinality", field="patient", precision_threshold=CARDINALITY_PRECISION))
        aggs = search.execute().aggregations
        return {int(b.key): int(b.patients.value) for b in aggs.dataset.buckets}
