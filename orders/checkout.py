"""Checkout: the cart becomes one order with a line per dataset, its contract signed by
the buyer (orders/signatures.py), and (for institutions) its invoice. The total the buyer
accepted is the total charged: any change of price or plan since the cart page refuses
the checkout instead."""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from catalog.licence import LicenceTerms
from marketplace.models import User
from marketplace.services import audit_record
from marketplace.vetting import buyer_checkout_require
from orders.agreements import agreement_sha256, agreement_text_for
from orders.cart import cart_for, cart_items, cart_quote
from orders.consent import consent_initial_status, consent_request_notify
from orders.exceptions import AgreementNotAcceptedError, EmptyOrderError, OrderError
from orders.intended_use import intended_use_clean
from orders.models import Cart, Contract, DuaTemplate, Order, OrderLine, OrderStatusChange, Signature
from orders.offers import offer_line_fields
from orders.quotes import MixedCurrenciesError, buyer_organization
from orders.signatures import CONTRACT, SignerProof, signature_create, signer_check
from orders.stripe_gateway import stripe_enabled

SUBSCRIPTION_TERM = timedelta(days=365)
MAX_PO_NUMBER = 64
SAMPLE_INTENDED_USE = "Free sample: evaluating the dataset before ordering it."


def _history_start(order: Order, buyer: User) -> None:
    """The first history row of each of the new order's three statuses."""
    OrderStatusChange.objects.bulk_create(
        OrderStatusChange(order=order, field=field, old_status="", new_status=getattr(order, field), acting_user=buyer)
        for field in OrderStatusChange.Field.values)


def payment_methods_for(*, buyer: User, total_minor: int) -> list[str]:
    """What this buyer may pay this total with: nothing for free carts; card when Stripe is
    configured; invoice for members of a buyer organization (institutions pay on credit)."""
    if total_minor == 0:
        return [Order.PaymentMethod.FREE]
    methods = []
    if stripe_enabled():
        methods.append(Order.PaymentMethod.CARD)
    if buyer_organization(buyer) is not None:
        methods.append(Order.PaymentMethod.INVOICE)
    return methods


def checkout(*, buyer: User, payment_method: str, accept_agreement: bool, dua_template: DuaTemplate,
             expected_total_minor: int | None, expected_currency: str | None = None, po_number: str = "",
             password: str | None = None, totp_code: str | None = None, ip: str | None = None,
             intended_use: str | None = None, use_category: str | None = None,
             delivery_format: str | None = None) -> Order:
    """Turn the buyer's cart into an order, signed by the buyer: ``password`` (and
    ``totp_code`` when the account has TOTP) are checked first, outside the order's
    transaction so a refusal stays in the audit trail; the order, its contract and the
    buyer's signature of the contract (meaning "responsibility") are then one transaction.
    The cart row is locked: a double-clicked checkout finds the cart empty the second time
    and places nothing twice."""
    if not cart_items(buyer):
        raise EmptyOrderError("Your cart is empty.")
    # Only members of a verified buyer organization outside the blocked countries order
    # (marketplace/vetting.py); checked first, outside the transaction, so a refusal for a
    # blocked country stays in the audit trail.
    buyer_checkout_require(user=buyer, ip=ip)
    if not accept_agreement:
        raise AgreementNotAcceptedError("You must accept the data use agreement to place the order.")
    intended_use, use_category = intended_use_clean(intended_use=intended_use, use_category=use_category)
    delivery_format = delivery_format or Order.DeliveryFormat.DICOM
    if delivery_format not in Order.DeliveryFormat.values:
        raise OrderError("Choose a delivery format: DICOM, DICOM and NIfTI, or NIfTI only.", code="delivery_format")
    proof = signer_check(user=buyer, password=password, totp_code=totp_code, meaning=Signature.Meaning.RESPONSIBILITY,
                         record_type=CONTRACT, ip=ip)
    return _checkout_signed(buyer=buyer, proof=proof, payment_method=payment_method, dua_template=dua_template,
                            expected_total_minor=expected_total_minor, expected_currency=expected_currency,
                            po_number=po_number, ip=ip, intended_use=intended_use, use_category=use_category,
                            delivery_format=delivery_format)


