"""Thin Celery tasks for outgoing webhooks (queue "housekeeping")."""
from __future__ import annotations

from celery import shared_task

from marketplace.webhooks import webhook_deliveries_sweep, webhook_delivery_attempt


@shared_task(acks_late=True)
def webhook_delivery_send_task(*, delivery_id: int) -> str:
    """The first attempt, right after the event's transaction committed; retries come from
    the sweep when they are due."""
    return webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(acks_late=True)
def webhook_deliveries_sweep_task() -> dict[str, int]:
    return webhook_deliveries_sweep()
