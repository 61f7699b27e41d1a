"""`{% dataset_agreement dataset %}`: the agreement a buyer of the dataset signs, shown to
anyone on the dataset page (orders/agreements.py composes the text)."""
from django import template

from orders.agreements import agreement_preview

register = template.Library()


@register.inclusion_tag("orders/_agreement_preview.html")
def dataset_agreement(dataset) -> dict:  # noqa: ANN001 - a catalog Dataset
    return {"agreement": agreement_preview(dataset=dataset)}
