"""Telling the buyer that a delivery ended: ready in the workspace, or failed with what they
can do about it (in the app, by e-mail, and for a ready delivery the organization's
``delivery.ready`` webhooks). Links are absolute when SITE_URL is set.

Called by delivery_transition with the delivery's row locked, once per real move to DONE
or FAILED (it returns early when the delivery is already there), so a re-run, a resumed
run or a second worker tells nobody twice."""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from marketplace.models import WebhookEndpoint
from workspaces.models import Delivery


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def delivery_url(delivery: Delivery) -> str:
    return _absolute(reverse("delivery_files", args=[delivery.pk]))


def delivery_ready_data(delivery: Delivery) -> dict:
    """The ``delivery.ready`` payload: ids, counts and links only (no study, patient or file
    names: those are the buyer's to fetch through the signed-in pages)."""
    return {
        "order_id": delivery.order_id,
        "delivery_id": delivery.pk,
        "file_count": delivery.done_files,
        "bytes": delivery.total_bytes,
        "delivery_url": delivery_url(delivery),
        "workspace_url": _absolute(reverse("workspace")),
        "order_url": _absolute(reverse("order_detail", args=[delivery.order_id])),
    }


# For failures whose reason is meant for staff (a lost worker, an admin's note): what the
# buyer can expect instead. Kept short: an in-app notice holds 300 characters.
FAILED_DEFAULT = ("We could not finish copying the data; our staff have been told and will restart it. "
                  "Files already copied stay in your workspace.")


def delivery_ended_notify(delivery: Delivery, *, buyer_reason: str = "") -> None:
    """Queue the buyer's notices for a delivery that just became DONE or FAILED (the caller
    holds its row lock and has saved the new status). Webhook rows are written in the same
    transaction; the in-app notice and e-mail go after commit."""
    from marketplace.services import notification_send
    from marketplace.webhooks import webhook_event_emit

    buyer, url = delivery.user, delivery_url(delivery)
    if delivery.status == Delivery.Status.DONE:
        message = (f"Order #{delivery.order_id}: your data is ready in your workspace "
                   f"({delivery.done_files:,} files).")
        organization_id = delivery.order.buyer_organization_id
        if organization_id:
            webhook_event_emit(organization_ids=[organization_id], event_type=WebhookEndpoint.Event.DELIVERY_READY,
                               data=delivery_ready_data(delivery))
    elif delivery.status == Delivery.Status.FAILED:
        reason = buyer_reason.strip() or FAILED_DEFAULT
        message = f"Order #{delivery.order_id}: the delivery failed. {reason}"
    else:
        return
    transaction.on_commit(lambda: notification_send(user=buyer, message=message, url=url))
