"""The dataset page's statistics as shown to one user: small counts suppressed for
anyone without access to the dataset, bar widths for the charts."""
from __future__ import annotations

from typing import Any

from catalog.models import Dataset, DatasetPreview
from catalog.search.dimensions import SUPPRESSION_THRESHOLD
from catalog.search.service import SUPPRESSED, accessible_provider_ids
from marketplace.models import User

_LABELS = {"F": "Female", "M": "Male", "O": "Other", "": "Not recorded"}


def statistics_for_page(*, dataset: Dataset, user: User | None) -> dict[str, Any]:
    stats = dataset.statistics or {}
    providers = accessible_provider_ids(user)
    exact = providers is None or dataset.provider_id in providers
    charts = []
    for chart in stats.get("charts", []):
        rows = chart["rows"]
        largest = max((r["count"] for r in rows), default=0) or 1
        shown = []
        for row in rows:
            small = 0 < row["count"] < SUPPRESSION_THRESHOLD and not exact
            shown.append({
                "label": _LABELS.get(row["value"], row["value"]) if chart["key"] == "patient_sex"
                else (row["value"] or "Not recorded"),
                "count": SUPPRESSED if small else row["count"],
                # A suppressed bar is drawn as if it held the threshold: no width tells its count.
                "width": round(100 * (SUPPRESSION_THRESHOLD if small else row["count"]) / max(largest, SUPPRESSION_THRESHOLD), 1),
            })
        charts.append({"key": chart["key"], "label": chart["label"], "rows": shown})
    return {**stats, "charts": charts, "exact": exact}


def dataset_previews(*, dataset: Dataset) -> list[DatasetPreview]:
    return list(DatasetPreview.objects.filter(dataset=dataset).order_by("id")[:12])
