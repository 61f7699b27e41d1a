from __future__ import annotations

from marketplace.exceptions import ApplicationError


class OrderError(ApplicationError):
    code = "order_error"


class AgreementNotAcceptedError(OrderError):
    code = "agreement_not_accepted"


class EmptyOrderError(OrderError):
    code = "empty_order"
