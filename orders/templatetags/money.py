"""`{{ line.amount_minor|money:line.currency }}` → "1,234.50 USD" (orders/currency.py)."""
from django import template

from orders.currency import format_money

register = template.Library()


@register.filter
def money(amount_minor: int | None, currency: str) -> str:
    return "" if amount_minor is None else format_money(int(amount_minor), currency)
