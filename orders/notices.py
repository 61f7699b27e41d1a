"""Telling the buyer what happened to their order's money (in the app and by e-mail, with
an absolute link when SITE_URL is set)."""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from orders.models import Order


def order_url(order: Order) -> str:
    return f"{settings.SITE_URL.rstrip('/')}{reverse('order_detail', args=[order.pk])}"


def notify_buyer(order: Order, message: str) -> None:
    """Sent after the surrounding transaction commits: a rolled-back change tells nobody."""
    from marketplace.services import notification_send

    buyer, url = order.buyer, order_url(order)
    transaction.on_commit(lambda: notification_send(user=buyer, message=message, url=url))
