"""The admin's work queue: every kind of decision that waits for an administrator, with
how many wait, since when, and the oldest items first.

A read (a selector): the admin index shows it (orders/admin.py). It lives in orders, the
app that knows organizations, datasets and orders alike (marketplace imports no catalog).
One query per kind: the total rides along as a window count over the same filter, so the
page costs the same with three items waiting or three thousand. A kind is listed only to
staff who may change its rows.

Refunds have no "requested" state: buyers do not ask for one in the product; an admin
refunds from Orders or Order lines. Held payments (``flagged``) are the money an admin
must decide on, and are listed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery, Window
from django.db.models.functions import Coalesce
from django.urls import reverse

from catalog.models import Dataset
from marketplace.models import Organization, User
from orders.consent import BLOCKING
from orders.currency import format_money
from orders.models import Contract, Order, OrderLine, OrderStatusChange

ITEMS_PER_KIND = 10


@dataclass(frozen=True)
class QueueItem:
    label: str
    detail: str
    since: datetime
    url: str  # the row's admin page
    action_url: str = ""  # where the decision is taken, when not on the row's page
    action_label: str = ""
    reject_url: str = ""


@dataclass(frozen=True)
class QueueKind:
    key: str
    title: str
    decision: str  # what the admin does, in words
    count: int
    changelist_url: str
    items: list[QueueItem] = field(default_factory=list)

    @property
    def oldest(self) -> datetime | None:
        return self.items[0].since if self.items else None

    @property
    def more(self) -> int:
        return self.count - len(self.items)


def _admin_url(name: str, *args: object, query: dict[str, str] | None = None) -> str:
    url = reverse(f"admin:{name}", args=args)
    return f"{url}?{urlencode(query)}" if query else url


def _oldest_first(queryset: QuerySet, since: object) -> list:
    """The first ITEMS_PER_KIND rows by waiting time, each carrying the kind's total."""
    rows = (queryset.annotate(waiting_since=since, waiting_total=Window(Count("pk")))
            .order_by("waiting_since", "pk")[:ITEMS_PER_KIND])
    return list(rows)


def _kind(key: str, title: str, decision: str, changelist_url: str, rows: list,
          item: Callable[[object], QueueItem]) -> QueueKind:
    return QueueKind(key=key, title=title, decision=decision, changelist_url=changelist_url,
                     count=rows[0].waiting_total if rows else 0, items=[item(row) for row in rows])


# ---- the kinds -------------------------------------------------------------------------

def _organizations_waiting(kind: str, key: str, title: str, decision: str) -> QueueKind:
    rows = _oldest_first(Organization.objects.filter(kind=kind, approved_at__isnull=True, rejected_at__isnull=True),
                         F("created"))
    return _kind(
        f"{key}s", title, decision,
        _admin_url("marketplace_organization_changelist", query={"standing": f"{key}_waiting"}), rows,
        lambda org: QueueItem(
            label=org.name, detail=_who(org), since=org.waiting_since,
            url=_admin_url("marketplace_organization_change", org.pk),
            reject_url=_admin_url("marketplace_organization_reject", org.pk)))


def providers_waiting() -> QueueKind:
    return _organizations_waiting(Organization.Kind.PROVIDER, "provider", "Provider organizations to approve",
                                  "Approve (they may then publish) or reject with a reason")


def buyers_waiting() -> QueueKind:
    return _organizations_waiting(Organization.Kind.BUYER, "buyer", "Buyer organizations to verify",
                                  "Verify (they may then check out) or reject with a reason")


def datasets_waiting() -> QueueKind:
    rows = _oldest_first(Dataset.objects.filter(status=Dataset.Status.IN_REVIEW).select_related("provider"),
                         Coalesce("submitted_at", "created"))
    return _kind(
        "datasets", "Datasets submitted for review", "Publish or reject with a reason (the provider is told)",
        _admin_url("catalog_dataset_changelist", query={"status__exact": Dataset.Status.IN_REVIEW}), rows,
        lambda d: QueueItem(
            label=d.title, detail=" · ".join([d.provider.name, *([", ".join(d.modalities)] if d.modalities else [])]),
            since=d.waiting_since, url=_admin_url("catalog_dataset_change", d.pk),
            reject_url=_admin_url("catalog_dataset_reject", d.pk)))


