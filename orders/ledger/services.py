"""Posting to the ledger and reading balances.

Every posting names a ``reference``, its idempotency key: posting the same reference again
returns the transaction already posted and changes nothing (a different posting under a
used reference raises LedgerConflict). Postings never read balances: each writes fixed
amounts, so balances are sums and the final state does not depend on the order in which
postings arrive. Deciding how much may be transferred (``transferable_amount``) is the
caller's step before it posts a transfer.

Sign convention: debit positive, credit negative. ``provider_balances`` and
``platform_summary`` turn credit balances (payables, revenue) into positive amounts.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from marketplace.models import Organization
from orders.ledger.currency import format_major, normalize_currency
from orders.ledger.models import PER_PROVIDER_KINDS, PLATFORM_ONLY_KINDS, LedgerAccount, LedgerEntry, LedgerTransaction

Kind = LedgerAccount.Kind
TxnKind = LedgerTransaction.Kind
ProviderRef = Organization | int | None


class LedgerError(ValueError):
    """A posting that cannot be written (bad amounts, unbalanced, unknown provider)."""


class LedgerConflict(LedgerError):
    """The reference was already posted with other content."""


# ---- arithmetic ----------------------------------------------------------------------------
def _int(value: Any, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerError(f"{name} must be an integer (minor units), not {value!r}")
    if minimum is not None and value < minimum:
        raise LedgerError(f"{name} must be at least {minimum}, not {value}")
    return value


def split_largest_remainder(total_minor: int, weights: list[int]) -> list[int]:
    """Split ``total_minor`` in parts proportional to ``weights`` that sum exactly to it.

    Largest remainder (Hamilton): each part is the floor of its exact share, and the minor
    units left over go one each to the largest remainders, ties to the earlier weight. All
    weights zero: an equal split. Each part is within 1 of its exact share.
    """
    _int(total_minor, "total_minor", minimum=0)
    if not isinstance(weights, (list, tuple)) or not weights:
        raise LedgerError("weights must be a non-empty list of integers")
    weights = [_int(w, "weight", minimum=0) for w in weights]
    if not any(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    parts = [total_minor * w // whole for w in weights]
    remainders = [total_minor * w % whole for w in weights]
    left = total_minor - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    return parts


def fee_bps_for(provider: Organization) -> int:
    """The provider's platform fee in basis points, or the marketplace default."""
    bps = provider.platform_fee_bps
    return settings.PLATFORM_FEE_BPS if bps is None else bps


def fee_minor(gross_minor: int, bps: int) -> int:
    """``gross_minor`` × ``bps`` / 10,000, rounded half up to a whole minor unit."""
    _int(gross_minor, "gross_minor", minimum=0)
    _int(bps, "bps", minimum=0)
    if bps > 10_000:
        raise LedgerError(f"a fee of {bps} basis points is more than the whole amount")
    return (gross_minor * bps + 5_000) // 10_000


@dataclass(frozen=True)
class ProviderShare:
    provider_id: int
    order_line_id: int | None
    gross_minor: int
    fee_minor: int

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.fee_minor


def shares_for(total_minor: int, lines: Sequence[tuple[Organization, int | None, int]]) -> list[ProviderShare]:
    """Each line's share of the charged total and the platform's fee on it.

    ``lines`` are (provider, order_line_id, line_amount_minor). When the total differs from
    the lines' sum (an order-level discount or rounding), the total is split over the lines
    by largest remainder, weighted by their amounts.
    """
    _int(total_minor, "total_minor", minimum=0)
    if not lines:
        raise LedgerError("a charge needs at least one line")
    amounts = [_int(amount, "line_amount_minor", minimum=0) for _, _, amount in lines]
    grosses = amounts if sum(amounts) == total_minor else split_largest_remainder(total_minor, amounts)
    return [ProviderShare(provider_id=provider.pk, order_line_id=line_id, gross_minor=gross,
                          fee_minor=fee_minor(gross, fee_bps_for(provider)))
            for (provider, line_id, _), gross in zip(lines, grosses)]


# ---- accounts ------------------------------------------------------------------------------
def _provider_id(provider: ProviderRef) -> int | None:
    if provider is None:
        return None
    if isinstance(provider, Organization):
        return provider.pk
    return _int(provider, "provider id", minimum=1)


