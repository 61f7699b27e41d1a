"""Keyword matches from the worker's postings equal PostgreSQL's full-text matches."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from catalog.models import Study
from catalog.search import ColumnarSearch
from catalog.search.memory.columnar import _matching_ids, columns, keyword_rows
from catalog.search.memory.keywords import Unsupported, evaluate, matching_ids, parse_tsquery
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.query import Query as StudyQuery
from catalog.search.vectors import studies_refresh_search_vector

pytestmark = pytest.mark.django_db

DESCRIPTIONS = ["meniscus tear", "lungs with nodules", "follow-up of the liver", "O'Brien protocol",
                "back\\slash case", "nodule, lung apex", ""]


@pytest.fixture
def indexed(catalog):
    for i, study in enumerate(Study.objects.filter(dataset__in=catalog).order_by("id")):
        study.description = DESCRIPTIONS[i % len(DESCRIPTIONS)]
        study.save(update_fields=["description"])
    for dataset in catalog:
        studies_refresh_search_vector(dataset=dataset)
        snapshot_refresh(dataset_id=dataset.pk)
    return catalog


QUERIES = ["meniscus", "lung", "Lungs nodule", "lung or liver", "chest -meniscus", "nodules -lung -tear",
           "knee or (lung -apex)", "pneumonia", "set", "CT", "o'brien", "back\\slash", "the", "",
           "meniscus or", "-meniscus", "lung or -tear", "\"follow up\"", "follow-up", "x" * 300,
           "'; DROP TABLE catalog_study; --", "a & b | !c <-> d", "nosuchword"]


@pytest.mark.parametrize("q", QUERIES)
def test_postings_match_what_postgresql_matches(indexed, q: str) -> None:
    from_postings = matching_ids(q)
    expected = np.unique(_matching_ids(q))
    if from_postings is None:  # phrases and lone negations: PostgreSQL's own answer
        with connection.cursor() as cursor:
            cursor.execute("SELECT websearch_to_tsquery('english', %s)::text", [q])
            tsquery = cursor.fetchone()[0]
        assert "<" in tsquery or "!" in tsquery, (q, tsquery)
        return
    assert np.array_equal(from_postings, expected), q


def test_common_queries_do_not_fall_back(indexed) -> None:
    for q in ["meniscus", "lung or liver", "chest -meniscus", "knee or (lung -apex)", "the"]:
        assert matching_ids(q) is not None, q
    assert len(matching_ids("lung")) > 100


def test_the_cohort_counts_use_the_postings_and_agree_with_sql(indexed, monkeypatch) -> None:
    query = StudyQuery(q="lung -apex", filters={"sex": ["F"]})
    expected = ColumnarSearch().counts(query, ColumnarSearch().datasets(query))
    # Again from a fresh cache, with PostgreSQL's full-text scan out of reach.
    monkeypatch.setattr("catalog.search.memory.columnar._keyword_rows", {})
    monkeypatch.setattr("catalog.search.memory.columnar._matching_ids", _refuse)
    assert ColumnarSearch().counts(query, ColumnarSearch().datasets(query)) == expected
    assert sum(expected["dataset"].values()) == Study.objects.filter(
        dataset__in=indexed, description__icontains="lung", patient_sex="F", instance_count__gt=0,
    ).exclude(description__icontains="apex").count() > 0


def _refuse(q: str) -> np.ndarray:
    raise AssertionError("PostgreSQL's full-text scan was used")


def test_snapshots_written_before_the_postings_fall_back_to_postgresql(indexed, monkeypatch) -> None:
    cols = columns()
    assert cols.keyword_postings
    monkeypatch.setattr(cols, "keyword_postings", False)
    monkeypatch.setattr("catalog.search.memory.keywords.matching_ids", _refuse)
    assert len(keyword_rows(cols, "meniscus")) == Study.objects.filter(
        dataset__in=indexed, description="meniscus tear", instance_count__gt=0).count()


@pytest.mark.parametrize("text, tree", [
    ("'chest' & 'ct'", ("and", ["chest", "ct"])),
    ("'a' | 'b' & !'c'", ("or", ["a", ("and", ["b", ("not", "c")])])),
    ("( 'a' | 'b' ) & 'c'", ("and", [("or", ["a", "b"]), "c"])),
    ("'o''brien'", "o'brien"),
    ("", None),
])
def test_tsquery_text_is_parsed_with_postgresqls_precedence(text: str, tree: object) -> None:
    assert parse_tsquery(text) == tree


@pytest.mark.parametrize("text", ["'follow' <-> 'up'", "'a' <2> 'b'", "'lung':*", "'a':AB", "('a'", "'a' &"])
def test_phrases_prefixes_weights_and_broken_text_are_left_to_postgresql(text: str) -> None:
    with pytest.raises(Unsupported):
        parse_tsquery(text)


def test_negation_needs_something_positive_beside_it() -> None:
    postings = {"a": np.array([1, 2, 3]), "b": np.array([2])}
    assert evaluate(("and", ["a", ("not", "b")]), postings).tolist() == [1, 3]
    with pytest.raises(Unsupported):
        evaluate(("not", "b"), postings)
    with pytest.raises(Unsupported):
        evaluate(("or", ["a", ("not", "b")]), postings)


def test_a_new_condition_of_a_dataset_is_found_in_memory(indexed, alice, monkeypatch,
                                                         django_capture_on_commit_callbacks) -> None:
    from catalog import tasks
    from catalog.datasets.services import dataset_update
    monkeypatch.setattr(tasks.dataset_search_refresh_task, "delay",
                        lambda **kw: tasks.dataset_search_refresh_task(**kw))  # what the worker runs
    with django_capture_on_commit_callbacks(execute=True):
        dataset_update(dataset=indexed[0], acting_user=alice, conditions=["ICD10:S02.4|Zygomatic fracture"])
    live = Study.objects.filter(dataset=indexed[0], instance_count__gt=0).count()
    assert len(matching_ids("zygomatic")) == live > 0
    assert len(keyword_rows(columns(), "zygomatic")) == live


def test_a_keyword_finds_studies_by_what_they_are_not_by_their_datasets_title(provider) -> None:
    """"brain" in a dataset called "Brain and knee MRI" finds its brain studies, not its knee
    ones; a study naming the word ranks above one whose dataset's condition does."""
    from catalog.models import Dataset
    from catalog.search import PostgresSearch

    dataset = Dataset.objects.create(provider=provider, title="Brain and knee MRI", status=Dataset.Status.PUBLISHED,
                                     conditions=["ICD10:G37.9|Demyelinating disorder"])
    def study(i: int, body_part: str, description: str) -> Study:
        return Study.objects.create(dataset=dataset, study_uid=f"2.25.9.{i}", pseudo_patient_id=f"P{i}",
                                    body_part=body_part, description=description, modalities=["MR"],
                                    instance_count=1)
    brains = [study(i, "BRAIN", "MR BRAIN W/O CONTRAST") for i in range(3)]
    knees = [study(i, "KNEE", "MR KNEE RIGHT") for i in range(3, 6)]
    studies_refresh_search_vector(dataset=dataset)
    snapshot_refresh(dataset_id=dataset.pk)
    query = StudyQuery(q="brain")
    for backend in (PostgresSearch(), ColumnarSearch()):
        found = backend.study_ids(query, [dataset.pk])
        assert found == sorted(s.pk for s in brains), backend.name
    # With the condition alone ("disorder"), every study matches; a study whose own text
    # holds the word ranks first.
    Study.objects.filter(pk=knees[0].pk).update(description="MR KNEE disorder of the meniscus")
    studies_refresh_search_vector(dataset=dataset)
    rows, total = PostgresSearch().studies(StudyQuery(q="disorder"), [dataset.pk], offset=0, limit=10)
    assert total == 6 and rows[0]["id"] == knees[0].pk
