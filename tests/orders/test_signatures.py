"""Electronic signatures: the buyer signs the agreement at checkout, the admin signs an
approval; both type their password (and TOTP code) in the same request."""
from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from factories.accounts import ready_account, totp_code
from factories.orders import USE, approval_signature, place_order
from marketplace.models import AuditEvent
from marketplace.ratelimit import RateLimitedError
from orders.cart import cart_add, cart_quote
from orders.checkout import checkout
from orders.exceptions import OrderError
from orders.models import Contract, Order, OrderLine, Signature
from orders.services import contract_decide, credit_approve
from orders.signatures import (
    SignatureRefusedError,
    record_canonical,
    record_sha256,
    signature_sign,
    signature_verify,
)
from workspaces.models import Delivery

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

BOB_PASSWORD, ADMIN_PASSWORD = "pass-1234567", "admin-pass-123"


def _checkout(buyer, dua, **signature):  # noqa: ANN001, ANN003, ANN202
    quote = cart_quote(buyer=buyer)
    return checkout(buyer=buyer, payment_method="invoice", accept_agreement=True, dua_template=dua,
                    expected_total_minor=quote.total_minor, expected_currency=quote.currency, ip="198.51.100.7",
                    **USE, **signature)


def _refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="signature.refused").order_by("id"))


# ---- the buyer at checkout ---------------------------------------------------------------
@pytest.mark.parametrize("password", ["wrong-password-1", "", None])
def test_a_wrong_or_missing_password_places_nothing_and_is_audited(published_dataset, bob, dua, password):
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(SignatureRefusedError) as excinfo:
        _checkout(bob, dua, password=password)
    assert excinfo.value.code == "signature_refused" and "password" in excinfo.value.message
    assert not Order.objects.exists() and not Signature.objects.exists()
    [event] = _refusals()
    assert event.actor == bob and str(event.ip_address) == "198.51.100.7"
    assert event.detail == {"reason": "password", "meaning": "responsibility", "record_type": "orders.contract",
                            "record_id": ""}
    assert "wrong-password" not in str(event.detail)
    assert cart_quote(buyer=bob).lines  # the cart is kept for the next attempt


def test_the_buyers_signature_is_made_with_the_order(published_dataset, bob, dua):
    bob.first_name, bob.last_name = "Bob", "Builder"
    bob.save()
    order = place_order(bob, published_dataset, dua)
    [signature] = Signature.objects.all()
    assert (signature.signer, signature.printed_name, signature.meaning, signature.factors) == (
        bob, "Bob Builder", "responsibility", "password")
    assert (signature.record_type, signature.record_id) == ("orders.contract", str(order.contract.pk))
    assert signature_verify(signature, order.contract)
    assert AuditEvent.objects.get(action="order.place").detail["signature_id"] == signature.pk
    assert AuditEvent.objects.filter(action="signature.sign", object_id=str(signature.pk)).exists()


def test_a_totp_account_signs_with_password_and_code_only(published_dataset, bob, dua):
    ready_account(bob, two_factor=True)
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(SignatureRefusedError, match="authenticator"):
        _checkout(bob, dua, password=BOB_PASSWORD)
    with pytest.raises(SignatureRefusedError, match="authenticator code is not correct"):
        _checkout(bob, dua, password=BOB_PASSWORD, totp_code="000000" if totp_code() != "000000" else "111111")
    assert [e.detail["reason"] for e in _refusals()] == ["totp_missing", "totp"]
    assert not Order.objects.exists()
    code = totp_code()
    order = _checkout(bob, dua, password=BOB_PASSWORD, totp_code=code)
    assert Signature.objects.get().factors == "password+totp"
    # The same code does not sign twice.
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(SignatureRefusedError):
        _checkout(bob, dua, password=BOB_PASSWORD, totp_code=code)
    assert Order.objects.get() == order


