"""The dataset page's statistics as shown to one user: every count through the disclosure
rule (catalog/disclosure.py), bar widths for the charts."""
from __future__ import annotations

import math
from typing import Any

from catalog.disclosure import Rule, dataset_counts, is_shown, rule_for_dataset, shown_rows
from catalog.facets import NOT_RECORDED, facet_for_column
from catalog.models import Dataset, DatasetPreview
from marketplace.models import User


def _chart(chart: dict[str, Any], rule: Rule) -> dict[str, Any]:
    rows = chart["rows"]
    shown = rule.partition({i: row["count"] for i, row in enumerate(rows)})
    largest = max([1, *(row["count"] for i, row in enumerate(rows) if is_shown(shown[i]))])
    facet = facet_for_column(chart["key"])  # the charts are keyed by catalog_study column
    out = []
    for i, row in enumerate(rows):
        out.append({
            "label": facet.value_label(row["value"]) if facet else (row["value"] or NOT_RECORDED),
            "count": shown[i],
            # A hidden row has no bar: no width may tell its count, nor suggest one.
            "width": round(100 * row["count"] / largest, 1) if is_shown(shown[i]) else 0,
        })
    # Age bands and years keep their natural order; hidden rows of the others go last.
    if chart["key"] not in ("age_band", "study_year"):
        out = shown_rows(out)
    return {"key": chart["key"], "label": chart["label"], "rows": out}


def _completeness(item: dict[str, Any], total: int, rule: Rule) -> dict[str, Any]:
    """A share recorded, as shown: where the studies with (or without) the value are
    fewer than the threshold, only a bound that does not give their number."""
    recorded = round(item["percent"] * total / 100)
    missing = total - recorded
    text = f"{item['percent']}%"
    if not rule.exact and total:
        if rule.hides(missing):
            text = f"over {math.floor(100 * (total - rule.threshold) / total)}%"
        elif rule.hides(recorded):
            text = f"under {math.ceil(100 * rule.threshold / total)}%"
    return {**item, "text": text}


def statistics_for_page(*, dataset: Dataset, user: User | None) -> dict[str, Any]:
    stats = dataset.statistics or {}
    rule = rule_for_dataset(user=user, dataset=dataset)
    total = stats.get("studies", dataset.study_count)
    counts = dataset_counts(dataset=dataset, user=user)
    hide_shares = rule.hides(total)  # a share of a hidden total would bound it
    return {
        **stats,
        "charts": [_chart(chart, rule) for chart in stats.get("charts", [])],
        "completeness": [] if hide_shares else [_completeness(item, total, rule)
                                                for item in stats.get("completeness", [])],
        "warnings": [] if not rule.exact else stats.get("warnings", []),
        "verified_instances": rule.count(stats.get("verified_instances", 0)),
        "exact": rule.exact,
        "threshold": rule.threshold,
        "counts": counts,
    }


def dataset_previews(*, dataset: Dataset) -> list[DatasetPreview]:
    return list(DatasetPreview.objects.filter(dataset=dataset).order_by("id")[:12])
