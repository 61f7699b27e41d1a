"""Card payments end to end against the local Stripe server: the order is paid only by
Stripe's signed webhook (as Stripe sent it), each event is stored once, replays and
out-of-order events change nothing twice, a wrong amount is held for an admin, refunds
reverse the providers' transfers and end access."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

import pytest
from django.urls import reverse

from factories.orders import approval_signature, place_order
from orders import stripe_gateway as gateway
from orders.exceptions import OrderError
from orders.ledger import services as ledger
from orders.models import Order, Payment, ProviderTransfer, Refund, StripeEvent
from orders.payments import card_pay
from orders.payouts import connected_account_create, providers_pay
from orders.refunds import order_refund
from orders.services import contract_decide
from workspaces.models import Delivery
from workspaces.services import delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold", "stripe_settings")]


def card(number: str = "4242424242424242") -> str:
    return gateway.client().v1.payment_methods.create(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}},
        {"idempotency_key": f"pm-{secrets.token_hex(6)}"}).id


def post_event(client, body: bytes, signature: str):  # noqa: ANN001, ANN201
    return client.post(reverse("stripe_webhook"), data=body, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=signature)


def signed(event: dict, secret: str) -> tuple[bytes, str]:
    """An event signed with Stripe's scheme (for events we shape ourselves)."""
    body = json.dumps(event).encode()
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={timestamp},v1={mac}"


@pytest.fixture
def card_order(published_dataset, bob, dua):
    return place_order(bob, published_dataset, dua, payment_method="card")


def pay_and_deliver_webhook(order, buyer, client, stripe_webhooks):  # noqa: ANN001, ANN201
    card_pay(order=order, buyer=buyer, payment_method=card())
    payment = Payment.objects.get(order=order)
    body, signature = stripe_webhooks.wait_for("payment_intent.succeeded", payment.stripe_payment_intent)
    response = post_event(client, body, signature)
    assert response.status_code == 200, response.content
    return body, signature


def test_an_order_is_paid_only_by_the_verified_webhook(card_order, bob, client, stripe_webhooks, admin_user):
    step = card_pay(order=card_order, buyer=bob, payment_method=card())
    assert step.status == "processing"
    card_order.refresh_from_db()
    assert card_order.payment_status == Order.PaymentStatus.PROCESSING  # Stripe said yes; its webhook has not
    payment = Payment.objects.get(order=card_order)
    body, signature = stripe_webhooks.wait_for("payment_intent.succeeded", payment.stripe_payment_intent)

    tampered = body.replace(b'"amount": 2000', b'"amount": 1')
    assert tampered != body
    assert post_event(client, tampered, signature).status_code == 400
    assert post_event(client, body, "t=1,v1=" + "0" * 64).status_code == 400
    assert not StripeEvent.objects.exists()

    assert post_event(client, body, signature).status_code == 200
    card_order.refresh_from_db()
    assert card_order.payment_status == Order.PaymentStatus.PAID
    assert StripeEvent.objects.get().status == StripeEvent.Status.SUCCEEDED
    cash = ledger.balance(ledger.account_for("cash", "USD"))
    assert cash == 2000

    assert post_event(client, body, signature).status_code == 200  # Stripe delivers it again
    assert StripeEvent.objects.count() == 1
    assert ledger.balance(ledger.account_for("cash", "USD")) == cash
    assert card_order.status_changes.filter(field="payment_status", new_status="paid").count() == 1

    contract_decide(contract=card_order.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(card_order.contract, admin_user))
    assert Delivery.objects.filter(order=card_order).exists()


def test_a_double_clicked_payment_charges_once(card_order, bob):
    method = card()
    first = card_pay(order=card_order, buyer=bob, payment_method=method)
    second = card_pay(order=card_order, buyer=bob, payment_method=method)
    assert first.status == second.status == "processing"
    payment = Payment.objects.get(order=card_order)
    assert payment.stripe_payment_intent
    with pytest.raises(OrderError) as excinfo:  # another card while the first is processing
        card_pay(order=card_order, buyer=bob, payment_method=card())
    assert excinfo.value.code == "already_paying"
    assert Payment.objects.filter(order=card_order).count() == 1


def test_a_declined_card_fails_the_payment_and_another_may_be_tried(card_order, bob):
    with pytest.raises(OrderError) as excinfo:
        card_pay(order=card_order, buyer=bob, payment_method=card("4000000000000002"))
    assert "declined" in excinfo.value.message.lower()
    card_order.refresh_from_db()
    assert card_order.payment_status == Order.PaymentStatus.FAILED
    assert card_pay(order=card_order, buyer=bob, payment_method=card()).status == "processing"


def test_a_webhook_with_the_wrong_amount_is_held_and_delivers_nothing(card_order, bob, client, admin_user,
                                                                      stripe_webhooks, settings):
    card_pay(order=card_order, buyer=bob, payment_method=card())
    payment = Payment.objects.get(order=card_order)
    body, _ = stripe_webhooks.wait_for("payment_intent.succeeded", payment.stripe_payment_intent)
    event = json.loads(body)
    event["id"] = "evt_wrong_amount"
    event["data"]["object"]["amount"] = 20
    assert post_event(client, *signed(event, settings.STRIPE_WEBHOOK_SECRET)).status_code == 200
    card_order.refresh_from_db()
    assert card_order.payment_status == Order.PaymentStatus.FLAGGED and "20" in card_order.flag_reason
    contract_decide(contract=card_order.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(card_order.contract, admin_user))
    assert not Delivery.objects.filter(order=card_order).exists()
    assert admin_user.notifications.filter(message__contains="held for review").exists()
    assert ledger.balance(ledger.account_for("cash", "USD")) == 0


