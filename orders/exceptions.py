from __future__ import annotations

from marketplace.exceptions import ApplicationError


class OrderError(ApplicationError):
    code = "order_error"


class AgreementNotAcceptedError(OrderError):
    code = "agreement_not_accepted"


class EmptyOrderError(OrderError):
    code = "empty_order"


class PaymentGatewayError(ApplicationError):
    """Stripe refused or could not be reached; the message is for the user, never Stripe's raw answer."""

    code = "payment_failed"
    status = 402


class WebhookSignatureError(ApplicationError):
    """A webhook whose Stripe-Signature does not match its body (or that is not Stripe's JSON)."""

    code = "webhook_signature"
    status = 400
