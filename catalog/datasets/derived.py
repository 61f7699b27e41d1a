"""What the worker derives from a dataset's rows when its data changes (never per page
view), each stored on the dataset: the counts and facet summaries, the dataset page's
statistics (distributions for the charts, metadata completeness, de-identification
evidence and conformance warnings) and its preview images. Counts only; no value that
could identify anyone. The order they run in after an ingestion: catalog/ingestion/after.py."""
from __future__ import annotations

from typing import Any

from django.db.models import Aggregate, Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.facets import FACETS
from catalog.models import Dataset, Instance, Series, Study, UploadFile


def _subtotal(rows: QuerySet, group: str, aggregate: Aggregate) -> Coalesce:
    """A correlated subquery: `aggregate` over `rows` grouped by `group`, 0 when empty."""
    total = rows.order_by().values(group).annotate(total=aggregate).values("total")
    return Coalesce(Subquery(total), 0)


def dataset_refresh_counts(*, dataset_id: int) -> None:
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


CHARTS = [("age_band", "Age"), ("patient_sex", "Sex"), ("ethnicity", "Ethnicity"), ("modality", "Modality"),
          ("manufacturer", "Manufacturer"), ("body_part", "Body part"), ("study_year", "Studies per year")]
# Attribute -> (label, "recorded" condition on Study)
COMPLETENESS = {
    "patient_sex": ("Patient sex", ~Q(patient_sex="")),
    "patient_age": ("Patient age", Q(patient_age__isnull=False)),
    "body_part": ("Body part", ~Q(body_part="")),
    "manufacturer": ("Manufacturer", ~Q(manufacturer="")),
    "model": ("Model", ~Q(model="")),
    "study_date": ("Study date", Q(study_date__isnull=False)),
    "slice_thickness": ("Slice thickness (CT/MR)", Q(slice_thickness__isnull=False)),
    "ethnicity": ("Ethnicity", ~Q(ethnicity="")),
}


def _distribution(studies, field: str) -> list[dict[str, Any]]:  # noqa: ANN001 - a QuerySet
    if field == "modality":
        counts: dict[str, int] = {}
        for modalities in studies.values_list("modalities", flat=True):
            for modality in set(modalities):
                counts[modality] = counts.get(modality, 0) + 1
        rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    else:
        rows = [(value, n) for value, n in studies.order_by().values_list(field).annotate(n=Count("id"))]
        if field == "age_band":
            rows.sort(key=lambda kv: FACETS["age_band"].sort_key(kv[0] or ""))  # by age
        elif field == "study_year":
            rows.sort(key=lambda kv: (kv[0] is None, kv[0] or 0))
        else:
            rows.sort(key=lambda kv: (-kv[1], str(kv[0])))
    return [{"value": "" if value is None else str(value), "count": n} for value, n in rows]


def dataset_statistics(*, dataset_id: int) -> dict[str, Any]:
    """Compute and store the dataset's statistics; returns them."""
    studies = Study.objects.filter(dataset_id=dataset_id, instance_count__gt=0)
    total = studies.count()
    charts = [{"key": key, "label": label, "rows": _distribution(studies, key)} for key, label in CHARTS]
    recorded = studies.aggregate(**{key: Coalesce(Count("id", filter=condition), 0)
                                    for key, (_, condition) in COMPLETENESS.items()})
    completeness = [{"key": key, "label": label, "percent": round(100 * recorded[key] / total, 1) if total else 0.0}
                    for key, (label, _) in COMPLETENESS.items()]
    rejected = UploadFile.objects.filter(batch__dataset_id=dataset_id, status=UploadFile.Status.REJECTED).count()
    warnings = []
    for item in completeness:
        if total and item["key"] in ("patient_sex", "patient_age", "body_part", "manufacturer") and item["percent"] < 90:
            warnings.append(f"{item['label']} is missing in {100 - item['percent']:.0f}% of studies")
    statistics = {
        "studies": total,
        "charts": charts,
        "completeness": completeness,
        # Every stored instance passed the independent verifier; rejected files never entered.
        "verified_instances": Instance.objects.filter(dataset_id=dataset_id).count(),
        "rejected_files": rejected,
        "warnings": warnings,
        "computed_at": timezone.now().isoformat(timespec="seconds"),
    }
    Dataset.objects.filter(pk=dataset_id).update(statistics=statistics)
    return statistics


MAX_PREVIEWS = 12


def dataset_refresh_previews(*, dataset_id: int) -> int:
    """Render previews (one per series, up to MAX_PREVIEWS per dataset) for series that have
    none yet; returns how many were added. A file that cannot be rendered is skipped."""
    import io
    import logging

    import storage
    from catalog.datasets.previews import render_preview
    from catalog.models import DatasetPreview

    have = DatasetPreview.objects.filter(dataset_id=dataset_id).count()
    if have >= MAX_PREVIEWS:
        return 0
    done_series = set(DatasetPreview.objects.filter(dataset_id=dataset_id).values_list("instance__series_id", flat=True))
    added = 0
    for series in Series.objects.filter(study__dataset_id=dataset_id).exclude(pk__in=done_series).order_by("id"):
        if have + added >= MAX_PREVIEWS:
            break
        instances = list(series.instances.order_by("instance_number", "id"))
        if not instances:
            continue
        instance = instances[len(instances) // 2]  # the middle slice shows the anatomy
        try:
            with storage.open_read(instance.storage_key) as src:
                rendered = render_preview(src)
        except Exception as exc:  # noqa: BLE001 - a preview is optional; never fail the batch
            logging.getLogger(__name__).warning("preview of instance %s failed: %s", instance.pk,
                                                type(exc).__name__)
            continue
        if rendered is None:
            continue
        png, width, height = rendered
        key = f"previews/{dataset_id}/{instance.pk}.png"
        storage.put(key, io.BytesIO(png))
        DatasetPreview.objects.create(dataset_id=dataset_id, instance=instance, storage_key=key,
                                      width=width, height=height)
        added += 1
    return added
