"""Provider consent per order: lines of datasets that ask for it wait for a provider member's
signed approval or reasoned refusal, and the admin's contract approval comes last."""
from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from factories.accounts import totp_code
from factories.orders import approval_signature, approve_for_delivery, place_order
from marketplace.exceptions import InvalidTransitionError, NotFoundError
from marketplace.models import AuditEvent, Notification
from orders.consent import ConsentPendingError, consent_approve_signed, consent_decline
from orders.exceptions import OrderError
from orders.models import Contract, Order, OrderLine, Signature
from orders.services import contract_approve_signed, contract_decide
from orders.signatures import ORDER_LINE, SignatureRefusedError, signature_verify

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

ALICE_PASSWORD = "pass-1234567"
Consent = OrderLine.ConsentStatus


@pytest.fixture
def consent_dataset(published_dataset, alice):
    from catalog.datasets.services import dataset_update

    dataset_update(dataset=published_dataset, acting_user=alice, requires_provider_consent=True)
    published_dataset.refresh_from_db()
    assert published_dataset.requires_provider_consent
    return published_dataset


@pytest.fixture
def waiting_order(consent_dataset, bob, dua, settings, django_capture_on_commit_callbacks):
    settings.SITE_URL = "https://data.example.org"
    with django_capture_on_commit_callbacks(execute=True):
        return place_order(bob, consent_dataset, dua, intended_use="Training a nodule detector for a trial.",
                           use_category="ai_commercial")


@pytest.fixture
def dave(second_provider_dataset):
    return second_provider_dataset.provider.memberships.get().user


def _line(order: Order) -> OrderLine:
    return order.lines.get()


# ---- checkout ----------------------------------------------------------------------------
def test_lines_start_pending_and_the_providers_members_are_told(waiting_order, alice, mailoutbox):
    line = _line(waiting_order)
    assert line.consent_status == Consent.PENDING
    notice = Notification.objects.get(user=alice)
    assert f"Order #{waiting_order.pk}" in notice.message and "waits for your consent" in notice.message
    assert notice.url == f"https://data.example.org/provider/consent/{line.pk}/"
    assert any(notice.url in mail.body and mail.to == [alice.email] for mail in mailoutbox)


def test_datasets_without_the_flag_need_no_consent(published_dataset, second_provider_dataset, bob, dua, dave):
    order = place_order(bob, [published_dataset, second_provider_dataset], dua)
    assert set(order.lines.values_list("consent_status", flat=True)) == {Consent.NOT_REQUIRED}
    assert not Notification.objects.filter(user=dave).exists()


def test_the_provider_sets_the_flag_in_the_dataset_form(alice, dataset, client):
    client.force_login(alice)
    page = client.get(reverse("dataset_new")).content.decode()
    assert 'name="requires_provider_consent"' in page


# ---- the admin comes last ----------------------------------------------------------------
def test_the_contract_cannot_be_approved_before_consent(waiting_order, admin_user, admin_client):
    contract = waiting_order.contract
    with pytest.raises(ConsentPendingError, match="Alpha Imaging.: awaiting the provider.s consent"):
        contract_decide(contract=contract, approve=True, acting_user=admin_user,
                        signature=approval_signature(contract, admin_user))
    with pytest.raises(ConsentPendingError):
        contract_approve_signed(contract=contract, acting_user=admin_user, password="admin-pass-123",
                                totp_code=totp_code())
    contract.refresh_from_db()
    assert contract.status == Contract.Status.PENDING
    # Refused before the admin signs: only the setup signature above exists.
    assert Signature.objects.filter(record_type="orders.contract", signer=admin_user).count() == 1
    page = admin_client.get(reverse("admin:orders_contract_approve", args=[contract.pk])).content.decode()
    assert 'id="consent-blocking"' in page and "Awaiting the provider&#x27;s consent" in page
    assert "Training a nodule detector for a trial." in page
    response = admin_client.post(reverse("admin:orders_contract_approve", args=[contract.pk]),
                                 {"password": "admin-pass-123", "totp_code": totp_code()})
    assert response.status_code == 409 and "every provider that asks for it has consented" in response.content.decode()
    change = admin_client.get(reverse("admin:orders_contract_change", args=[contract.pk])).content.decode()
    assert "Waiting for the providers&#x27; consent" in change


def test_the_provider_approves_by_signing_then_the_admin_approves(waiting_order, alice, bob, admin_user,
                                                                  django_capture_on_commit_callbacks):
    line = _line(waiting_order)
    with django_capture_on_commit_callbacks(execute=True):
        decided = consent_approve_signed(line_id=line.pk, acting_user=alice, password=ALICE_PASSWORD,
                                         totp_code=totp_code(), ip="198.51.100.4")
    assert decided.consent_status == Consent.APPROVED and decided.consent_decided_by == alice
    signature = Signature.objects.get(record_type=ORDER_LINE, record_id=str(line.pk))
    assert signature.signer == alice and signature.meaning == Signature.Meaning.APPROVAL
    assert signature.factors == "password+totp" and signature_verify(signature, decided)
    event = AuditEvent.objects.get(action="consent.approve")
    assert event.actor == alice and event.detail["signature_id"] == signature.pk
    assert Notification.objects.filter(user=bob, message__contains="consented").exists()
    assert Notification.objects.filter(user=admin_user, message__contains="every provider consented").exists()
    order = approve_for_delivery(waiting_order, admin_user)
    assert order.contract.status == Contract.Status.APPROVED
    with pytest.raises(InvalidTransitionError):  # decided once
        consent_decline(line_id=line.pk, acting_user=alice, reason="Changed our mind")


