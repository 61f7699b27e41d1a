"""What orders post to the ledger (orders/ledger/): each provider's share of an order and
the platform's fee, computed one way everywhere so charges, refunds and transfers agree."""
from __future__ import annotations

from collections import defaultdict

from orders.ledger import services as ledger
from orders.models import Order, OrderLine


def line_shares(order: Order) -> dict[int, ledger.ProviderShare]:
    """Per order line: the part of the charged total (largest remainder over the line
    amounts, so the parts sum to the charge) and the platform's fee on it."""
    lines = list(order.lines.select_related("provider").order_by("pk"))
    shares = ledger.shares_for(order.total_minor, [(line.provider, line.pk, line.amount_minor) for line in lines])
    return {share.order_line_id: share for share in shares}


def ledger_charge(*, order: Order, reference: str) -> None:
    ledger.post_charge(reference=reference, order_id=order.pk, currency=order.currency,
                       total_minor=order.total_minor, shares=list(line_shares(order).values()))


def ledger_invoice_issued(*, order: Order, reference: str) -> None:
    ledger.post_invoice_issued(reference=reference, order_id=order.pk, currency=order.currency,
                               total_minor=order.total_minor, shares=list(line_shares(order).values()))


def ledger_invoice_paid(*, order: Order, reference: str) -> None:
    ledger.post_invoice_paid(reference=reference, order_id=order.pk, currency=order.currency,
                             amount_minor=order.total_minor)


def provider_nets(order: Order, *, only_with_access: bool = True) -> dict[int, int]:
    """Net (share minus fee) owed to each provider for this order's lines still held."""
    shares = line_shares(order)
    lines = OrderLine.objects.filter(order=order)
    if only_with_access:
        lines = lines.filter(refunded_minor=0)
    nets: dict[int, int] = defaultdict(int)
    for line in lines:
        share = shares[line.pk]
        nets[line.provider_id] += share.gross_minor - share.fee_minor
    return dict(nets)
