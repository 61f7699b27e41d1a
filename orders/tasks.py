"""Thin Celery tasks for money that moves outside a web request and for the daily
entitlement sweeps (queue "housekeeping")."""
from __future__ import annotations

from celery import shared_task

from orders.entitlements import entitlements_expire, entitlements_remind
from orders.offers import EXPIRE_BATCH, offers_expire
from orders.payouts import providers_pay, providers_retry_failed


@shared_task(acks_late=True)
def providers_pay_task(order_id: int) -> int:
    return len(providers_pay(order_id=order_id))


@shared_task(acks_late=True)
def providers_retry_failed_task() -> int:
    return providers_retry_failed()


@shared_task(acks_late=True)
def entitlements_expire_task() -> dict:
    counts = entitlements_expire()
    if counts["more"]:
        entitlements_expire_task.delay()  # the rest, in a fresh time slice
    return counts


@shared_task(acks_late=True)
def entitlements_remind_task() -> dict:
    return entitlements_remind()


@shared_task(acks_late=True)
def offers_expire_task() -> int:
    marked = offers_expire()
    if marked >= EXPIRE_BATCH:
        offers_expire_task.delay()  # the rest, in a fresh time slice
    return marked
