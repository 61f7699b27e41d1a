"""Dataset summaries and search vector, recomputed by the worker when data changes."""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.db import connection, transaction
from django.db.models import Aggregate, Count, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from catalog.models import Dataset, Instance, Series, Study
from catalog.search.postgres import condition_label
from catalog.services.pricing import dataset_refresh_list_price
from catalog.services.statistics import dataset_refresh_previews, dataset_statistics


def _subtotal(rows: QuerySet, group: str, aggregate: Aggregate) -> Coalesce:
    """A correlated subquery: `aggregate` over `rows` grouped by `group`, 0 when empty."""
    total = rows.order_by().values(group).annotate(total=aggregate).values("total")
    return Coalesce(Subquery(total), 0)


def dataset_refresh_stats(*, dataset_id: int) -> Dataset:
    """Recount studies/series/instances and the facet summaries of one dataset."""
    # Set-based: one UPDATE for all series and one for all studies, whatever their number.
    series = Series.objects.filter(study__dataset_id=dataset_id)
    series.update(
        instance_count=_subtotal(Instance.objects.filter(series=OuterRef("pk")), "series", Count("id")),
        total_bytes=_subtotal(Instance.objects.filter(series=OuterRef("pk")), "series", Sum("size_bytes")),
    )
    studies = Study.objects.filter(dataset_id=dataset_id)
    of_study = Series.objects.filter(study=OuterRef("pk"))
    studies.update(
        series_count=_subtotal(of_study, "study", Count("id")),
        instance_count=_subtotal(of_study, "study", Sum("instance_count")),
        total_bytes=_subtotal(of_study, "study", Sum("total_bytes")),
    )

    live = studies.filter(instance_count__gt=0)
    totals = live.aggregate(
        patients=Count("pseudo_patient_id", distinct=True),
        studies=Count("id"),
        series=Coalesce(Sum("series_count"), 0),
        instances=Coalesce(Sum("instance_count"), 0),
        bytes=Coalesce(Sum("total_bytes"), 0),
    )

    def distinct(field: str) -> list[str]:
        # order_by() drops Study's default ordering by id, which DISTINCT would otherwise include.
        return sorted(v for v in live.exclude(**{field: ""}).order_by().values_list(field, flat=True).distinct() if v)

    modalities = sorted({m for ms in live.values_list("modalities", flat=True) for m in ms})
    Dataset.objects.filter(pk=dataset_id).update(
        patient_count=totals["patients"], study_count=totals["studies"], series_count=totals["series"],
        instance_count=totals["instances"], total_bytes=totals["bytes"],
        modalities=modalities, body_parts=distinct("body_part"), sexes=distinct("patient_sex"),
        age_bands=distinct("age_band"), manufacturers=distinct("manufacturer"),
    )
    dataset_refresh_list_price(dataset_id=dataset_id)  # per image, flat and yearly plans follow the counts
    dataset_statistics(dataset_id=dataset_id)  # the dataset page's charts
    dataset_refresh_previews(dataset_id=dataset_id)
    dataset = dataset_refresh_search(dataset_id=dataset_id)
    # imported when used: the snapshot is numpy columns (about 16 MB), refreshed by the worker
    from catalog.search.snapshots import snapshot_refresh

    snapshot_refresh(dataset_id=dataset_id)  # what the in-memory search counts
    return dataset


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
    (catalog/search/keywords.py). Not the dataset's title: a study matches by what it is,
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
        from catalog.search.keywords import postings_refresh

        postings_refresh(dataset_id=dataset.id)


__all__ = ["dataset_refresh_search", "dataset_refresh_search_vector", "dataset_refresh_stats",
           "studies_refresh_search_vector"]
