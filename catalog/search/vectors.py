"""What keywords match: the PostgreSQL search vectors of a dataset and its studies, the
keyword postings read from them, and (when configured) the Elasticsearch documents.
Recomputed by the worker after an ingestion (catalog/ingestion/after.py) and after a
dataset's title or conditions changed (catalog.tasks.dataset_search_refresh_task)."""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.db import connection, transaction
from django.db.models import Value

from catalog.models import Dataset, Series
from catalog.search.postgres import condition_label


def dataset_refresh_search(*, dataset_id: int) -> Dataset:
    """What keywords match after a dataset's text or studies changed (in the worker): the
    search vectors with their keyword postings and, when configured, the Elasticsearch
    documents (bulk indexing)."""
    dataset = dataset_refresh_search_vector(dataset_id=dataset_id)
    if settings.ELASTICSEARCH_URL:
        from catalog.search.elastic import index_dataset

        index_dataset(dataset_id=dataset_id)
    return dataset


def dataset_refresh_search_vector(*, dataset_id: int) -> Dataset:
    dataset = Dataset.objects.get(pk=dataset_id)
    studies_refresh_search_vector(dataset=dataset)
    descriptions = " ".join(
        Series.objects.filter(study__dataset_id=dataset_id).exclude(description="")
        .order_by("description").values_list("description", flat=True).distinct()[:200]
    )
    facets_text = " ".join([*dataset.modalities, *dataset.body_parts, *dataset.manufacturers,
                            *(condition_label(c) for c in dataset.conditions)])
    Dataset.objects.filter(pk=dataset_id).update(
        search_vector=(
            SearchVector(Value(dataset.title), weight="A", config="english")
            + SearchVector(Value(dataset.description), weight="B", config="english")
            + SearchVector(Value(facets_text), weight="B", config="simple")
            + SearchVector(Value(descriptions), weight="C", config="english")
        )
    )
    dataset.refresh_from_db()
    return dataset


def studies_refresh_search_vector(*, dataset: Dataset) -> None:
    """Each study's keywords: its own and its series' descriptions (weight A), body part,
    modalities, maker and model (B), and the dataset's conditions (D, ranked last), in one
    set-based UPDATE; then the dataset's keyword postings, read from these vectors
    (catalog/search/memory/keywords.py). Not the dataset's title: a study matches by what it is,
    so "brain" finds no knee study of a dataset called "Brain and knee MRI" (the catalog
    page's dataset search still finds the dataset by its title)."""
    conditions = " ".join(condition_label(c) for c in dataset.conditions)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE catalog_study AS s SET search_vector = "
            "setweight(to_tsvector('english', coalesce(s.description, '') || ' ' || coalesce("
            "  (SELECT string_agg(DISTINCT r.description, ' ') FROM catalog_series r"
            "   WHERE r.study_id = s.id), '')), 'A') || "
            "setweight(to_tsvector('simple', s.body_part || ' ' || array_to_string(s.modalities, ' ') "
            "  || ' ' || s.manufacturer || ' ' || s.model), 'B') || "
            "setweight(to_tsvector('english', %s), 'D') "
            "WHERE s.dataset_id = %s",
            [conditions, dataset.id],
        )
        # imported when used: the postings are numpy arrays (about 16 MB), refreshed by the worker
        from catalog.search.memory.keywords import postings_refresh

        postings_refresh(dataset_id=dataset.id)


__all__ = ["dataset_refresh_search", "dataset_refresh_search_vector", "studies_refresh_search_vector"]