def test_failed_signatures_are_limited_per_account(published_dataset, bob, dua, settings):
    settings.SIGNATURE_FAILED_RATE = "3/hour"
    cart_add(buyer=bob, dataset=published_dataset)
    for _ in range(3):
        with pytest.raises(SignatureRefusedError):
            _checkout(bob, dua, password="not-it-at-all")
    with pytest.raises(RateLimitedError):  # even the right password, until the window ends
        _checkout(bob, dua, password=BOB_PASSWORD)
    assert [e.detail["reason"] for e in _refusals()] == ["password"] * 3 + ["rate_limited"]
    assert not Order.objects.exists()


def test_the_page_and_the_api_ask_for_the_password(client, published_dataset, bob, dua):
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    cart_page = client.get(reverse("cart")).content.decode()
    assert 'name="password"' in cart_page and 'name="totp_code"' not in cart_page
    form = {"accept": "on", "expected_total_minor": "2000", "expected_currency": "USD", "payment_method": "invoice",
            **USE}
    response = client.post(reverse("cart_checkout"), {**form, "password": "wrong-password-1"}, follow=True)
    assert "The password is not correct" in response.content.decode()
    api = APIClient()
    api.force_authenticate(bob)
    body = {"accept_agreement": True, "payment_method": "invoice", "expected_total_minor": 2000,
            "expected_currency": "USD", "password": "wrong-password-1", **USE}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 403 and response.json()["code"] == "signature_refused"
    assert not Order.objects.exists()
    response = api.post("/api/orders/", {**body, "password": BOB_PASSWORD}, format="json")
    assert response.status_code == 201
    [signature] = response.json()["signatures"]
    assert signature["meaning"] == "responsibility" and signature["matches"] is True
    assert "password" not in response.json()


def test_a_totp_buyer_sees_the_code_field(client, published_dataset, bob, dua):
    ready_account(bob, two_factor=True)
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    assert 'name="totp_code"' in client.get(reverse("cart")).content.decode()


# ---- the signed record ---------------------------------------------------------------------
def test_a_changed_contract_no_longer_matches_its_signature(client, published_dataset, bob, dua):
    order = place_order(bob, published_dataset, dua)
    contract, signature = order.contract, Signature.objects.get()
    canonical = record_canonical(contract).decode()
    assert '"agreement_version":"' in canonical and f'"dataset_id":{published_dataset.pk}' in canonical
    assert signature.record_sha256 == record_sha256(contract)
    client.force_login(bob)
    page = client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert signature.record_sha256 in page and "Matches the signed record" in page

    OrderLine.objects.filter(order=order).update(amount_minor=1)  # a changed amount
    assert not signature_verify(signature, Contract.objects.get(pk=contract.pk))
    page = client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert "Changed since signing" in page
    OrderLine.objects.filter(order=order).update(amount_minor=2000)
    assert signature_verify(signature, Contract.objects.get(pk=contract.pk))

    Contract.objects.filter(pk=contract.pk).update(text=contract.text + " And one more clause.")
    assert not signature_verify(signature, Contract.objects.get(pk=contract.pk))


def test_a_decision_or_payment_does_not_change_the_signed_record(published_dataset, bob, dua, admin_user):
    order = place_order(bob, published_dataset, dua)
    before = record_sha256(order.contract)
    credit_approve(order=order, acting_user=admin_user)
    contract_decide(contract=order.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(order.contract, admin_user))
    assert record_sha256(Contract.objects.get(pk=order.contract.pk)) == before


@pytest.mark.parametrize("statement", ["UPDATE orders_signature SET printed_name = 'Mallory'",
                                       "UPDATE orders_signature SET record_sha256 = repeat('0', 64)",
                                       "DELETE FROM orders_signature"])
def test_the_database_refuses_to_change_or_delete_a_signature(published_dataset, bob, dua, statement):
    place_order(bob, published_dataset, dua)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    signature = Signature.objects.get()
    assert signature.printed_name == "bob" and signature.record_sha256 != "0" * 64


