"""Thin Celery tasks for money that moves outside a web request (queue "housekeeping")."""
from __future__ import annotations

from celery import shared_task

from orders.payouts import providers_pay, providers_retry_failed


@shared_task(acks_late=True)
def providers_pay_task(order_id: int) -> int:
    return len(providers_pay(order_id=order_id))


@shared_task(acks_late=True)
def providers_retry_failed_task() -> int:
    return providers_retry_failed()
