"""Thin Celery tasks for delivery (queue "delivery") and its housekeeping (beat)."""
from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from workspaces.services import deliveries_recover_stuck, delivery_continue, delivery_run

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def delivery_run_task(*, delivery_id: int) -> None:
    try:
        delivery_run(delivery_id=delivery_id)
    except SoftTimeLimitExceeded:
        # A very large order used up the delivery queue's time slice: the rest goes to a new
        # task, so no task outlives the broker's visibility timeout. Copied files are kept.
        logger.info("delivery %s reached the soft time limit; continuing in a new task", delivery_id)
        delivery_continue(delivery_id=delivery_id)


@shared_task(acks_late=True)
def deliveries_recover_stuck_task() -> dict[str, int]:
    return deliveries_recover_stuck()