# ---- the admin's approval --------------------------------------------------------------------
def test_approval_needs_the_admins_own_matching_approval_signature(published_dataset, bob, dua, admin_user,
                                                                    make_member):
    order = place_order(bob, published_dataset, dua)
    buyer_signature = Signature.objects.get()
    other_admin = make_member("erin", "Bravo AI", "buyer")[0]
    for signature in (None, buyer_signature, approval_signature(order.contract, other_admin)):
        with pytest.raises(OrderError) as excinfo:
            contract_decide(contract=order.contract, approve=True, acting_user=admin_user, signature=signature)
        assert excinfo.value.code == "signature_required"
    assert Contract.objects.get(pk=order.contract.pk).status == Contract.Status.PENDING


def test_signature_sign_checks_password_and_totp(published_dataset, bob, dua, admin_user):
    contract = place_order(bob, published_dataset, dua).contract
    with pytest.raises(SignatureRefusedError):
        signature_sign(user=admin_user, password=ADMIN_PASSWORD, totp_code="", meaning="approval", record=contract)
    with pytest.raises(SignatureRefusedError):
        signature_sign(user=admin_user, password="nope-nope-nope", totp_code=totp_code(), meaning="approval",
                       record=contract)
    assert [e.detail["reason"] for e in _refusals()] == ["totp_missing", "password"]
    assert _refusals()[0].detail["record_id"] == str(contract.pk)
    signature = signature_sign(user=admin_user, password=ADMIN_PASSWORD, totp_code=totp_code(), meaning="approval",
                               record=contract, ip="203.0.113.9")
    assert (signature.meaning, signature.factors, str(signature.ip)) == ("approval", "password+totp", "203.0.113.9")
    assert signature_verify(signature, contract)


def test_the_admin_approves_through_the_signed_form_and_the_release_starts(client, published_dataset, bob, dua,
                                                                           admin_user):
    order = place_order(bob, published_dataset, dua)
    credit_approve(order=order, acting_user=admin_user)  # invoiced: the money side is settled
    client.force_login(admin_user)
    change = client.get(reverse("admin:orders_contract_change", args=[order.contract.pk])).content.decode()
    url = reverse("admin:orders_contract_approve", args=[order.contract.pk])
    assert url in change
    form = client.get(url).content.decode()
    assert "admin" in form and "Approval" in form and 'name="totp_code"' in form and 'name="password"' in form

    response = client.post(url, {"password": "wrong-password-1", "totp_code": totp_code()})
    assert response.status_code == 403 and "The password is not correct" in response.content.decode()
    order.refresh_from_db()
    assert order.contract.status == Contract.Status.PENDING and order.fulfilment_status == "unfulfilled"
    assert not Delivery.objects.filter(order=order).exists()
    assert Signature.objects.filter(meaning="approval").count() == 0
    [refused] = _refusals()
    assert refused.actor == admin_user and refused.detail["meaning"] == "approval"
    assert refused.detail["record_id"] == str(order.contract.pk)

    response = client.post(url, {"password": ADMIN_PASSWORD, "totp_code": totp_code()})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.contract.status == Contract.Status.APPROVED and order.contract.decided_by == admin_user
    assert order.fulfilment_status == "fulfilling" and Delivery.objects.filter(order=order).exists()
    signature = Signature.objects.get(meaning="approval")
    assert signature.signer == admin_user and signature.factors == "password+totp"
    event = AuditEvent.objects.get(action="contract.approve", object_id=str(order.contract.pk))
    assert event.detail["signature_id"] == signature.pk
    # A second approval finds the contract decided and signs nothing more.
    assert client.post(url, {"password": ADMIN_PASSWORD, "totp_code": totp_code()}).status_code == 409
    assert Signature.objects.filter(meaning="approval").count() == 1
    change = client.get(reverse("admin:orders_contract_change", args=[order.contract.pk])).content.decode()
    assert signature.record_sha256 in change


def test_the_bulk_approve_action_is_gone(client, published_dataset, bob, dua, admin_user):
    order = place_order(bob, published_dataset, dua)
    client.force_login(admin_user)
    client.post(reverse("admin:orders_contract_changelist"),
                {"action": "approve", "_selected_action": [order.contract.pk], "reason": ""})
    assert Contract.objects.get(pk=order.contract.pk).status == Contract.Status.PENDING
