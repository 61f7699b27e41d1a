"""Entitlements: each order line is the buyer's right to its studies. A line ends with its
licence term (OrderLine.licence_ends, set when access starts: entitlements_start); perpetual
licences never end. A line's access also ends when an admin revokes it. Ended lines lose their files in the workspace
(so no download link serves them), and an order whose every line ended stops.

entitlements_expire and entitlements_remind run daily from beat; both are idempotent."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import dateformat, timezone

from catalog.models import Dataset
from marketplace.exceptions import NotFoundError, PermissionDeniedError
from marketplace.models import User
from marketplace.services import audit_record
from orders.exceptions import OrderError
from orders.models import CartItem, EntitlementReminder, Order, OrderLine
from orders.notices import notify_buyer
from orders.signals import files_removed, lines_access_ended, order_access_stopped
from orders.transitions import can_move, order_move

LICENCE_ENDED = "Licence term ended"
# Reminders before the end, in days; a sweep that runs late sends only the nearest one due.
REMIND_DAYS = (30, 7)
RENEW_WINDOW = timedelta(days=30)
# Removing a line's files deletes each object from storage: a sweep stops taking new lines
# after this many seconds and reports that more are left (the task queues the rest).
SWEEP_SECONDS = 60.0
SWEEP_BATCH = 200


def _live_lines():  # noqa: ANN202 - a queryset of OrderLine
    return OrderLine.objects.filter(licence_ends__isnull=False, access_ended_at__isnull=True).exclude(
        order__status=Order.Status.CANCELLED)


def licence_end_for(line: OrderLine, start: datetime) -> datetime | None:
    """When the line's licence ends if its access starts at ``start``: ``term_months`` of
    its licence terms later (calendar months), and for a subscription at the latest a year
    later. A subscription sold under terms of another length ends at the shorter of the two:
    the subscription price pays for one year of data, the terms may allow less. None for a
    perpetual licence that is not a subscription."""
    from orders.checkout import SUBSCRIPTION_TERM  # checkout builds on the cart and quotes

    ends = []
    months = (line.licence_terms or {}).get("term_months")
    if months:
        ends.append(start + relativedelta(months=int(months)))
    if line.pricing_model == "subscription":
        ends.append(start + SUBSCRIPTION_TERM)
    return min(ends) if ends else None


def entitlements_start(*, order: Order, now: datetime | None = None) -> int:
    """Start the licence term of each of the order's lines that still has access: called
    when the order is released for delivery (orders/services.py order_release), inside its
    transaction. The term runs from the grant of access, not from the order: an order may
    wait days for its contract approval or its payment. Returns the lines whose end was set."""
    now = now or timezone.now()
    changed = 0
    for line in order.lines.filter(access_ended_at__isnull=True).order_by("pk"):
        ends = licence_end_for(line, now)
        if ends != line.licence_ends:
            line.licence_ends = ends
            line.save(update_fields=["licence_ends"])
            changed += 1
    return changed


def entitlements_expire(now: datetime | None = None, *, budget_seconds: float = SWEEP_SECONDS) -> dict:
    """End the access of every line whose licence term is over: its files leave the
    workspace, the buyer is told, an audit event is written, and an order whose every line
    ended stops. A second run finds nothing to do."""
    now = now or timezone.now()
    started = time.monotonic()
    counts = {"expired": 0, "files_removed": 0, "orders_stopped": 0, "more": False}
    due = list(_live_lines().filter(licence_ends__lte=now).order_by("licence_ends", "pk")
               .values_list("pk", flat=True)[:SWEEP_BATCH + 1])
    for index, pk in enumerate(due):
        # At least one line per run, however small the budget: every run makes progress.
        if index == SWEEP_BATCH or (index and time.monotonic() - started > budget_seconds):
            counts["more"] = True
            break
        with transaction.atomic():
            line = _lock_line(pk)
            if line is None or not line.has_access or line.licence_ends is None or line.licence_ends > now:
                continue  # ended, renewed or changed since the query
            files, stopped = _end_access(line, reason=LICENCE_ENDED, acting_user=None, now=now)
            audit_record(actor=None, action="entitlement.expire", obj=line, detail={
                "order_id": line.order_id, "dataset_id": line.dataset_id,
                "licence_ends": line.licence_ends.isoformat(), "files_removed": files})
            notify_buyer(line.order, f"Order #{line.order_id}: your licence to {line.dataset.title} ended on "
                                     f"{_day(line.licence_ends)}; its files have left your workspace. "
                                     "You can renew it from the order page.")
        counts["expired"] += 1
        counts["files_removed"] += files
        counts["orders_stopped"] += stopped
    return counts


def entitlements_remind(now: datetime | None = None) -> dict:
    """Tell buyers 30 and 7 days before a line's licence ends, each reminder once per line
    (EntitlementReminder), with the order page where they renew. Lines of orders not yet
    delivered are not reminded."""
    now = now or timezone.now()
    counts = {f"{days}_days": 0 for days in REMIND_DAYS}
    soonest = _live_lines().filter(
        licence_ends__gt=now, licence_ends__lte=now + timedelta(days=max(REMIND_DAYS)),
        order__fulfilment_status__in=[Order.FulfilmentStatus.FULFILLING, Order.FulfilmentStatus.FULFILLED])
    for pk in soonest.order_by("licence_ends", "pk").values_list("pk", flat=True):
        with transaction.atomic():
            line = _lock_line(pk)
            if line is None or not line.has_access or line.licence_ends is None or line.licence_ends <= now:
                continue
            days = min(d for d in REMIND_DAYS if line.licence_ends - timedelta(days=d) <= now)
            # A nearer reminder already sent makes an earlier one pointless.
            if line.reminders.filter(days_before__lte=days).exists():
                continue
            EntitlementReminder.objects.create(line=line, days_before=days, sent=now)
            audit_record(actor=None, action="entitlement.remind", obj=line, detail={
                "order_id": line.order_id, "days_before": days, "licence_ends": line.licence_ends.isoformat()})
            left = (line.licence_ends - now).days
            notify_buyer(line.order, f"Order #{line.order_id}: your licence to {line.dataset.title} ends on "
                                     f"{_day(line.licence_ends)} (in {left} day{'s' if left != 1 else ''}). "
                                     "Renew it from the order page.")
        counts[f"{days}_days"] += 1
    return counts


def entitlement_revoke(line: OrderLine, acting_user: User, reason: str, ip: str | None = None) -> OrderLine:
    """An admin ends a line's access at once, with a reason (a breach of the agreement, the
    provider's takedown request): its files leave the workspace, the buyer and the
    provider's members are told, and an audit event is written."""
    reason = (reason or "").strip()
    if not reason:
        raise OrderError("Give a reason for revoking access.", code="reason_required")
    if not acting_user.has_perm("orders.change_orderline"):
        raise PermissionDeniedError("Only administrators may revoke access.")
    with transaction.atomic():
        locked = _lock_line(line.pk)
        if locked is None:
            raise NotFoundError("Order line not found.")
        if not locked.has_access:
            raise OrderError(f"Access to {locked.dataset.title} in order #{locked.order_id} already ended on "
                             f"{_day(locked.access_ended_at)} ({locked.access_end_reason or 'no reason given'}).",
                             code="access_ended")
        files, _ = _end_access(locked, reason=f"Revoked: {reason}", acting_user=acting_user, now=timezone.now())
        audit_record(actor=acting_user, action="entitlement.revoke", obj=locked, ip=ip, detail={
            "order_id": locked.order_id, "dataset_id": locked.dataset_id, "provider_id": locked.provider_id,
            "files_removed": files, "reason": reason[:200]})
        notify_buyer(locked.order, f"Order #{locked.order_id}: an administrator revoked your access to "
                                   f"{locked.dataset.title} ({reason}); its files have left your workspace.")
        _notify_provider(locked, f"Access to {locked.dataset.title} under order #{locked.order_id} was revoked "
                                 f"by an administrator: {reason}")
    return locked


