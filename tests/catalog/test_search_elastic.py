"""The Elasticsearch backend: its request is built to the facet contract, its documents hold
the study's words, its index is rebuilt behind the alias, and OpenSearch gets plain JSON.
That it gives the other backends' numbers is test_search_contract.py (on osmem-server)."""
from __future__ import annotations

import pytest

from catalog.facets import STUDY_FACETS
from catalog.search.elastic import KEYWORD_FIELDS, counts_search, dataset_text, study_document, study_rows_for_index
from catalog.search.query import Query as StudyQuery


def _terms_in(node: object) -> list[dict]:
    """Every terms filter anywhere inside an aggregation's filter."""
    found: list[dict] = []
    if isinstance(node, dict):
        if "terms" in node and isinstance(node["terms"], dict) and "field" not in node["terms"]:
            found.append(node["terms"])
        for value in node.values():
            found += _terms_in(value)
    elif isinstance(node, list):
        for value in node:
            found += _terms_in(value)
    return found


def test_each_facet_is_counted_with_every_filter_but_its_own() -> None:
    query = StudyQuery(q="nodule", filters={"sex": ["F"], "modality": ["CT", "PT"], "has_report": ["true"]})
    body = counts_search(query, universe=[1, 2, 3], chosen=[1, 2]).to_dict()
    assert body["size"] == 0
    assert {"simple_query_string": {"query": "nodule", "fields": KEYWORD_FIELDS, "default_operator": "and"}} \
        in body["query"]["bool"]["filter"]
    assert body["track_total_hits"] is True
    post = _terms_in(body["post_filter"])  # the hits (the total) obey every filter
    assert {"sex": ["F"]} in post and {"dataset_id": [1, 2]} in post
    aggs = body["aggs"]
    assert set(aggs) == {"dataset", *(f"facet_{name}" for name in STUDY_FACETS)}
    sex_filters = _terms_in(aggs["facet_sex"]["filter"])
    assert {"modality": ["CT", "PT"]} in sex_filters and {"has_report": ["true"]} in sex_filters
    assert not any("sex" in f for f in sex_filters)  # not its own
    assert {"dataset_id": [1, 2]} in sex_filters  # the dataset-level choice applies to it
    dataset_filters = _terms_in(aggs["dataset"]["filter"])
    assert {"sex": ["F"]} in dataset_filters and {"dataset_id": [1, 2]} not in dataset_filters
    assert aggs["facet_modality"]["aggs"]["values"]["terms"]["field"] == "modality"