def account_for(kind: str, currency: str, provider: ProviderRef = None) -> LedgerAccount:
    """The account of this kind, currency and provider, created on first use."""
    kind = Kind(kind)
    provider_id = _provider_id(provider)
    if kind in PER_PROVIDER_KINDS and provider_id is None:
        raise LedgerError(f"a {kind} account belongs to a provider")
    if kind in PLATFORM_ONLY_KINDS and provider_id is not None:
        raise LedgerError(f"a {kind} account is the platform's, not a provider's")
    account, _ = LedgerAccount.objects.get_or_create(kind=kind, provider_id=provider_id,
                                                     currency=normalize_currency(currency))
    return account


# ---- posting -------------------------------------------------------------------------------
Leg = tuple[str, int | None, int]  # (account kind, provider id, signed amount)


def _planned(legs: Iterable[Leg]) -> dict[tuple[str, int | None], int]:
    """Amounts per account, zero sums dropped (the database refuses an entry of 0)."""
    totals: dict[tuple[str, int | None], int] = defaultdict(int)
    for kind, provider_id, amount in legs:
        totals[(str(Kind(kind)), provider_id)] += amount
    return {key: amount for key, amount in totals.items() if amount}


def _posted(txn: LedgerTransaction) -> dict[tuple[str, int | None], int]:
    return _planned((e.account.kind, e.account.provider_id, e.amount_minor)
                    for e in txn.entries.select_related("account"))


def _same_or_conflict(txn: LedgerTransaction, kind: str, currency: str, order_id: int | None,
                      planned: dict[tuple[str, int | None], int]) -> LedgerTransaction:
    if (txn.kind, txn.currency, txn.order_id) != (kind, currency, order_id) or _posted(txn) != planned:
        raise LedgerConflict(f"the reference {txn.reference!r} was posted with other content")
    return txn


def _post(*, reference: str, kind: str, currency: str, legs: Iterable[Leg], order_id: int | None = None,
          order_line_id: int | None = None, memo: str = "") -> LedgerTransaction:
    if not isinstance(reference, str) or not reference.strip() or len(reference) > 200:
        raise LedgerError("a posting needs a reference (its idempotency key) of at most 200 characters")
    currency = normalize_currency(currency)
    kind = str(TxnKind(kind))
    if order_id is not None:
        _int(order_id, "order_id", minimum=1)
    planned = _planned(legs)
    if len(planned) < 2:
        raise LedgerError(f"{reference}: nothing to post (every amount is zero)")
    if sum(planned.values()) != 0:
        raise LedgerError(f"{reference}: debits and credits differ by {sum(planned.values())}")
    existing = LedgerTransaction.objects.filter(reference=reference).first()
    if existing is not None:
        return _same_or_conflict(existing, kind, currency, order_id, planned)
    try:
        with transaction.atomic():
            txn = LedgerTransaction.objects.create(kind=kind, reference=reference, order_id=order_id,
                                                   order_line_id=order_line_id, currency=currency, memo=memo[:500],
                                                   created=timezone.now())
            LedgerEntry.objects.bulk_create([
                LedgerEntry(transaction=txn, account=account_for(account_kind, currency, provider_id),
                            amount_minor=amount, currency=currency)
                for (account_kind, provider_id), amount in sorted(planned.items(), key=_leg_order)])
    except IntegrityError:
        # Posted meanwhile by a concurrent caller (the unique reference): theirs stands.
        existing = LedgerTransaction.objects.filter(reference=reference).first()
        if existing is None:
            raise
        return _same_or_conflict(existing, kind, currency, order_id, planned)
    return txn


def _leg_order(item: tuple[tuple[str, int | None], int]) -> tuple[int, str, int]:
    (kind, provider_id), amount = item
    return (0 if amount > 0 else 1, kind, provider_id or 0)  # debits first


def _positive(amount: int, name: str = "amount_minor") -> int:
    return _int(amount, name, minimum=1)


