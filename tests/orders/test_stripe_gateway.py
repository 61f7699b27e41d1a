"""orders/stripe_gateway.py against the local Stripe server: localstripe for PaymentIntents,
SetupIntents, refunds and its signed webhooks; our stand-in for Connect accounts, transfers,
reversals, send-invoice invoices and idempotency keys. Real HTTP, nothing mocked."""
from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request

import pytest

from orders import stripe_gateway as gateway
from orders.exceptions import PaymentGatewayError, WebhookSignatureError

pytestmark = pytest.mark.usefixtures("stripe_settings")


def key(name: str) -> str:
    """A fresh idempotency key (the app derives its keys from its own records)."""
    return f"{name}-{secrets.token_hex(6)}"


def card(number: str = "4242424242424242") -> str:
    """A card PaymentMethod made through the API (Stripe.js makes them in the browser)."""
    method = gateway.client().v1.payment_methods.create(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}},
        {"idempotency_key": key("pm")})
    return method.id


def pay(amount_minor: int = 10_000, **extra):
    return gateway.create_payment_intent(amount_minor=amount_minor, currency="eur", payment_method=card(),
                                         metadata={"order": "42"}, transfer_group=extra.pop("transfer_group", None),
                                         idempotency_key=extra.pop("idempotency_key", key("pi")), **extra)


def provider_account() -> str:
    return gateway.create_connected_account(email="payouts@provider.example.org", country="DE",
                                            idempotency_key=key("acct")).id


def post_json(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_card_payment_succeeds_and_its_signed_webhook_is_accepted(stripe_webhooks) -> None:
    intent = pay(12_500)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 12_500, "eur")
    assert intent.metadata["order"] == "42" and intent.latest_charge

    body, signature = stripe_webhooks.wait_for("payment_intent.succeeded", intent.id)
    event = gateway.verify_webhook(body, signature)
    assert event["type"] == "payment_intent.succeeded" and event["data"]["object"]["amount"] == 12_500

    with pytest.raises(WebhookSignatureError):
        gateway.verify_webhook(body.replace(b"12500", b"1"), signature)
    timestamp, mac = signature.split(",")
    forged = f"{timestamp},v1={'0' * len(mac.split('=')[1])}"
    with pytest.raises(WebhookSignatureError):
        gateway.verify_webhook(body, forged)
    with pytest.raises(WebhookSignatureError):
        gateway.verify_webhook(body, "")


def test_transfer_group_round_trips_on_a_payment_intent() -> None:
    intent = pay(transfer_group="order-77")
    assert intent.transfer_group == "order-77"
    assert gateway.retrieve_payment_intent(intent.id).transfer_group == "order-77"
    assert pay().transfer_group is None


def test_a_declined_card_raises_a_readable_error() -> None:
    with pytest.raises(PaymentGatewayError) as caught:
        gateway.create_payment_intent(amount_minor=5_000, currency="eur", payment_method=card("4000000000000002"),
                                      metadata={}, transfer_group=None, idempotency_key=key("pi"))
    assert caught.value.code == "card_declined"
    assert caught.value.message == "The card was declined."


def test_one_idempotency_key_gives_one_payment_and_refuses_other_details() -> None:
    method, same_key = card(), key("order-9")

    def create(amount_minor: int):
        return gateway.create_payment_intent(amount_minor=amount_minor, currency="eur", payment_method=method,
                                             metadata={"order": "9"}, transfer_group="order-9",
                                             idempotency_key=same_key)

    first, again = create(3_000), create(3_000)
    assert first.id == again.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    charges = gateway.client().v1.charges.list({"limit": 100})
    assert [c.id for c in charges.data if c.payment_intent == first.id] == [first.latest_charge]

    with pytest.raises(PaymentGatewayError) as caught:
        create(3_001)
    assert caught.value.code == "idempotency_error"


def test_a_post_without_an_idempotency_key_is_refused(stripe_server, stripe_settings) -> None:
    status, answer = post_json(f"{stripe_server.api_base}/v1/customers", {"email": "x@example.org"},
                               {"Authorization": f"Bearer {stripe_settings.STRIPE_SECRET_KEY}"})
    assert status == 400 and "Idempotency-Key" in answer["error"]["message"]
    with pytest.raises(ValueError, match="idempotency_key"):
        gateway.create_customer(email="x@example.org", name="X", idempotency_key="")


def test_transfers_from_a_charge_cannot_exceed_it() -> None:
    charge = pay(10_000, transfer_group="order-5").latest_charge
    account = provider_account()

    def transfer(amount_minor: int):
        return gateway.create_transfer(amount_minor=amount_minor, currency="eur", destination=account,
                                       transfer_group="order-5", source_transaction=charge, metadata={"order": "5"},
                                       idempotency_key=key("tr"))

    first = transfer(7_000)
    assert (first.amount, first.destination, first.source_transaction) == (7_000, account, charge)
    with pytest.raises(PaymentGatewayError) as caught:
        transfer(3_001)
    assert caught.value.code == "insufficient_funds"
    transfer(3_000)
    listed = gateway.client().v1.transfers.list({"transfer_group": "order-5"})
    assert sorted(t.amount for t in listed.data) == [3_000, 7_000]


