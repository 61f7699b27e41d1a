"""A dataset's pricing plan in words: ``{% dataset_plan dataset as plan %}``.

Prices and the provider's chosen sample size are not counts of the data: no disclosure
filter applies to them."""
from __future__ import annotations

from typing import Any

from django import template

from orders.pricing import METERED, PlanTerms, percent_words, plan_words, tier_words

register = template.Library()


@register.simple_tag
def dataset_plan(dataset: Any) -> dict[str, Any]:
    terms = PlanTerms.from_dataset(dataset)
    return {
        "words": plan_words(terms),
        "model": terms.model,
        "sample": f"{terms.sample_study_count:,}" if terms.sample_study_count else "",
        "academic": percent_words(terms.academic_discount_bps) if terms.academic_discount_bps else "",
        "tiers": tier_words(terms) if terms.model in METERED else [],
        "is_free": terms.is_free,
    }
