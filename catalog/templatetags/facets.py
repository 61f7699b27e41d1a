"""The facet vocabulary's labels on the pages (catalog/facets.py):

    {% load facets %}
    {{ name|facet_label }}            sex → Sex
    {{ value|facet_value:name }}      F → Female (with name "sex"); "" stays "" (for |default)
"""
from __future__ import annotations

from typing import Any

from django import template

from catalog.disclosure import SUPPRESSED
from catalog.facets import FACETS
from catalog.facets import facet_label as _facet_label

register = template.Library()


@register.filter
def facet_label(name: Any) -> str:
    return _facet_label(str(name))


@register.filter
def facet_value(value: Any, name: Any) -> Any:
    facet = FACETS.get(str(name))
    if facet is None or value in (None, "", SUPPRESSED) or not isinstance(value, str):
        return value  # a hidden ("suppressed") or missing value is the caller's to show (|shown)
    return facet.value_label(value)
