"""Orders for tests, placed the way a buyer does: the cart, then checkout."""
from __future__ import annotations

from orders.cart import cart_add, cart_quote
from orders.checkout import checkout, payment_methods_for
from orders.signatures import signing_needs_totp

BUYER_PASSWORD = "pass-1234567"  # tests/conftest.py make_member
INTENDED_USE = "Training a lung nodule detection model for a research study."
USE_CATEGORY = "academic_research"
USE = {"intended_use": INTENDED_USE, "use_category": USE_CATEGORY}  # for checkout forms and API bodies


def place_order(buyer, datasets, dua, *, criteria=None, payment_method=None, po_number="",  # noqa: ANN001, ANN201
                password=BUYER_PASSWORD, totp_code=None, intended_use=INTENDED_USE, use_category=USE_CATEGORY,
                delivery_format=None):
    """Put each dataset (with the same cohort criteria) in the buyer's cart and check out at
    the quoted total, signing with the buyer's password (and the current TOTP code when
    the account has TOTP), stating the intended use. The payment method defaults to the
    first the buyer may use. The buyer must belong to a verified buyer organization
    (make_member verifies by default)."""
    datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
    for dataset in datasets:
        cart_add(buyer=buyer, dataset=dataset, criteria=criteria or {})
    quote = cart_quote(buyer=buyer)
    assert not quote.problems, quote.problems
    method = payment_method or payment_methods_for(buyer=buyer, total_minor=quote.total_minor)[0]
    if totp_code is None and signing_needs_totp(buyer):
        from factories.accounts import totp_code as current_code

        totp_code = current_code()
    return checkout(buyer=buyer, payment_method=method, accept_agreement=True, dua_template=dua,
                    expected_total_minor=quote.total_minor, expected_currency=quote.currency, po_number=po_number,
                    password=password, totp_code=totp_code, intended_use=intended_use, use_category=use_category,
                    delivery_format=delivery_format)


def approval_signature(contract, admin):  # noqa: ANN001, ANN201
    """The admin's approval signature of a contract, recorded without typing credentials:
    setup for tests about what follows an approval (an authenticator code is accepted
    once per 30 seconds, and tests approve several contracts at once). The typed
    password and TOTP path is tested on its own."""
    from orders.models import Signature
    from orders.signatures import SignerProof, signature_create

    return signature_create(proof=SignerProof(user=admin, factors="password+totp"),
                            meaning=Signature.Meaning.APPROVAL, record=contract)


def approve_for_delivery(order, admin):  # noqa: ANN001, ANN201
    """The admin's two decisions an invoiced order needs before delivery: the agreement and
    the credit terms (free orders need only the first; card orders need the webhook)."""
    from orders.models import Order
    from orders.services import contract_decide, credit_approve

    contract_decide(contract=order.contract, approve=True, acting_user=admin,
                    signature=approval_signature(order.contract, admin))
    order.refresh_from_db()
    if order.payment_method == Order.PaymentMethod.INVOICE:
        credit_approve(order=order, acting_user=admin)
    order.refresh_from_db()
    return order