@pytest.mark.django_db
def test_each_document_holds_the_words_of_the_studys_postgresql_search_vector(catalog) -> None:
    """Keywords match the same text in both backends: the document's three text fields,
    analysed as PostgreSQL analyses them, give exactly the study's search vector."""
    from django.db import connection

    from catalog.models import Series, Study
    from catalog.search.vectors import studies_refresh_search_vector

    dataset = catalog[0]  # has a condition (Pneumonia)
    study = Study.objects.filter(dataset=dataset, instance_count__gt=0).first()
    study.description = "CT chest follow-up"
    study.save(update_fields=["description"])
    Series.objects.create(study=study, series_uid="1.2.3", description="Lung window axial")
    Series.objects.create(study=study, series_uid="1.2.4", description="Bone kernel")
    studies_refresh_search_vector(dataset=dataset)
    row = next(r for r in study_rows_for_index(dataset.pk) if r[0] == study.pk)
    doc = study_document(row, dataset_text(dataset.pk))
    assert "Pneumonia" in doc["dataset_text"] and "Bone kernel" in doc["description"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tsvector_to_array(setweight(to_tsvector('english', %s), 'A') || "
            "setweight(to_tsvector('simple', %s), 'B') || setweight(to_tsvector('english', %s), 'D')), "
            "tsvector_to_array(search_vector) FROM catalog_study WHERE id = %s",
            [doc["description"], doc["tags"], doc["dataset_text"], study.pk])
        from_document, stored = cursor.fetchone()
    assert sorted(from_document) == sorted(stored) and "pneumonia" in stored and "kernel" in stored


def test_opensearch_is_sent_plain_json(search_engine, monkeypatch) -> None:
    from elastic_transport import HttpHeaders, Urllib3HttpNode

    from catalog.search.elastic import JsonOnlyNode, _connect

    assert _connect().info()["version"]["distribution"] == "opensearch"  # osmem answers at all
    seen: list[dict] = []
    monkeypatch.setattr(Urllib3HttpNode, "perform_request",
                        lambda self, method, target, body=None, headers=None, **kw: seen.append(dict(headers)))
    node = JsonOnlyNode.__new__(JsonOnlyNode)  # no connection pool: only the headers matter
    node.perform_request("POST", "/_bulk", b"{}", headers=HttpHeaders({
        "accept": "application/vnd.elasticsearch+json; compatible-with=9",
        "content-type": "application/vnd.elasticsearch+x-ndjson; compatible-with=9"}))
    assert seen == [{"accept": "application/json", "content-type": "application/x-ndjson"}]


@pytest.mark.django_db
def test_reindexing_builds_a_new_index_and_swaps_the_alias(catalog, search_engine) -> None:
    from django.core.management import call_command

    from catalog.search import PostgresSearch
    from catalog.search.elastic import ElasticSearch, _connect, index_dataset, index_name

    client = _connect()
    index_dataset(dataset_id=catalog[0].pk)  # the first index, one dataset only
    before = sorted(client.indices.get_alias(name=index_name()))
    assert len(before) == 1 and before[0].startswith(f"{index_name()}-")
    call_command("search_reindex")
    after = sorted(client.indices.get_alias(name=index_name()))
    assert len(after) == 1 and after != before and not client.indices.exists(index=before[0])
    query = StudyQuery()
    datasets = PostgresSearch().datasets(query)
    assert ElasticSearch().counts(query, datasets) == PostgresSearch().counts(query, datasets)


@pytest.mark.django_db
def test_renaming_a_dataset_reindexes_it_in_elasticsearch_when_configured(catalog, alice, settings, monkeypatch,
                                                            django_capture_on_commit_callbacks) -> None:
    from catalog import tasks
    from catalog.datasets.services import dataset_update

    # The worker runs the queued refresh; the server it would send documents to is not here.
    monkeypatch.setattr(tasks.dataset_search_refresh_task, "delay",
                        lambda **kw: tasks.dataset_search_refresh_task(**kw))
    queued: list[dict] = []
    monkeypatch.setattr("catalog.search.elastic.index_dataset", lambda **kw: queued.append(kw))
    with django_capture_on_commit_callbacks(execute=True):
        dataset_update(dataset=catalog[0], acting_user=alice, title="Renamed set")
    assert queued == []  # no Elasticsearch configured: nothing to index
    settings.ELASTICSEARCH_URL = "http://elasticsearch.invalid:9200"
    with django_capture_on_commit_callbacks(execute=True):
        dataset_update(dataset=catalog[0], acting_user=alice, title="Renamed again")
    assert queued == [{"dataset_id": catalog[0].pk}]


@pytest.mark.django_db
def test_a_series_level_facet_counts_studies_not_series(catalog, search_engine, monkeypatch) -> None:
    """No facet is a series attribute today; the nested path (a nested filter, and
    reverse_nested so that a study with two matching series counts once) is kept working."""
    from catalog.models import Series, Study
    from catalog.search import elastic
    from catalog.search.elastic import ElasticSearch, index_dataset

    dataset = catalog[0]
    first, second, third = Study.objects.filter(dataset=dataset, instance_count__gt=0).order_by("id")[:3]
    Series.objects.bulk_create([
        Series(study=first, series_uid="9.1", manufacturer="ACME"),
        Series(study=first, series_uid="9.2", manufacturer="ACME"),  # a second ACME series: still one study
        Series(study=second, series_uid="9.3", manufacturer="ACME"),
        Series(study=second, series_uid="9.4", manufacturer="ZETA"),
        Series(study=third, series_uid="9.5", manufacturer="ZETA")])
    index_dataset(dataset_id=dataset.pk)
    monkeypatch.setattr(elastic, "SERIES_FACETS", frozenset({"manufacturer"}))
    backend = ElasticSearch()
    everything = StudyQuery()
    datasets = backend.datasets(everything)
    assert backend.counts(everything, datasets)["manufacturer"] == {"ACME": 2, "ZETA": 2}
    acme = StudyQuery(filters={"manufacturer": ["ACME"]})
    counts = backend.counts(acme, datasets)
    assert counts["dataset"][str(dataset.pk)] == 2  # the studies with an ACME series
    assert counts["manufacturer"] == {"ACME": 2, "ZETA": 2}  # a facet is counted without its own filter
    assert sorted(backend.study_ids(acme, [dataset.pk])) == sorted([first.pk, second.pk])


@pytest.mark.django_db
def test_a_deleted_dataset_leaves_the_index_once_the_deletion_commits(catalog, search_engine, monkeypatch,
                                                                      django_capture_on_commit_callbacks) -> None:
    from catalog import tasks
    from catalog.search.elastic import _connect, index_dataset, index_name

    monkeypatch.setattr(tasks.dataset_search_remove_task, "delay",
                        lambda **kw: tasks.dataset_search_remove_task(**kw))  # the worker's part, run here
    gone, kept = catalog[2], catalog[0]
    for dataset in (gone, kept):
        index_dataset(dataset_id=dataset.pk)
    client = _connect()

    def documents(dataset_id: int) -> int:
        return client.count(index=index_name(), query={"term": {"dataset_id": dataset_id}})["count"]

    assert documents(gone.pk) == 6 and documents(kept.pk) > 0
    gone_id, kept_count = gone.pk, documents(kept.pk)
    with django_capture_on_commit_callbacks(execute=True):
        gone.delete()
    assert documents(gone_id) == 0 and documents(kept.pk) == kept_count


@pytest.mark.django_db
def test_every_study_level_facet_is_indexed_from_the_vocabulary(catalog) -> None:
    """A facet added to catalog/facets.py needs no change to the Elasticsearch backend: the
    mapping and each document hold it under its name, with the value the snapshots hold."""
    from catalog.models import Study
    from catalog.search.elastic import StudyDocument

    properties = StudyDocument._doc_type.mapping.to_dict()["properties"]
    assert {name: properties[name]["type"] for name in STUDY_FACETS} == {name: "keyword" for name in STUDY_FACETS}
    study = Study.objects.filter(dataset=catalog[0], instance_count__gt=0).order_by("id").first()
    row = next(r for r in study_rows_for_index(catalog[0].pk) if r[0] == study.pk)
    doc = study_document(row, "")
    assert set(STUDY_FACETS) <= set(doc)
    assert doc["sex"] == study.patient_sex and doc["modality"] == sorted(set(study.modalities))
    assert doc["has_report"] == ("true" if study.has_report else "false")
    assert doc["age_band"] == study.age_band and doc["manufacturer"] == study.manufacturer