def contracts_waiting() -> QueueKind:
    # A contract whose providers have not all consented is theirs to decide first.
    blocked = OrderLine.objects.filter(order_id=OuterRef("order_id"), consent_status__in=BLOCKING)
    queryset = (Contract.objects.filter(status=Contract.Status.PENDING, order__status=Order.Status.OPEN)
                .exclude(Exists(blocked)).select_related("order", "order__buyer_organization"))
    rows = _oldest_first(queryset, F("accepted_at"))
    return _kind(
        "contracts", "Contracts to approve and sign", "Approve and sign (password and authenticator code) or reject",
        _admin_url("orders_contract_changelist", query={"status__exact": Contract.Status.PENDING}), rows,
        lambda c: QueueItem(
            label=f"Order #{c.order_id}", detail=_order_detail(c.order), since=c.waiting_since,
            url=_admin_url("orders_contract_change", c.pk),
            action_url=_admin_url("orders_contract_approve", c.pk), action_label="Approve and sign…"))


def credit_waiting() -> QueueKind:
    queryset = (Order.objects.filter(payment_method=Order.PaymentMethod.INVOICE, credit_approved_at__isnull=True,
                                     status=Order.Status.OPEN,
                                     payment_status__in=[Order.PaymentStatus.UNPAID, Order.PaymentStatus.PAID])
                .select_related("buyer_organization"))
    rows = _oldest_first(queryset, F("created"))
    return _kind(
        "credit", "Invoiced orders: credit terms to approve", "Approve credit terms (delivered before payment) or cancel",
        _admin_url("orders_order_changelist", query={
            "payment_method__exact": Order.PaymentMethod.INVOICE, "credit_approved_at__isnull": "True",
            "status__exact": Order.Status.OPEN}), rows,
        lambda o: QueueItem(label=f"Order #{o.pk}", detail=_order_detail(o) + (f" · PO {o.po_number}" if o.po_number
                                                                              else ""),
                            since=o.waiting_since, url=_admin_url("orders_order_change", o.pk)))


def payments_held() -> QueueKind:
    flagged_at = (OrderStatusChange.objects.filter(order_id=OuterRef("pk"), field=OrderStatusChange.Field.PAYMENT,
                                                   new_status=Order.PaymentStatus.FLAGGED)
                  .order_by("-created").values("created")[:1])
    queryset = Order.objects.filter(payment_status=Order.PaymentStatus.FLAGGED).select_related("buyer_organization")
    rows = _oldest_first(queryset, Coalesce(Subquery(flagged_at), "created"))
    return _kind(
        "payments", "Payments held for review", "Refund or cancel (the amount or currency did not match the order)",
        _admin_url("orders_order_changelist", query={"payment_status__exact": Order.PaymentStatus.FLAGGED}), rows,
        lambda o: QueueItem(label=f"Order #{o.pk}", detail=f"{_order_detail(o)} · {o.flag_reason or 'no reason kept'}",
                            since=o.waiting_since, url=_admin_url("orders_order_change", o.pk)))


def _who(org: Organization) -> str:
    parts = [org.get_sector_display(), org.country.upper(), org.contact_email]
    shown = [part for part in parts if part]
    return " · ".join(shown) if shown else "details not filled in yet"


def _order_detail(order: Order) -> str:
    buyer = order.buyer_organization.name if order.buyer_organization_id else "no buyer organization"
    return f"{buyer} · {format_money(order.total_minor, order.currency)}"


# (the permission a staff member needs to act on the kind, how to read it)
KINDS: list[tuple[str, Callable[[], QueueKind]]] = [
    ("marketplace.change_organization", providers_waiting),
    ("catalog.change_dataset", datasets_waiting),
    ("orders.change_contract", contracts_waiting),
    ("orders.change_order", credit_waiting),
    ("orders.change_order", payments_held),
    ("marketplace.change_organization", buyers_waiting),
]


def work_queue(user: User, kinds: Iterable[tuple[str, Callable[[], QueueKind]]] = KINDS) -> list[QueueKind]:
    """Every kind the user may act on, in a fixed order (empty kinds too: an empty line says
    nothing waits, which is news as well)."""
    if not (user.is_active and user.is_staff):
        return []
    return [read() for permission, read in kinds if user.has_perm(permission)]
