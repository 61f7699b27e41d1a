"""What localstripe does not serve, kept in memory: Connect accounts and their balances,
transfers and transfer reversals, send-invoice invoices and their items.

Plain state and validation: no aiohttp, no Django. config/stripe_local.py routes HTTP
requests here and sends the events collected in ``Standin.outbox``. Objects have Stripe's
shapes (config/stripe_shapes.json, copied from Stripe's API fixtures); a refused request
raises ``StripeApiError``, whose ``body()`` is Stripe's error object.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, Any] = json.loads(Path(__file__).with_name("stripe_shapes.json").read_text())
_ID_ALPHABET = string.ascii_letters + string.digits
# A country's currency for new accounts; others get usd.
_COUNTRY_CURRENCY = {"US": "usd", "GB": "gbp", "CH": "chf", "CA": "cad", "AU": "aud", "SE": "sek", "DK": "dkk",
                     "NO": "nok", "PL": "pln", "JP": "jpy"}
_EURO_COUNTRIES = {"AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU", "LV", "MT",
                   "NL", "PT", "SI", "SK"}


class StripeApiError(Exception):
    """A refused request: HTTP status and Stripe's error fields."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self) -> dict[str, Any]:
        error = copy.deepcopy(SHAPES["error"])
        error["error"].update(type=self.type, code=self.code, message=self.message, param=self.param)
        return error


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def shape(name: str, **values: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SHAPES[name])
    obj.update(values)
    return obj


def list_of(items: list[dict], url: str, limit: int = 10) -> dict[str, Any]:
    return shape("list", data=items[:limit], has_more=len(items) > limit, url=url)


def missing(kind: str, value: str, param: str | None = None) -> StripeApiError:
    return StripeApiError(404 if param is None else 400, f"No such {kind}: '{value}'", code="resource_missing",
                          param=param)


# --------------------------------------------------------------------------- parameters


def check_params(params: dict[str, Any], allowed: set[str], required: set[str] = frozenset()) -> None:
    for name in params:
        if name not in allowed:
            raise StripeApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    for name in sorted(required):
        if params.get(name) in (None, ""):
            raise StripeApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)