def _require_territory(quote, organization) -> None:  # noqa: ANN001 - a CartQuote and an Organization
    """Each line's licence (the offer's terms, else the dataset's) must cover the buyer's country."""
    country = (organization.country if organization else "").upper()
    for line in quote.lines:
        terms = LicenceTerms.from_dict(line.offer.terms) if line.offer else line.dataset.terms
        if not terms.allows_country(country):
            covered = ", ".join(terms.territory)
            raise OrderError(f"{line.dataset.title}: its licence covers {covered} only, not your organization's "
                             f"country ({country or 'not given'}). Remove it from the cart or ask the provider "
                             "for different terms.", code="territory")


@transaction.atomic
def _checkout_signed(*, buyer: User, proof: SignerProof, payment_method: str, dua_template: DuaTemplate,
                     expected_total_minor: int | None, expected_currency: str | None, po_number: str,
                     ip: str | None, intended_use: str, use_category: str,
                     delivery_format: str = Order.DeliveryFormat.DICOM) -> Order:
    cart = Cart.objects.select_for_update().get(pk=cart_for(buyer).pk)
    items = cart_items(buyer)
    if not items:
        raise EmptyOrderError("Your cart is empty.")
    quote = cart_quote(buyer=buyer, items=items)
    if quote.problems:
        problem = quote.problems[0]
        raise OrderError(f"{problem.title}: {problem.message} Remove it from the cart or change its selection.",
                         code="cart_item_unavailable")
    if quote.mixed_currencies:
        raise MixedCurrenciesError(quote.currencies)
    if expected_total_minor is None or expected_total_minor != quote.total_minor or (
            expected_currency and expected_currency != quote.currency):
        raise OrderError("The price changed since you saw it; review the new total.", code="price_changed")
    allowed = payment_methods_for(buyer=buyer, total_minor=quote.total_minor)
    if payment_method not in allowed:
        names = ", ".join(Order.PaymentMethod(m).label.lower() for m in allowed) or "none"
        raise OrderError(f"This order cannot be paid by {payment_method or 'that method'}; choose one of: {names}.",
                         code="payment_method")
    _require_territory(quote, buyer_organization(buyer))
    po_number = (po_number or "").strip()
    if len(po_number) > MAX_PO_NUMBER:
        raise OrderError(f"The purchase order number is longer than {MAX_PO_NUMBER} characters.", code="po_number")
    free = payment_method == Order.PaymentMethod.FREE
    order = Order.objects.create(
        buyer=buyer, buyer_organization=buyer_organization(buyer), currency=quote.currency,
        total_minor=quote.total_minor, payment_method=payment_method, po_number=po_number,
        payment_status=Order.PaymentStatus.NOT_REQUIRED if free else Order.PaymentStatus.UNPAID,
        intended_use=intended_use, use_category=use_category, delivery_format=delivery_format,
    )
    now = timezone.now()
    for line in quote.lines:
        dataset = line.dataset
        licence = {"licence_text": dataset.licence_text, "licence_terms": dataset.terms.to_dict(),
                   # Provisional: order_release starts the term again when access is granted.
                   "licence_ends": now + SUBSCRIPTION_TERM if line.price.model == "subscription" else None}
        if line.offer is not None:
            # The offer's terms, and the offer itself: the unique constraint on
            # OrderLine.offer refuses a second order at it even from a concurrent checkout.
            licence |= offer_line_fields(line.offer)
        created = OrderLine.objects.create(
            order=order, dataset=dataset, provider_id=dataset.provider_id, criteria=line.criteria,
            study_count=line.study_count, image_count=line.image_count, held_excluded=line.held_excluded,
            pricing_model=line.price.model, price_snapshot=line.price.snapshot(), amount_minor=line.total_minor,
            currency=line.currency, licence_type=dataset.licence_type, **licence,
            consent_status=consent_initial_status(dataset),
        )
        created.studies.set(line.study_ids)
    # The text the dataset page showed (orders/agreements.py), for every line in order.
    text = agreement_text_for(template=dua_template, datasets=[line.dataset for line in quote.lines],
                              offers=[line.offer for line in quote.lines])
    contract = Contract.objects.create(order=order, template=dua_template, template_version=dua_template.version,
                                       text=text, text_sha256=agreement_sha256(text), accepted_by=buyer,
                                       accepted_at=now, accepted_ip=ip)
    _history_start(order, buyer)
    cart.items.all().delete()
    signature = signature_create(proof=proof, meaning=Signature.Meaning.RESPONSIBILITY, record=contract, ip=ip)
    audit_record(actor=buyer, action="order.place", obj=order, ip=ip, detail={
        "lines": [{"dataset_id": line.dataset.pk, "studies": line.study_count, "amount_minor": line.total_minor,
                   "model": line.price.model, "criteria": line.criteria,
                   "offer_id": line.offer.pk if line.offer else None} for line in quote.lines],
        "total_minor": order.total_minor, "currency": order.currency, "payment_method": payment_method,
        "dua_version": dua_template.version, "signature_id": signature.pk, "use_category": use_category,
    })
    consent_request_notify(order=order)
    if payment_method == Order.PaymentMethod.INVOICE:
        from orders.invoicing import invoice_issue

        invoice_issue(order=order, acting_user=buyer)
    return order


