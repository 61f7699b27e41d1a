"""Thin Celery tasks for delivery."""
from __future__ import annotations

from celery import shared_task

from workspaces.services import delivery_run


@shared_task(acks_late=True)
def delivery_run_task(*, delivery_id: int) -> None:
    delivery_run(delivery_id=delivery_id)