def test_a_late_failure_after_success_changes_nothing(card_order, bob, client, stripe_webhooks, settings):
    body, _ = pay_and_deliver_webhook(card_order, bob, client, stripe_webhooks)
    event = json.loads(body)
    event.update(id="evt_late_failure", type="payment_intent.payment_failed")
    assert post_event(client, *signed(event, settings.STRIPE_WEBHOOK_SECRET)).status_code == 200
    card_order.refresh_from_db()
    assert card_order.payment_status == Order.PaymentStatus.PAID


def test_a_refund_reverses_the_providers_transfer_and_ends_access(card_order, bob, client, admin_user, alice,
                                                                   provider, stripe_webhooks, stripe_server):
    connected_account_create(provider=provider, acting_user=admin_user, email="payouts@alpha.example.org")
    pay_and_deliver_webhook(card_order, bob, client, stripe_webhooks)
    contract_decide(contract=card_order.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(card_order.contract, admin_user))
    [transfer] = providers_pay(order_id=card_order.pk)  # the worker's task, in-process
    assert (transfer.status, transfer.amount_minor) == (ProviderTransfer.Status.PAID, 1700)  # 2000 less 15 %
    assert transfer.stripe_transfer.startswith("tr_")
    delivery = delivery_run(delivery_id=Delivery.objects.get(order=card_order).pk)
    assert delivery.files.count() == 6

    with pytest.raises(OrderError):
        order_refund(order=card_order, line=None, reason="", acting_user=admin_user)
    [refund] = order_refund(order=card_order, line=None, reason="Wrong cohort", acting_user=admin_user)
    assert refund.stripe_refund.startswith("re_") and refund.amount_minor == 2000
    card_order.refresh_from_db()
    assert (card_order.payment_status, card_order.status) == ("refunded", "cancelled")
    assert card_order.lines.get().access_ended_at is not None
    assert Delivery.objects.get(pk=delivery.pk).files.count() == 0  # the workspace copy is gone
    transfer.refresh_from_db()
    assert transfer.reversed_minor == 1700
    balances = ledger.provider_balances(provider, "USD")
    assert balances["payable"] == 0 and balances["receivable"] == 0
    assert ledger.balance(ledger.account_for("cash", "USD")) == 0
    with pytest.raises(OrderError):
        order_refund(order=card_order, line=None, reason="again", acting_user=admin_user)
    assert Refund.objects.count() == 1


def test_a_reversal_the_provider_cannot_cover_becomes_a_receivable_netted_later(
        published_dataset, bob, client, admin_user, provider, dua, stripe_webhooks, stripe_server):
    import urllib.request

    connected_account_create(provider=provider, acting_user=admin_user, email="payouts@alpha.example.org")
    first = place_order(bob, published_dataset, dua, payment_method="card")
    pay_and_deliver_webhook(first, bob, client, stripe_webhooks)
    contract_decide(contract=first.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(first.contract, admin_user))
    providers_pay(order_id=first.pk)
    # The provider paid its Stripe balance out to its bank: nothing left to reverse.
    provider.refresh_from_db()
    request = urllib.request.Request(f"{stripe_server.api_base}/_standin/accounts/{provider.stripe_account_id}/balance",
                                     data=json.dumps({"available": 0}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    order_refund(order=first, line=None, reason="Duplicate purchase", acting_user=admin_user)
    assert ledger.provider_balances(provider, "USD")["receivable"] == 1700

    # The next sale (bob's colleague buys again: his own first order was refunded, nothing is held)
    second = place_order(bob, published_dataset, dua, payment_method="card")
    pay_and_deliver_webhook(second, bob, client, stripe_webhooks)
    contract_decide(contract=second.contract, approve=True, acting_user=admin_user,
                    signature=approval_signature(second.contract, admin_user))
    [transfer] = providers_pay(order_id=second.pk)
    assert transfer.status == ProviderTransfer.Status.PAID and transfer.stripe_transfer == ""  # all netted
    assert ledger.provider_balances(provider, "USD")["receivable"] == 0


def test_the_order_page_shows_the_card_form_with_the_local_stripe_js(card_order, bob, client, settings):
    client.force_login(bob)
    page = client.get(reverse("order_detail", args=[card_order.pk]))
    html = page.content.decode()
    assert 'id="card-payment"' in html and settings.STRIPE_JS_URL in html
    assert "seti_" in html  # the SetupIntent's client secret for Stripe.js
    csp = page.headers.get("Content-Security-Policy", "")
    assert settings.STRIPE_JS_URL.split("/js.stripe.com")[0] in csp


def test_the_webhook_refuses_get_and_garbage(client):
    assert client.get(reverse("stripe_webhook")).status_code == 405
    assert post_event(client, b"not json", "t=1,v1=00").status_code == 400
    assert not StripeEvent.objects.exists()