def test_a_reversal_beyond_the_connected_balance_fails(stripe_server) -> None:
    charge = pay(10_000).latest_charge
    account = provider_account()
    transfer = gateway.create_transfer(amount_minor=8_000, currency="eur", destination=account, transfer_group=None,
                                       source_transaction=charge, metadata={}, idempotency_key=key("tr"))
    status, _ = post_json(f"{stripe_server.api_base}/_standin/accounts/{account}/balance", {"available": 1_000})
    assert status == 200  # the provider has paid out all but 10.00

    with pytest.raises(PaymentGatewayError) as caught:
        gateway.reverse_transfer(transfer_id=transfer.id, amount_minor=5_000, metadata={}, idempotency_key=key("trr"))
    assert caught.value.code == "balance_insufficient"
    assert "balance" in caught.value.message

    reversal = gateway.reverse_transfer(transfer_id=transfer.id, amount_minor=1_000, metadata={"refund": "1"},
                                        idempotency_key=key("trr"))
    assert (reversal.amount, reversal.transfer) == (1_000, transfer.id)
    assert gateway.client().v1.transfers.retrieve(transfer.id).amount_reversed == 1_000
    balance = gateway.client().v1.balance.retrieve(options={"stripe_account": account})
    assert balance.available[0].amount == 0


def test_a_send_invoice_is_finalized_sent_and_paid_with_signed_events(stripe_webhooks) -> None:
    customer = gateway.create_customer(email="billing@hospital.example.org", name="St. Example",
                                       idempotency_key=key("cus")).id
    invoice_key = key("invoice")
    invoice = gateway.create_send_invoice(customer=customer, lines=[("Chest CT, 12 studies", 120_000),
                                                                    ("Delivery", 5_000)],
                                          currency="eur", days_until_due=30, metadata={"order": "7"},
                                          idempotency_key=invoice_key)
    assert (invoice.status, invoice.collection_method, invoice.amount_due) == ("open", "send_invoice", 125_000)
    assert [line.description for line in invoice.lines.data] == ["Chest CT, 12 studies", "Delivery"]
    assert invoice.number and invoice.due_date > invoice.created
    for event_type in ("invoice.finalized", "invoice.sent"):
        stripe_webhooks.wait_for(event_type, invoice.id)
    assert gateway.create_send_invoice(customer=customer, lines=[("Chest CT, 12 studies", 120_000),
                                                                 ("Delivery", 5_000)],
                                       currency="eur", days_until_due=30, metadata={"order": "7"},
                                       idempotency_key=invoice_key).id == invoice.id

    paid = gateway.pay_invoice_out_of_band(invoice_id=invoice.id, idempotency_key=key("pay"))
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 125_000, 0)
    event = gateway.verify_webhook(*stripe_webhooks.wait_for("invoice.paid", invoice.id))
    assert event["data"]["object"]["status"] == "paid"
    with pytest.raises(PaymentGatewayError):
        gateway.void_invoice(invoice_id=invoice.id, idempotency_key=key("void"))


def test_an_open_invoice_can_be_voided(stripe_webhooks) -> None:
    customer = gateway.create_customer(email="b@example.org", name="B", idempotency_key=key("cus")).id
    invoice = gateway.create_send_invoice(customer=customer, lines=[("Study", 900)], currency="eur",
                                          days_until_due=14, metadata={}, idempotency_key=key("invoice"))
    assert gateway.void_invoice(invoice_id=invoice.id, idempotency_key=key("void")).status == "void"
    stripe_webhooks.wait_for("invoice.voided", invoice.id)


def test_refunds_and_setup_intents() -> None:
    intent = pay(4_000)
    refund = gateway.create_refund(payment_intent=intent.id, amount_minor=1_500, metadata={"reason": "partial"},
                                   idempotency_key=key("re"))
    assert (refund.status, refund.amount) == ("succeeded", 1_500)
    setup = gateway.create_setup_intent(metadata={"user": "3"}, idempotency_key=key("seti"))
    assert setup.status == "requires_payment_method" and setup.client_secret.startswith(setup.id)


def test_an_unreachable_stripe_is_a_readable_error(stripe_settings) -> None:
    stripe_settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(PaymentGatewayError) as caught:
        gateway.retrieve_payment_intent("pi_missing")
    assert caught.value.code == "unreachable" and "try again" in caught.value.message


def test_the_test_stripe_js_is_served(stripe_server) -> None:
    with urllib.request.urlopen(stripe_server.js_url, timeout=10) as answer:
        assert answer.status == 200 and b"confirmCardSetup" in answer.read()
