"""Orders for tests, placed the way a buyer does: the cart, then checkout."""
from __future__ import annotations

from orders.cart import cart_add, cart_quote
from orders.checkout import checkout, payment_methods_for


def place_order(buyer, datasets, dua, *, criteria=None, payment_method=None, po_number=""):  # noqa: ANN001, ANN201
    """Put each dataset (with the same cohort criteria) in the buyer's cart and check out at
    the quoted total. The payment method defaults to the first the buyer may use."""
    datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
    for dataset in datasets:
        cart_add(buyer=buyer, dataset=dataset, criteria=criteria or {})
    quote = cart_quote(buyer=buyer)
    assert not quote.problems, quote.problems
    method = payment_method or payment_methods_for(buyer=buyer, total_minor=quote.total_minor)[0]
    return checkout(buyer=buyer, payment_method=method, accept_agreement=True, dua_template=dua,
                    expected_total_minor=quote.total_minor, expected_currency=quote.currency, po_number=po_number)


def approve_for_delivery(order, admin):  # noqa: ANN001, ANN201
    """The admin's two decisions an invoiced order needs before delivery: the agreement and
    the credit terms (free orders need only the first; card orders need the webhook)."""
    from orders.models import Order
    from orders.services import contract_decide, credit_approve

    contract_decide(contract=order.contract, approve=True, acting_user=admin)
    order.refresh_from_db()
    if order.payment_method == Order.PaymentMethod.INVOICE:
        credit_approve(order=order, acting_user=admin)
    order.refresh_from_db()
    return order