def line_renewable(line: OrderLine, now: datetime | None = None) -> bool:
    """A line with a licence term (a subscription, a licence of some months) may be renewed
    in its last 30 days or once its term ended (not after a revocation or a refund)."""
    now = now or timezone.now()
    if line.licence_ends is None:
        return False
    if line.has_access:
        return line.licence_ends - RENEW_WINDOW <= now
    return line.access_end_reason == LICENCE_ENDED


@transaction.atomic
def entitlement_renew(buyer: User, line: OrderLine, ip: str | None = None) -> CartItem:
    """Put the line's dataset, with the same criteria, in the buyer's cart at the dataset's
    current terms; checking out places the renewal as a new order. Studies the buyer still
    holds are included (the renewal continues them)."""
    from orders.cart import cart_add

    if line.order.buyer_id != buyer.pk:
        raise NotFoundError("Order line not found.")
    if not line_renewable(line):
        raise OrderError("Only a licence with a term, in its last 30 days or once the term ended, can be renewed.",
                         code="not_renewable")
    dataset = Dataset.objects.get(pk=line.dataset_id)
    item = cart_add(buyer=buyer, dataset=dataset, criteria=line.criteria, ip=ip)
    if not item.include_held:
        item.include_held = True
        item.save(update_fields=["include_held"])
    audit_record(actor=buyer, action="entitlement.renew", obj=line, ip=ip,
                 detail={"order_id": line.order_id, "dataset_id": line.dataset_id})
    return item