def test_a_wrong_password_signs_nothing(waiting_order, alice):
    line = _line(waiting_order)
    with pytest.raises(SignatureRefusedError):
        consent_approve_signed(line_id=line.pk, acting_user=alice, password="not-the-password", totp_code=totp_code())
    line.refresh_from_db()
    assert line.consent_status == Consent.PENDING
    assert not Signature.objects.filter(record_type=ORDER_LINE).exists()
    refusal = AuditEvent.objects.get(action="signature.refused")
    assert refusal.detail["record_type"] == ORDER_LINE and refusal.detail["reason"] == "password"


def test_another_provider_cannot_decide_and_the_attempt_is_audited(waiting_order, dave, client):
    line = _line(waiting_order)
    with pytest.raises(NotFoundError):
        consent_approve_signed(line_id=line.pk, acting_user=dave, password=ALICE_PASSWORD, totp_code=totp_code())
    with pytest.raises(NotFoundError):
        consent_decline(line_id=line.pk, acting_user=dave, reason="Not ours anyway")
    attempts = AuditEvent.objects.filter(action="consent.refused", actor=dave)
    assert sorted(e.detail["attempted"] for e in attempts) == ["approve", "decline"]
    assert all(e.detail["line_id"] == line.pk and e.detail["line_exists"] for e in attempts)
    client.force_login(dave)
    assert client.get(reverse("consent_line", args=[line.pk])).status_code == 404
    assert client.post(reverse("consent_line", args=[line.pk]),
                       {"action": "decline", "reason": "Not ours"}).status_code == 404
    assert AuditEvent.objects.filter(action="consent.refused", actor=dave).count() == 3
    assert f"consent-line-{line.pk}" not in client.get(reverse("consent_queue")).content.decode()
    line.refresh_from_db()
    assert line.consent_status == Consent.PENDING


def test_a_buyer_has_no_consent_queue(waiting_order, bob, charlie, client):
    for user in (bob, charlie):
        client.force_login(user)
        assert client.get(reverse("consent_queue")).status_code == 404
        assert client.get(reverse("consent_line", args=[_line(waiting_order).pk])).status_code == 404


def test_declining_needs_a_reason_and_cancels_the_order(waiting_order, alice, bob, admin_user,
                                                        django_capture_on_commit_callbacks):
    line = _line(waiting_order)
    with pytest.raises(OrderError) as excinfo:
        consent_decline(line_id=line.pk, acting_user=alice, reason="   ")
    assert excinfo.value.code == "reason_required"
    with django_capture_on_commit_callbacks(execute=True):
        consent_decline(line_id=line.pk, acting_user=alice, reason="Commercial use is outside our ethics approval")
    line.refresh_from_db()
    order = Order.objects.get(pk=waiting_order.pk)
    assert line.consent_status == Consent.DECLINED and line.consent_reason.startswith("Commercial use")
    assert order.status == Order.Status.CANCELLED
    assert "Commercial use is outside our ethics approval" in order.status_changes.last().reason
    assert AuditEvent.objects.filter(action="consent.decline", actor=alice).count() == 1
    assert Notification.objects.filter(user=bob, message__contains="declined").exists()
    with pytest.raises(InvalidTransitionError):
        contract_decide(contract=order.contract, approve=True, acting_user=admin_user,
                        signature=approval_signature(order.contract, admin_user))


# ---- the provider's pages ------------------------------------------------------------------
def test_the_queue_shows_who_orders_and_what_for(waiting_order, alice, client):
    client.force_login(alice)
    page = client.get(reverse("consent_queue")).content.decode()
    line = _line(waiting_order)
    assert f'id="consent-line-{line.pk}"' in page
    for text in ("Bravo AI", "United Kingdom", "Commercial (company)", "AI/ML model development (commercial)",
                 "Training a nodule detector for a trial.", "Chest CT screening"):
        assert text in page
    detail = client.get(reverse("consent_line", args=[line.pk])).content.decode()
    assert 'name="password"' in detail and 'name="totp_code"' in detail and 'name="reason"' in detail


def test_the_provider_approves_on_the_page(waiting_order, alice, client):
    line = _line(waiting_order)
    client.force_login(alice)
    url = reverse("consent_line", args=[line.pk])
    refused = client.post(url, {"action": "approve", "password": "wrong-one-1", "totp_code": totp_code()})
    assert refused.status_code == 403 and "The password is not correct" in refused.content.decode()
    response = client.post(url, {"action": "approve", "password": ALICE_PASSWORD, "totp_code": totp_code()})
    assert response.status_code == 302 and response.url == reverse("consent_queue")
    line.refresh_from_db()
    assert line.consent_status == Consent.APPROVED


def test_the_buyer_sees_each_lines_consent(waiting_order, bob, client):
    client.force_login(bob)
    page = client.get(reverse("order_detail", args=[waiting_order.pk])).content.decode()
    assert "Awaiting the provider&#x27;s consent" in page
    api = APIClient()
    api.force_authenticate(bob)
    body = api.get(f"/api/orders/{waiting_order.pk}/").json()
    assert [line["consent_status"] for line in body["lines"]] == ["pending"]
