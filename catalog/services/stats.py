"""Dataset summaries and search vector, recomputed by the worker when data changes."""
from __future__ import annotations

from django.contrib.postgres.search import SearchVector
from django.db.models import Count, Sum, Value
from django.db.models.functions import Coalesce

from catalog.models import Dataset, Instance, Series, Study


def dataset_refresh_stats(*, dataset_id: int) -> Dataset:
    """Recount studies/series/instances and the facet summaries of one dataset."""
    series_totals = Instance.objects.filter(series__study__dataset_id=dataset_id).values("series_id").annotate(
        n=Count("id"), b=Sum("size_bytes"))
    for row in series_totals:
        Series.objects.filter(pk=row["series_id"]).update(instance_count=row["n"], total_bytes=row["b"] or 0)
    studies = Study.objects.filter(dataset_id=dataset_id)
    for row in studies.annotate(
        n_series=Count("series", distinct=True),
        n_inst=Coalesce(Sum("series__instance_count"), 0),
        n_bytes=Coalesce(Sum("series__total_bytes"), 0),
    ).values("pk", "n_series", "n_inst", "n_bytes"):
        Study.objects.filter(pk=row["pk"]).update(
            series_count=row["n_series"], instance_count=row["n_inst"], total_bytes=row["n_bytes"])

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
    return dataset_refresh_search_vector(dataset_id=dataset_id)


def dataset_refresh_search_vector(*, dataset_id: int) -> Dataset:
    dataset = Dataset.objects.get(pk=dataset_id)
    descriptions = " ".join(
        Series.objects.filter(study__dataset_id=dataset_id).exclude(description="")
        .order_by("description").values_list("description", flat=True).distinct()[:200]
    )
    facets_text = " ".join([*dataset.modalities, *dataset.body_parts, *dataset.manufacturers])
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


__all__ = ["dataset_refresh_search_vector", "dataset_refresh_stats"]
