"""Counts in templates: ``{{ n|shown }}``, ``{{ 0.12|share }}`` and ``{% dataset_counts dataset as counts %}``."""
from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from catalog import disclosure

register = template.Library()

HIDDEN_TITLE = ("Hidden: a small number, or withheld so that a small number cannot be worked out "
                "from the others")


@register.filter
def shown(value: Any) -> str:
    """A count as shown: grouped digits, or the hidden marker (one look for every hidden cell)."""
    if value == disclosure.SUPPRESSED:
        return format_html('<span class="suppressed" title="{}">hidden</span>', HIDDEN_TITLE)
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


@register.filter
def share(value: Any) -> str:
    """A share (0.123) as a readable percentage: "12 %", "<1 %" for a small non-zero one."""
    if value is None or value == "":
        return ""
    value = float(value)
    if 0 < value < 0.005:
        return "<1 %"
    return f"{round(100 * value)} %"


@register.simple_tag(takes_context=True)
def dataset_counts(context: template.Context, dataset: Any) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None) or context.get("user")
    return disclosure.dataset_counts(dataset=dataset, user=user)
