"""Our only door to Stripe (the `stripe` package): every call the marketplace makes to it.

Every call that changes something at Stripe takes an ``idempotency_key`` (keyword, required):
the caller derives it from its own record (an order, a payout line), so a retried request
never charges, transfers or invoices twice. Stripe's errors become ``PaymentGatewayError``
with a sentence a user can read and a short code; what Stripe answered is logged (ids and
codes only, never card data) and not shown.

Settings: STRIPE_SECRET_KEY (empty: payments are off), STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings

from orders.exceptions import PaymentGatewayError, WebhookSignatureError

if TYPE_CHECKING:
    import stripe

logger = logging.getLogger(__name__)

# What the user reads when a card is declined, by Stripe's decline or error code.
CARD_MESSAGES = {
    "insufficient_funds": "The card was declined: insufficient funds.",
    "expired_card": "The card has expired.",
    "incorrect_cvc": "The card's security code is incorrect.",
    "incorrect_number": "The card number is incorrect.",
    "lost_card": "The card was declined.",
    "stolen_card": "The card was declined.",
    "processing_error": "The card could not be processed; try again in a moment.",
    "authentication_required": "The bank asks for the card holder's confirmation; pay again and confirm.",
}
REQUEST_MESSAGES = {
    "balance_insufficient": "The provider's Stripe balance is too low to take this money back.",
    "insufficient_funds": "There is not enough money in this payment for that transfer.",
    "resource_missing": "The payment service does not know this payment record.",
    "charge_already_refunded": "This payment has already been refunded.",
    "amount_too_small": "The amount is too small for a card payment.",
}


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def client() -> stripe.StripeClient:
    if not stripe_enabled():
        raise PaymentGatewayError("Payments are not set up on this server.", code="payments_disabled")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


@lru_cache(maxsize=4)
def _client(secret_key: str, api_base: str) -> stripe.StripeClient:
    # imported when used (here and below): the stripe package pulls aiohttp and costs a web
    # worker about 30 MB; only a request that pays, refunds or checks a webhook needs it.
    import stripe

    return stripe.StripeClient(secret_key, base_addresses={"api": api_base}, max_network_retries=2)


# --------------------------------------------------------------------------- errors


def _gateway_error(exc: stripe.StripeError) -> PaymentGatewayError:
    import stripe  # imported when used: about 30 MB (see _client)

    code = getattr(exc, "code", None) or ""
    if isinstance(exc, stripe.CardError):
        decline = (getattr(exc.error, "decline_code", None) if exc.error else None) or code
        message = CARD_MESSAGES.get(decline) or CARD_MESSAGES.get(code) or "The card was declined."
        return PaymentGatewayError(message, code=code or "card_declined")
    if isinstance(exc, stripe.APIConnectionError):
        error = PaymentGatewayError("The payment service is unreachable; try again in a moment.", code="unreachable")
        error.status = 503
        return error
    if isinstance(exc, stripe.RateLimitError):
        error = PaymentGatewayError("The payment service is busy; try again in a moment.", code="rate_limited")
        error.status = 503
        return error
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        error = PaymentGatewayError("Payments are misconfigured on this server; the administrators need to check "
                                    "the Stripe keys.", code="misconfigured")
        error.status = 503
        return error
    if isinstance(exc, stripe.IdempotencyError):
        error = PaymentGatewayError("This payment request was already made with different details.",
                                    code="idempotency_error")
        error.status = 409
        return error
    if isinstance(exc, stripe.InvalidRequestError):
        error = PaymentGatewayError(REQUEST_MESSAGES.get(code, "The payment service refused the request."),
                                    code=code or "invalid_request")
        error.status = 400
        return error
    error = PaymentGatewayError("The payment service had an error; try again in a moment.", code="api_error")
    error.status = 503
    return error


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    import stripe  # imported when used: about 30 MB (see _client)

    try:
        yield
    except stripe.StripeError as exc:
        error = _gateway_error(exc)
        logger.warning("stripe %s failed: %s (http %s, code %s, request %s)", action, type(exc).__name__,
                       exc.http_status, getattr(exc, "code", None), exc.request_id)
        raise error from exc


def _options(idempotency_key: str) -> dict[str, str]:
    if not isinstance(idempotency_key, str) or not idempotency_key.strip() or len(idempotency_key) > 255:
        raise ValueError("idempotency_key must be a non-empty string of at most 255 characters, derived from the "
                         "record the call is made for.")
    return {"idempotency_key": idempotency_key}


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value not in (None, {}, "")}


# --------------------------------------------------------------------------- payments


def create_customer(*, email: str, name: str, idempotency_key: str) -> stripe.Customer:
    with _translated("customer create"):
        return client().v1.customers.create(_without_none({"email": email, "name": name}),
                                            _options(idempotency_key))


def create_setup_intent(*, customer: str | None = None, metadata: dict[str, str] | None = None,
                        idempotency_key: str) -> stripe.SetupIntent:
    """A SetupIntent for saving a card (Stripe.js confirms it in the browser with its client_secret)."""
    params = _without_none({"customer": customer, "usage": "off_session", "payment_method_types": ["card"],
                            "metadata": metadata})
    with _translated("setup intent create"):
        return client().v1.setup_intents.create(params, _options(idempotency_key))


def create_payment_intent(*, amount_minor: int, currency: str, payment_method: str, metadata: dict[str, str],
                          transfer_group: str | None, idempotency_key: str,
                          customer: str | None = None) -> stripe.PaymentIntent:
    """Charge ``payment_method`` now (confirmed at creation, captured automatically). A card the bank
    declines raises PaymentGatewayError (code card_declined or Stripe's decline code)."""
    params = _without_none({
        "amount": int(amount_minor), "currency": currency.lower(), "payment_method": payment_method,
        "customer": customer, "confirm": True, "capture_method": "automatic", "payment_method_types": ["card"],
        "metadata": metadata, "transfer_group": transfer_group,
    })
    with _translated("payment intent create"):
        return client().v1.payment_intents.create(params, _options(idempotency_key))


def retrieve_payment_intent(payment_intent: str) -> stripe.PaymentIntent:
    with _translated("payment intent retrieve"):
        return client().v1.payment_intents.retrieve(payment_intent)


def create_refund(*, payment_intent: str, amount_minor: int | None, metadata: dict[str, str],
                  idempotency_key: str) -> stripe.Refund:
    """Refund ``amount_minor`` of a payment (None: all of it)."""
    params = _without_none({"payment_intent": payment_intent, "amount": amount_minor, "metadata": metadata})
    with _translated("refund create"):
        return client().v1.refunds.create(params, _options(idempotency_key))


# --------------------------------------------------------------------------- Connect: providers' payouts


def create_connected_account(*, email: str, country: str, idempotency_key: str) -> stripe.Account:
    """An Express account that receives transfers (a provider organization's)."""
    params = {"type": "express", "country": country.upper(), "email": email,
              "capabilities": {"transfers": {"requested": True}}}
    with _translated("account create"):
        return client().v1.accounts.create(params, _options(idempotency_key))


def create_transfer(*, amount_minor: int, currency: str, destination: str, transfer_group: str | None,
                    source_transaction: str | None, metadata: dict[str, str], idempotency_key: str) -> stripe.Transfer:
    """Move ``amount_minor`` to a connected account; with ``source_transaction`` (a charge id) the money
    comes from that charge, and transfers from one charge cannot exceed it."""
    params = _without_none({
        "amount": int(amount_minor), "currency": currency.lower(), "destination": destination,
        "transfer_group": transfer_group, "source_transaction": source_transaction, "metadata": metadata,
    })
    with _translated("transfer create"):
        return client().v1.transfers.create(params, _options(idempotency_key))


def reverse_transfer(*, transfer_id: str, amount_minor: int | None, metadata: dict[str, str],
                     idempotency_key: str) -> stripe.TransferReversal:
    """Take ``amount_minor`` (None: what is left) of a transfer back from the connected account;
    fails with code balance_insufficient when the account has already paid it out."""
    params = _without_none({"amount": amount_minor, "metadata": metadata})
    with _translated("transfer reversal"):
        return client().v1.transfers.reversals.create(transfer_id, params, _options(idempotency_key))


# --------------------------------------------------------------------------- invoices (paid by bank transfer)


def create_send_invoice(*, customer: str, lines: list[tuple[str, int]], currency: str, days_until_due: int,
                        metadata: dict[str, str], idempotency_key: str) -> stripe.Invoice:
    """An invoice Stripe e-mails to ``customer``, payable within ``days_until_due`` days: created as a
    draft, given one item per (description, amount_minor) line, finalized and sent. Each step's key is
    derived from ``idempotency_key``, so calling again with the same key gives the same invoice."""
    if not lines:
        raise ValueError("an invoice needs at least one line")
    api = client().v1
    with _translated("invoice create"):
        invoice = api.invoices.create(_without_none({
            "customer": customer, "collection_method": "send_invoice", "days_until_due": int(days_until_due),
            "currency": currency.lower(), "metadata": metadata, "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
        }), _options(f"{idempotency_key}:invoice"))
        for number, (description, amount_minor) in enumerate(lines):
            api.invoice_items.create({
                "customer": customer, "invoice": invoice.id, "amount": int(amount_minor),
                "currency": currency.lower(), "description": description,
            }, _options(f"{idempotency_key}:line:{number}"))
        api.invoices.finalize_invoice(invoice.id, {"auto_advance": False}, _options(f"{idempotency_key}:finalize"))
        return api.invoices.send_invoice(invoice.id, None, _options(f"{idempotency_key}:send"))


def pay_invoice_out_of_band(*, invoice_id: str, idempotency_key: str) -> stripe.Invoice:
    """Mark an open invoice paid (the money arrived outside Stripe, e.g. by bank transfer)."""
    with _translated("invoice pay"):
        return client().v1.invoices.pay(invoice_id, {"paid_out_of_band": True}, _options(idempotency_key))


def void_invoice(*, invoice_id: str, idempotency_key: str) -> stripe.Invoice:
    with _translated("invoice void"):
        return client().v1.invoices.void_invoice(invoice_id, None, _options(idempotency_key))


# --------------------------------------------------------------------------- webhooks


def verify_webhook(payload: bytes, signature_header: str) -> dict[str, Any]:
    """The event Stripe signed (``Stripe-Signature``) with STRIPE_WEBHOOK_SECRET, as a dict;
    WebhookSignatureError if the signature, its age or the body is wrong."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise WebhookSignatureError("Stripe webhooks are not set up on this server.", code="webhooks_disabled")
    import stripe  # imported when used: about 30 MB (see _client)

    try:
        stripe.Webhook.construct_event(payload, signature_header or "", secret)
    except stripe.SignatureVerificationError:
        raise WebhookSignatureError("The webhook's signature does not match its body.") from None
    except ValueError:
        raise WebhookSignatureError("The webhook's body is not a Stripe event.") from None
    return json.loads(payload)
