"""Delivery errors; their messages are safe to show to staff and users."""
from __future__ import annotations

from marketplace.exceptions import ApplicationError


class DeliveryError(ApplicationError):
    code = "delivery_error"


class DeliveryNotReadyError(DeliveryError):
    code = "delivery_not_ready"
    status = 409