def integer(params: dict[str, Any], name: str, *, minimum: int | None = None) -> int:
    raw = params.get(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise StripeApiError(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name) from None
    if minimum is not None and value < minimum:
        raise StripeApiError(400, f"This value must be greater than or equal to {minimum}.",
                             code="parameter_invalid_integer", param=name)
    return value


def boolean(params: dict[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    raise StripeApiError(400, f"Invalid boolean: {raw}", code="parameter_invalid_boolean", param=name)


def currency(params: dict[str, Any], name: str = "currency") -> str:
    value = str(params.get(name) or "").lower()
    if len(value) != 3 or not value.isalpha():
        raise StripeApiError(400, f"Invalid currency: {value}. Stripe currencies are three-letter ISO codes.",
                             code="parameter_invalid_string", param=name)
    return value


def metadata(params: dict[str, Any]) -> dict[str, str]:
    value = params.get("metadata") or {}
    if not isinstance(value, dict):
        raise StripeApiError(400, "Invalid object", code="parameter_invalid_object", param="metadata")
    return {str(k): str(v) for k, v in value.items()}


# --------------------------------------------------------------------------- state


class Standin:
    """Connect accounts, transfers and send-invoice invoices, with the events they cause."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict] = {}
        self.balances: dict[str, dict[str, int]] = {}  # account -> currency -> available amount
        self.transfers: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.invoiceitems: dict[str, dict] = {}
        self.invoice_prefix = "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
        self.invoice_count = 0
        self.outbox: list[tuple[str, dict]] = []  # (event type, object) waiting to be sent

    def emit(self, event_type: str, obj: dict) -> None:
        self.outbox.append((event_type, copy.deepcopy(obj)))

    # ----------------------------------------------------------------------- accounts

    def create_account(self, params: dict[str, Any]) -> dict:
        check_params(params, {"type", "country", "email", "capabilities", "business_type", "business_profile",
                              "controller", "metadata", "default_currency"})
        kind = params.get("type") or ("standard" if not params.get("controller") else "custom")
        if kind not in ("standard", "express", "custom"):
            raise StripeApiError(400, f"Invalid type: must be one of standard, express or custom (got {kind}).",
                                 code="parameter_invalid_string", param="type")
        country = str(params.get("country") or "US").upper()
        if len(country) != 2 or not country.isalpha():
            raise StripeApiError(400, f"Invalid country: {country}", code="country_unsupported", param="country")
        requested = params.get("capabilities") or {"card_payments": {}, "transfers": {}}
        if not isinstance(requested, dict):
            raise StripeApiError(400, "Invalid object", code="parameter_invalid_object", param="capabilities")
        now = int(time.time())
        account_id = new_id("acct_")
        # Onboarding is not simulated: requested capabilities are active at once.
        account = shape(
            "account", id=account_id, created=now, type=kind, country=country, email=params.get("email"),
            business_type=params.get("business_type"), metadata=metadata(params),
            default_currency=(params.get("default_currency") or _COUNTRY_CURRENCY.get(country)
                              or ("eur" if country in _EURO_COUNTRIES else "usd")),
            capabilities={name: "active" for name in requested}, charges_enabled=True, payouts_enabled=True,
            details_submitted=True,
        )
        account["external_accounts"]["url"] = f"/v1/accounts/{account_id}/external_accounts"
        self.accounts[account_id] = account
        self.balances[account_id] = {}
        self.emit("account.updated", account)
        return account

    def account(self, account_id: str) -> dict:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise missing("account", account_id) from None

    def update_account(self, account_id: str, params: dict[str, Any]) -> dict:
        account = self.account(account_id)
        check_params(params, {"email", "metadata", "business_profile"})
        if "email" in params:
            account["email"] = params["email"]
        if "metadata" in params:
            account["metadata"].update(metadata(params))
        if isinstance(params.get("business_profile"), dict):
            account["business_profile"].update(params["business_profile"])
        self.emit("account.updated", account)
        return account

    def set_balance(self, account_id: str, available: int, currency_code: str | None = None) -> dict:
        account = self.account(account_id)
        self.balances[account_id][(currency_code or account["default_currency"]).lower()] = int(available)
        return self.balance(account_id)

    def balance(self, account_id: str) -> dict:
        self.account(account_id)
        amounts = self.balances[account_id] or {self.accounts[account_id]["default_currency"]: 0}
        return shape(
            "balance",
            available=[{"amount": amount, "currency": cur, "source_types": {"card": amount}}
                       for cur, amount in sorted(amounts.items())],
            pending=[{"amount": 0, "currency": cur, "source_types": {"card": 0}} for cur in sorted(amounts)],
            connect_reserved=[{"amount": 0, "currency": cur} for cur in sorted(amounts)],
        )

    # ----------------------------------------------------------------------- transfers

    def create_transfer(self, params: dict[str, Any], charge: dict | None = None) -> dict:
        """``charge``: the source_transaction as localstripe returned it (None if it has none)."""
        check_params(params, {"amount", "currency", "destination", "transfer_group", "source_transaction",
                              "metadata", "description"}, {"amount", "currency", "destination"})
        amount = integer(params, "amount", minimum=1)
        cur = currency(params)
        destination = params["destination"]
        if destination not in self.accounts:
            raise missing("destination", destination, "destination")
        source = params.get("source_transaction")
        if source:
            if charge is None:
                raise missing("charge", source, "source_transaction")
            if charge.get("status") != "succeeded" or not charge.get("captured", True):
                raise StripeApiError(400, f"The charge {source} has not succeeded, so nothing can be transferred "
                                          "from it.", code="charge_not_succeeded", param="source_transaction")
            if charge.get("currency") != cur:
                raise StripeApiError(400, f"The transfer currency ({cur}) must be the charge's currency "
                                          f"({charge.get('currency')}).", param="currency")
            already = sum(t["amount"] - t["amount_reversed"] for t in self.transfers.values()
                          if t["source_transaction"] == source)
            if already + amount > charge["amount"]:
                raise StripeApiError(
                    400, f"Transfers from charge {source} would total {already + amount}, more than the charge's "
                         f"{charge['amount']} ({already} already transferred).",
                    code="insufficient_funds", param="amount")
        transfer_id = new_id("tr_")
        transfer = shape(
            "transfer", id=transfer_id, amount=amount, currency=cur, created=int(time.time()),
            destination=destination, destination_payment=new_id("py_"), balance_transaction=new_id("txn_"),
            description=params.get("description"), metadata=metadata(params),
            transfer_group=params.get("transfer_group") or None, source_transaction=source or None,
        )
        transfer["reversals"]["url"] = f"/v1/transfers/{transfer_id}/reversals"
        self.transfers[transfer_id] = transfer
        balances = self.balances[destination]
        balances[cur] = balances.get(cur, 0) + amount
        self.emit("transfer.created", transfer)
        return transfer

    def transfer(self, transfer_id: str) -> dict:
        try:
            return self.transfers[transfer_id]
        except KeyError:
            raise missing("transfer", transfer_id) from None

    def list_transfers(self, query: dict[str, Any]) -> dict:
        check_params(query, {"transfer_group", "destination", "limit"})
        limit = integer(query, "limit", minimum=1) if "limit" in query else 10
        found = [t for t in sorted(self.transfers.values(), key=lambda t: t["created"], reverse=True)
                 if all(t[name] == query[name] for name in ("transfer_group", "destination") if name in query)]
        return list_of(found, "/v1/transfers", limit)

    def reverse_transfer(self, transfer_id: str, params: dict[str, Any]) -> dict:
        transfer = self.transfer(transfer_id)
        check_params(params, {"amount", "metadata", "description", "refund_application_fee"})
        left = transfer["amount"] - transfer["amount_reversed"]
        amount = integer(params, "amount", minimum=1) if "amount" in params else left
        if amount > left:
            raise StripeApiError(400, f"Transfer {transfer_id} has {left} left to reverse, less than {amount}.",
                                 code="balance_insufficient", param="amount")
        account_id, cur = transfer["destination"], transfer["currency"]
        available = self.balances[account_id].get(cur, 0)
        if amount > available:
            raise StripeApiError(400, f"The connected account {account_id} has {available} {cur} available, less "
                                      f"than the {amount} to reverse (it may have been paid out).",
                                 code="balance_insufficient", param="amount")
        reversal = shape("transfer_reversal", id=new_id("trr_"), amount=amount, currency=cur,
                         created=int(time.time()), transfer=transfer_id, metadata=metadata(params),
                         balance_transaction=new_id("txn_"))
        self.balances[account_id][cur] = available - amount
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer["reversals"]["data"].insert(0, reversal)
        transfer["reversals"]["has_more"] = False
        self.emit("transfer.reversed", transfer)
        return reversal

    # ----------------------------------------------------------------------- invoices

    def create_invoiceitem(self, params: dict[str, Any]) -> dict:
        """The caller has checked that params["customer"] exists."""
        check_params(params, {"customer", "amount", "currency", "description", "invoice", "metadata"},
                     {"customer", "amount"})
        amount = integer(params, "amount")
        invoice = None
        if params.get("invoice"):
            invoice = self.invoice(params["invoice"], param="invoice")
            if invoice["status"] != "draft":
                raise StripeApiError(400, f"Invoice {invoice['id']} is {invoice['status']}; items can only be "
                                          "added to a draft invoice.", code="invoice_not_editable", param="invoice")
            if invoice["customer"] != params["customer"]:
                raise StripeApiError(400, f"Invoice {invoice['id']} belongs to another customer.", param="invoice")
        cur = currency(params) if params.get("currency") or invoice is None else invoice["currency"]
        if invoice is not None and cur != invoice["currency"]:
            raise StripeApiError(400, f"The item's currency ({cur}) must be the invoice's ({invoice['currency']}).",
                                 param="currency")
        now = int(time.time())
        item = shape("invoiceitem", id=new_id("ii_"), amount=amount, currency=cur, customer=params["customer"],
                     date=now, description=params.get("description"), metadata=metadata(params),
                     period={"start": now, "end": now}, net_amount=amount, invoice=None)
        item["pricing"]["unit_amount_decimal"] = str(amount)
        self.invoiceitems[item["id"]] = item
        if invoice is not None:
            self._add_line(invoice, item)
        return item

    def invoiceitem(self, item_id: str) -> dict:
        try:
            return self.invoiceitems[item_id]
        except KeyError:
            raise missing("invoiceitem", item_id) from None

    def create_invoice(self, params: dict[str, Any], customer: dict) -> dict:
        """A send_invoice invoice for ``customer`` (as localstripe returned it)."""
        check_params(params, {"customer", "collection_method", "days_until_due", "due_date", "currency",
                              "description", "metadata", "auto_advance", "pending_invoice_items_behavior",
                              "footer"}, {"customer"})
        now = int(time.time())
        if params.get("due_date"):
            due_date = integer(params, "due_date", minimum=now)
        elif params.get("days_until_due") not in (None, ""):
            due_date = now + 86400 * integer(params, "days_until_due", minimum=0)
        else:
            raise StripeApiError(400, "Invoices with collection_method=send_invoice need days_until_due or "
                                      "due_date.", code="parameter_missing", param="days_until_due")
        behaviour = params.get("pending_invoice_items_behavior") or "exclude"
        if behaviour not in ("include", "exclude"):
            raise StripeApiError(400, f"Invalid pending_invoice_items_behavior: {behaviour}",
                                 param="pending_invoice_items_behavior")
        cur = currency(params) if params.get("currency") else "usd"
        invoice_id = new_id("in_")
        invoice = shape(
            "invoice", id=invoice_id, created=now, customer=customer["id"], customer_email=customer.get("email"),
            customer_name=customer.get("name"), collection_method="send_invoice", currency=cur,
            description=params.get("description"), footer=params.get("footer"), metadata=metadata(params),
            auto_advance=boolean(params, "auto_advance", False), due_date=due_date, period_start=now,
            period_end=now, status="draft", amount_due=0, amount_paid=0, amount_remaining=0, subtotal=0,
            subtotal_excluding_tax=0, total=0, total_excluding_tax=0, effective_at=None, next_payment_attempt=None,
            webhooks_delivered_at=None, hosted_invoice_url=None, invoice_pdf=None, number=None,
        )
        invoice["lines"]["url"] = f"/v1/invoices/{invoice_id}/lines"
        self.invoices[invoice_id] = invoice
        if behaviour == "include":
            for item in self.invoiceitems.values():
                if item["customer"] == customer["id"] and item["invoice"] is None and item["currency"] == cur:
                    self._add_line(invoice, item)
        return invoice

    def _add_line(self, invoice: dict, item: dict) -> None:
        item["invoice"] = invoice["id"]
        line = shape("line_item", id=new_id("il_"), amount=item["amount"], currency=item["currency"],
                     description=item["description"], invoice=invoice["id"], metadata=dict(item["metadata"]),
                     period=dict(item["period"]), subtotal=item["amount"])
        line["parent"]["invoice_item_details"]["invoice_item"] = item["id"]
        line["pricing"]["unit_amount_decimal"] = str(item["amount"])
        invoice["lines"]["data"].append(line)
        total = sum(existing["amount"] for existing in invoice["lines"]["data"])
        invoice.update(amount_due=total, amount_remaining=total, subtotal=total, subtotal_excluding_tax=total,
                       total=total, total_excluding_tax=total)

    def invoice(self, invoice_id: str, *, param: str | None = None) -> dict:
        try:
            return self.invoices[invoice_id]
        except KeyError:
            raise missing("invoice", invoice_id, param) from None

    def _require_status(self, invoice: dict, action: str, *statuses: str) -> None:
        if invoice["status"] not in statuses:
            raise StripeApiError(400, f"Invoice {invoice['id']} is {invoice['status']}; only a "
                                      f"{' or '.join(statuses)} invoice can be {action}.",
                                 code="invoice_unexpected_status")

    def finalize_invoice(self, invoice_id: str, params: dict[str, Any]) -> dict:
        invoice = self.invoice(invoice_id)
        check_params(params, {"auto_advance"})
        self._require_status(invoice, "finalized", "draft")
        now = int(time.time())
        self.invoice_count += 1
        invoice.update(status="open", number=f"{self.invoice_prefix}-{self.invoice_count:04d}", effective_at=now,
                       auto_advance=boolean(params, "auto_advance", invoice["auto_advance"]))
        invoice["status_transitions"]["finalized_at"] = now
        self.emit("invoice.finalized", invoice)
        if invoice["amount_due"] == 0:  # Stripe marks an invoice with nothing to pay paid on finalization
            self._mark_paid(invoice, now)
        return invoice

    def send_invoice(self, invoice_id: str, params: dict[str, Any]) -> dict:
        invoice = self.invoice(invoice_id)
        check_params(params, set())
        self._require_status(invoice, "sent", "open")
        invoice["webhooks_delivered_at"] = int(time.time())
        self.emit("invoice.sent", invoice)
        return invoice

    def pay_invoice(self, invoice_id: str, params: dict[str, Any]) -> dict:
        invoice = self.invoice(invoice_id)
        check_params(params, {"paid_out_of_band"})
        self._require_status(invoice, "paid", "open")
        if not boolean(params, "paid_out_of_band", False):
            raise StripeApiError(400, "This local Stripe pays send-invoice invoices only out of band: pass "
                                      "paid_out_of_band=true.", param="paid_out_of_band")
        self._mark_paid(invoice, int(time.time()))
        return invoice

    def _mark_paid(self, invoice: dict, now: int) -> None:
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
        invoice["status_transitions"]["paid_at"] = now
        self.emit("invoice.paid", invoice)

    def void_invoice(self, invoice_id: str, params: dict[str, Any]) -> dict:
        invoice = self.invoice(invoice_id)
        check_params(params, set())
        self._require_status(invoice, "voided", "open")
        invoice.update(status="void", amount_remaining=0)
        invoice["status_transitions"]["voided_at"] = int(time.time())
        self.emit("invoice.voided", invoice)
        return invoice