def _sale_legs(debit_kind: str, total_minor: int, shares: Sequence[ProviderShare]) -> list[Leg]:
    _positive(total_minor, "total_minor")
    if not shares:
        raise LedgerError("a sale needs at least one provider share")
    for share in shares:
        _int(share.gross_minor, "gross_minor", minimum=0)
        _int(share.fee_minor, "fee_minor", minimum=0)
        if share.fee_minor > share.gross_minor:
            raise LedgerError("a fee larger than the share it is taken from")
    if sum(share.gross_minor for share in shares) != total_minor:
        raise LedgerError(f"the shares add up to {sum(s.gross_minor for s in shares)}, not the total {total_minor}")
    legs: list[Leg] = [(debit_kind, None, total_minor)]
    for share in shares:
        legs.append((Kind.PROVIDER_PAYABLE, share.provider_id, -share.net_minor))
        legs.append((Kind.PLATFORM_REVENUE, share.provider_id, -share.fee_minor))
    return legs


def _single_line(shares: Sequence[Any]) -> int | None:
    lines = {share.order_line_id for share in shares}
    return lines.pop() if len(lines) == 1 else None


def post_charge(reference: str, order_id: int | None, currency: str, total_minor: int,
                shares: Sequence[ProviderShare]) -> LedgerTransaction:
    """A card payment: Dr cash total; Cr each provider's payable its net and platform revenue
    the fee."""
    return _post(reference=reference, kind=TxnKind.CHARGE, currency=currency, order_id=order_id,
                 order_line_id=_single_line(shares), legs=_sale_legs(Kind.CASH, total_minor, shares))


def post_invoice_issued(reference: str, order_id: int | None, currency: str, total_minor: int,
                        shares: Sequence[ProviderShare]) -> LedgerTransaction:
    """An invoice: like a charge, but the buyer owes the total (Dr buyer receivable)."""
    return _post(reference=reference, kind=TxnKind.INVOICE_ISSUED, currency=currency, order_id=order_id,
                 order_line_id=_single_line(shares), legs=_sale_legs(Kind.BUYER_RECEIVABLE, total_minor, shares))


def post_invoice_paid(reference: str, order_id: int | None, currency: str, amount_minor: int) -> LedgerTransaction:
    """An invoice paid: Dr cash, Cr buyer receivable."""
    amount = _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.INVOICE_PAID, currency=currency, order_id=order_id,
                 legs=[(Kind.CASH, None, amount), (Kind.BUYER_RECEIVABLE, None, -amount)])


def post_stripe_fee(reference: str, order_id: int | None, currency: str, amount_minor: int) -> LedgerTransaction:
    """A processing fee Stripe kept: Dr Stripe fees, Cr cash."""
    amount = _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.STRIPE_FEE, currency=currency, order_id=order_id,
                 legs=[(Kind.STRIPE_FEES, None, amount), (Kind.CASH, None, -amount)])


def post_transfer(reference: str, order_id: int | None, provider: ProviderRef, currency: str,
                  amount_minor: int) -> LedgerTransaction:
    """Money sent to a provider: Dr provider payable, Cr cash. The amount is the caller's
    (see ``transferable_amount``); posting does not check it."""
    provider_id, amount = _required_provider(provider), _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.TRANSFER, currency=currency, order_id=order_id,
                 legs=[(Kind.PROVIDER_PAYABLE, provider_id, amount), (Kind.CASH, None, -amount)])


def post_receivable_netting(reference: str, provider: ProviderRef, currency: str,
                            amount_minor: int) -> LedgerTransaction:
    """What a provider owes the platform, settled from what the platform owes it:
    Dr provider payable, Cr provider receivable."""
    provider_id, amount = _required_provider(provider), _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.RECEIVABLE_NETTING, currency=currency,
                 legs=[(Kind.PROVIDER_PAYABLE, provider_id, amount), (Kind.PROVIDER_RECEIVABLE, provider_id, -amount)])


RefundPart = tuple[ProviderRef, int | None, int, int]  # (provider, order_line_id, net_minor, fee_minor)


@dataclass(frozen=True)
class _Part:
    provider_id: int
    order_line_id: int | None
    net_minor: int
    fee_minor: int