def sample_take(*, buyer: User, dataset, accept_agreement: bool, dua_template: DuaTemplate,  # noqa: ANN001
                password: str | None = None, totp_code: str | None = None, ip: str | None = None) -> Order:
    """The dataset's free sample: its first N studies (N set by the provider), for any
    signed-in user, under the agreement, once per user and dataset, signed by the buyer
    like a checkout. Delivered after the admin's approval like any order, with nothing
    to pay.

    A sample is de-identified data all the same: only members of a verified buyer
    organization (outside the blocked countries) take one, like any order. Its intended
    use is the fixed statement below, and a dataset that asks for consent asks it for its
    sample too."""
    from catalog.models import Dataset

    size = getattr(dataset, "sample_study_count", 0) or 0
    if dataset.status != Dataset.Status.PUBLISHED or size <= 0:
        raise OrderError("This dataset offers no free sample.", code="no_sample")
    if not accept_agreement:
        raise AgreementNotAcceptedError("You must accept the data use agreement to take the sample.")
    taken = OrderLine.objects.filter(order__buyer=buyer, dataset=dataset, pricing_model="sample").first()
    if taken is not None:
        raise OrderError(f"You already took this dataset's sample (order #{taken.order_id}).", code="sample_taken")
    buyer_checkout_require(user=buyer, ip=ip, what="sample")
    proof = signer_check(user=buyer, password=password, totp_code=totp_code, meaning=Signature.Meaning.RESPONSIBILITY,
                         record_type=CONTRACT, ip=ip)
    return _sample_take_signed(buyer=buyer, proof=proof, dataset=dataset, size=size, dua_template=dua_template, ip=ip)


@transaction.atomic
def _sample_take_signed(*, buyer: User, proof: SignerProof, dataset, size: int,  # noqa: ANN001
                        dua_template: DuaTemplate, ip: str | None) -> Order:
    from catalog.search.criteria import cohort_from
    from catalog.search.service import cohort_study_ids

    ids = sorted(cohort_study_ids(query=cohort_from({}), dataset_id=dataset.pk))[:size]
    if not ids:
        raise EmptyOrderError("This dataset has no study to sample yet.")
    order = Order.objects.create(buyer=buyer, buyer_organization=buyer_organization(buyer), currency=dataset.currency,
                                 total_minor=0, payment_method=Order.PaymentMethod.FREE,
                                 payment_status=Order.PaymentStatus.NOT_REQUIRED, intended_use=SAMPLE_INTENDED_USE)
    line = OrderLine.objects.create(
        order=order, dataset=dataset, provider_id=dataset.provider_id, study_count=len(ids), pricing_model="sample",
        price_snapshot={"model": "sample", "currency": dataset.currency, "total_minor": 0,
                        "lines": [{"label": f"Free sample: {len(ids)} studies", "amount_minor": 0}]},
        amount_minor=0, currency=dataset.currency, licence_type=dataset.licence_type,
        licence_text=dataset.licence_text, licence_terms=dataset.terms.to_dict(),
        consent_status=consent_initial_status(dataset))
    line.studies.set(ids)
    now = timezone.now()
    text = agreement_text_for(template=dua_template, datasets=[dataset])
    contract = Contract.objects.create(order=order, template=dua_template, template_version=dua_template.version,
                                       text=text, text_sha256=agreement_sha256(text), accepted_by=buyer,
                                       accepted_at=now, accepted_ip=ip)
    _history_start(order, buyer)
    signature = signature_create(proof=proof, meaning=Signature.Meaning.RESPONSIBILITY, record=contract, ip=ip)
    audit_record(actor=buyer, action="order.sample", obj=order, ip=ip,
                 detail={"dataset_id": dataset.pk, "studies": len(ids), "dua_version": dua_template.version,
                         "signature_id": signature.pk})
    consent_request_notify(order=order)
    return order