# ---- helpers ---------------------------------------------------------------------------
def _lock_line(pk: int) -> OrderLine | None:
    # The order first, then the line: the order the other services lock them in.
    order_id = OrderLine.objects.filter(pk=pk).values_list("order_id", flat=True).first()
    if order_id is None:
        return None
    Order.objects.select_for_update().get(pk=order_id)
    return (OrderLine.objects.select_for_update(of=("self",)).select_related("order", "dataset", "provider")
            .filter(pk=pk).first())


def _end_access(line: OrderLine, *, reason: str, acting_user: User | None, now: datetime) -> tuple[int, int]:
    """Mark the line ended and remove its files; stop the order when no line has access
    left. Returns (files removed, 1 if the order was stopped now)."""
    line.access_ended_at, line.access_end_reason = now, reason[:300]
    line.save(update_fields=["access_ended_at", "access_end_reason"])
    # workspaces removes the files (workspaces/receivers.py), inside the caller's transaction.
    files = files_removed(lines_access_ended.send(sender=Order, order=line.order, line_ids=[line.pk], reason=reason))
    order = line.order
    if order.lines.filter(access_ended_at__isnull=True).exists():
        return files, 0
    # Nothing left to deliver: a copy still running stops (it would finish an order with no
    # access), and the grants go, so no page or link of this delivery opens again.
    order_access_stopped.send(sender=Order, order=order, reason=f"Access to every line ended: {reason}",
                              acting_user=acting_user)
    order.refresh_from_db()
    if not can_move(order, "fulfilment_status", Order.FulfilmentStatus.STOPPED):
        return files, 0
    order_move(order=order, field="fulfilment_status", to=Order.FulfilmentStatus.STOPPED, acting_user=acting_user,
               reason=f"Access to every line ended: {reason}"[:2000])
    return files, 1


def _notify_provider(line: OrderLine, message: str) -> None:
    from marketplace.services import notification_send

    members = list(User.objects.filter(memberships__organization_id=line.provider_id, is_active=True).distinct())
    url = f"{settings.SITE_URL.rstrip('/')}{reverse('provider_dashboard')}"
    transaction.on_commit(lambda: [notification_send(user=user, message=message, url=url) for user in members])


def _day(moment: datetime | None) -> str:
    return dateformat.format(timezone.localtime(moment), "j M Y") if moment else ""