def post_refund(reference: str, order_id: int | None, currency: str, parts: Sequence[RefundPart],
                from_account: Literal["cash", "buyer_receivable"] = "cash") -> LedgerTransaction:
    """Money given back: each part's net comes back from the provider's payable (Dr) and its
    fee from platform revenue (Dr); Cr cash, or the buyer receivable when an unpaid invoice
    is voided."""
    if from_account not in (Kind.CASH, Kind.BUYER_RECEIVABLE):
        raise LedgerError("a refund is paid from cash or voids a buyer receivable")
    if not parts:
        raise LedgerError("a refund needs at least one part")
    checked = [_Part(_required_provider(provider), line_id, _int(net, "net_minor", minimum=0),
                     _int(fee, "fee_minor", minimum=0)) for provider, line_id, net, fee in parts]
    total = _positive(sum(p.net_minor + p.fee_minor for p in checked), "refund total")
    legs: list[Leg] = [(from_account, None, -total)]
    for part in checked:
        legs.append((Kind.PROVIDER_PAYABLE, part.provider_id, part.net_minor))
        legs.append((Kind.PLATFORM_REVENUE, part.provider_id, part.fee_minor))
    return _post(reference=reference, kind=TxnKind.REFUND, currency=currency, order_id=order_id,
                 order_line_id=_single_line(checked), legs=legs)


def post_transfer_reversal(reference: str, order_id: int | None, provider: ProviderRef, currency: str,
                           amount_minor: int) -> LedgerTransaction:
    """Money taken back from a provider's Stripe account: Dr cash, Cr provider payable."""
    provider_id, amount = _required_provider(provider), _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.TRANSFER_REVERSAL, currency=currency, order_id=order_id,
                 legs=[(Kind.CASH, None, amount), (Kind.PROVIDER_PAYABLE, provider_id, -amount)])


def post_reversal_shortfall(reference: str, order_id: int | None, provider: ProviderRef, currency: str,
                            amount_minor: int) -> LedgerTransaction:
    """The part of a reversal the provider's balance could not cover becomes a receivable,
    netted from its later sales: Dr provider receivable, Cr provider payable."""
    provider_id, amount = _required_provider(provider), _positive(amount_minor)
    return _post(reference=reference, kind=TxnKind.REVERSAL_SHORTFALL, currency=currency, order_id=order_id,
                 legs=[(Kind.PROVIDER_RECEIVABLE, provider_id, amount), (Kind.PROVIDER_PAYABLE, provider_id, -amount)])


def _required_provider(provider: ProviderRef) -> int:
    provider_id = _provider_id(provider)
    if provider_id is None:
        raise LedgerError("this posting belongs to a provider")
    return provider_id


# ---- reading -------------------------------------------------------------------------------
def balance(account: LedgerAccount) -> int:
    """The account's balance in minor units: debits minus credits."""
    return LedgerEntry.objects.filter(account=account).aggregate(total=Sum("amount_minor"))["total"] or 0


def _sum(queryset: Any) -> int:
    return queryset.aggregate(total=Sum("amount_minor"))["total"] or 0


def _provider_entries(provider: ProviderRef, currency: str) -> Any:
    return LedgerEntry.objects.filter(account__provider_id=_required_provider(provider),
                                      currency=normalize_currency(currency))


_SALES = Q(transaction__kind__in=[TxnKind.CHARGE, TxnKind.INVOICE_ISSUED, TxnKind.REFUND])
_TRANSFERS = Q(transaction__kind__in=[TxnKind.TRANSFER, TxnKind.TRANSFER_REVERSAL])
_PAYABLE = Q(account__kind=Kind.PROVIDER_PAYABLE)
_REVENUE = Q(account__kind=Kind.PLATFORM_REVENUE)


def provider_balances(provider: ProviderRef, currency: str) -> dict[str, int]:
    """A provider's position in one currency, minor units, all positive when as expected:

    earned_gross — its sales less refunds; fees — the platform's fees on them; net — the
    difference; transferred — transfers less reversals; payable — what the platform owes it;
    receivable — what it owes the platform. payable − receivable = net − transferred.
    """
    entries = _provider_entries(provider, currency)
    fees = -_sum(entries.filter(_SALES & _REVENUE))
    net = -_sum(entries.filter(_SALES & _PAYABLE))
    return {
        "payable": -_sum(entries.filter(_PAYABLE)),
        "receivable": _sum(entries.filter(account__kind=Kind.PROVIDER_RECEIVABLE)),
        "earned_gross": net + fees,
        "fees": fees,
        "net": net,
        "transferred": _sum(entries.filter(_TRANSFERS & _PAYABLE)),
    }


