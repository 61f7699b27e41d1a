"""`{% load descriptions %}{{ s.description|short_description:60 }}`: a study or series
description shortened for a table cell the way the catalogue stores it (on a word boundary,
no dangling connector; catalog/ingestion/descriptions.py), not cut inside a word."""
from __future__ import annotations

from django import template

from catalog.ingestion.descriptions import display_description

register = template.Library()


@register.filter
def short_description(text: object, limit: int = 60) -> str:
    return display_description(text, int(limit))
