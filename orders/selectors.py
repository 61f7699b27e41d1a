"""Order reads and the permission-checking fetches."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Q, QuerySet, Sum

from marketplace.exceptions import NotFoundError
from marketplace.models import Organization, User
from orders.currency import format_money
from orders.ledger import services as ledger
from orders.models import Contract, DuaTemplate, Invoice, Order, OrderLine, ProviderTransfer


def orders_for_buyer(*, user: User) -> QuerySet[Order]:
    return Order.objects.filter(buyer=user).select_related("contract", "delivery", "invoice")


def access_order(*, user: User, order_id: int) -> Order:
    """The buyer's own order; the same NotFoundError for missing and for someone else's."""
    order = (
        orders_for_buyer(user=user).filter(pk=order_id).first() if user.is_authenticated else None
    )
    if order is None:
        raise NotFoundError("Order not found.")
    return order


def access_invoice(*, user: User, order_id: int) -> Invoice:
    """The invoice of an order for its buyer and for staff allowed to view orders. Providers
    see its number and state beside their sale, not the document: it lists the buyer's
    other purchases and the other providers' prices."""
    if not user.is_authenticated:
        raise NotFoundError("Invoice not found.")
    visible = Q(order__buyer=user)
    if user.has_perm("orders.view_order"):
        visible = Q()
    invoice = Invoice.objects.filter(visible, order_id=order_id).select_related("order").distinct().first()
    if invoice is None:
        raise NotFoundError("Invoice not found.")
    return invoice


def access_agreement(*, user: User, order_id: int) -> tuple[Contract, set[int] | None]:
    """An order's contract for its buyer, for members of a provider with a line in it and
    for staff allowed to view orders; the same NotFoundError for everyone else. Also the
    providers whose lines this user may see: None for all (buyer, staff), else the
    user's own providers on the order (another provider's prices are not theirs to see)."""
    contract = None
    if user.is_authenticated:
        contract = Contract.objects.select_related("order__buyer", "order__buyer_organization").filter(
            order_id=order_id).first()
    if contract is None:
        raise NotFoundError("Agreement not found.")
    if contract.order.buyer_id == user.pk or user.has_perm("orders.view_order"):
        return contract, None
    own = set(OrderLine.objects.filter(order_id=order_id, provider__memberships__user=user)
              .values_list("provider_id", flat=True))
    if not own:
        raise NotFoundError("Agreement not found.")
    return contract, own


def active_dua_template() -> DuaTemplate | None:
    return DuaTemplate.objects.filter(is_active=True).order_by("-created").first()


def provider_sales_summary(*, user: User) -> dict:
    """For the provider dashboard: each of the user's provider organizations with its
    ledger balances and monthly series per currency, its sold lines, per-dataset totals and
    transfers. Money from the ledger, so it agrees with payouts and refunds."""
    providers = list(Organization.objects.filter(kind=Organization.Kind.PROVIDER, memberships__user=user).distinct())
    lines = (OrderLine.objects.filter(provider__in=providers).select_related("order__invoice", "dataset")
             .order_by("-order__created", "-id"))
    accounts = []
    for provider in providers:
        currencies = sorted(set(OrderLine.objects.filter(provider=provider).values_list("currency", flat=True)))
        for currency in currencies:
            balances = ledger.provider_balances(provider, currency)
            months = ledger.provider_monthly(provider, currency)
            peak = max([max(m["net"], m["transferred"]) for m in months] + [1])
            accounts.append({
                "provider": provider, "currency": currency,
                "balances": {k: format_money(v, currency) for k, v in balances.items()},
                "owes": balances["receivable"] > 0,
                "months": [{**m, "net_display": format_money(m["net"], currency),
                            "transferred_display": format_money(m["transferred"], currency),
                            "net_width": round(100 * m["net"] / peak), "transferred_width":
                                round(100 * m["transferred"] / peak)} for m in months],
            })
    per_dataset = defaultdict(lambda: {"lines": 0, "gross": 0})
    for row in (OrderLine.objects.filter(provider__in=providers).exclude(order__status=Order.Status.CANCELLED)
                .values("dataset__title", "currency").annotate(lines=Count("id"), gross=Sum("amount_minor"),
                                                                refunded=Sum("refunded_minor"))):
        key = (row["dataset__title"], row["currency"])
        per_dataset[key] = {"lines": row["lines"],
                            "gross": format_money(row["gross"] - row["refunded"], row["currency"])}
    return {
        "sales": lines[:30], "accounts": accounts,
        "per_dataset": [{"title": t, "currency": c, **v} for (t, c), v in sorted(per_dataset.items())],
        "transfers": ProviderTransfer.objects.filter(provider__in=providers).select_related("order")[:30],
    }