def transferable_amount(provider: ProviderRef, currency: str) -> int:
    """What may be sent to the provider now: its payable less what it owes, never negative."""
    position = provider_balances(provider, currency)
    return max(0, position["payable"] - position["receivable"])


def provider_monthly(provider: ProviderRef, currency: str) -> list[dict[str, Any]]:
    """Per calendar month (current time zone), oldest first: sales (gross less refunds),
    fees, net and transferred (less reversals), as in ``provider_balances``."""
    rows = (_provider_entries(provider, currency).filter((_SALES & (_PAYABLE | _REVENUE)) | (_TRANSFERS & _PAYABLE))
            .annotate(month=TruncMonth("transaction__created"))
            .values("month", "transaction__kind", "account__kind").annotate(total=Sum("amount_minor")))
    months: dict[Any, dict[str, Any]] = {}
    for row in rows:
        month = row["month"].date()
        item = months.setdefault(month, {"month": month, "sales": 0, "fees": 0, "net": 0, "transferred": 0})
        if row["transaction__kind"] in (TxnKind.TRANSFER, TxnKind.TRANSFER_REVERSAL):
            item["transferred"] += row["total"]
        elif row["account__kind"] == Kind.PLATFORM_REVENUE:
            item["fees"] -= row["total"]
        else:
            item["net"] -= row["total"]
    for item in months.values():
        item["sales"] = item["net"] + item["fees"]
    return [months[m] for m in sorted(months)]


def platform_summary(currency: str) -> dict[str, int]:
    """Every account kind's total in one currency, minor units, signed so that the usual
    balance is positive (payables and revenue are credits). ``check`` is the sum of every
    entry in that currency: always 0."""
    currency = normalize_currency(currency)
    totals = dict(LedgerEntry.objects.filter(currency=currency).values("account__kind")
                  .annotate(total=Sum("amount_minor")).values_list("account__kind", "total"))
    credit_kinds = (Kind.PROVIDER_PAYABLE, Kind.PLATFORM_REVENUE)
    summary = {str(kind): (-1 if kind in credit_kinds else 1) * (totals.get(kind) or 0) for kind in Kind}
    summary["check"] = sum(totals.values())
    return summary


# ---- payouts outside Stripe Connect --------------------------------------------------------
@dataclass(frozen=True)
class PayoutRow:
    provider_id: int
    provider_name: str
    currency: str
    amount_minor: int
    reference: str


PAYOUT_FIELDS = ["provider_id", "provider_name", "currency", "amount", "reference"]


def payout_rows(currency: str, providers: Iterable[int] | None = None) -> list[PayoutRow]:
    """Providers without a Stripe Connect account that may be paid in ``currency`` now.

    The reference names the provider, the currency and the newest ledger entry of its
    accounts: the same ledger state always gives the same reference and amount, so posting
    the payout (``post_transfer``) after paying it by hand is idempotent.
    """
    currency = normalize_currency(currency)
    ids = (LedgerAccount.objects.filter(kind=Kind.PROVIDER_PAYABLE, currency=currency)
           .values_list("provider_id", flat=True))
    orgs = Organization.objects.filter(pk__in=ids, stripe_account_id="")
    if providers is not None:
        orgs = orgs.filter(pk__in=list(providers))
    rows = []
    for org in orgs.order_by("pk"):
        amount = transferable_amount(org, currency)
        if amount > 0:
            last = _provider_entries(org, currency).order_by("-id").values_list("id", flat=True).first()
            rows.append(PayoutRow(org.pk, org.name, currency, amount, f"payout:{org.pk}:{currency}:{last}"))
    return rows


def _cell(text: str) -> str:
    # A spreadsheet runs a cell that starts with one of these as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def payout_csv(rows: Iterable[PayoutRow]) -> str:
    """The rows as CSV with a header; amounts in major units with the currency's decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(PAYOUT_FIELDS)
    for row in rows:
        writer.writerow([row.provider_id, _cell(row.provider_name), row.currency,
                         format_major(row.amount_minor, row.currency), row.reference])
    return buffer.getvalue()
