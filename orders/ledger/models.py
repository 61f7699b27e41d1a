"""Accounts, transactions and their entries.

An entry's ``amount_minor`` is signed: a debit is positive, a credit negative. Asset
accounts (cash, receivables, Stripe fees paid) carry positive balances; what the platform
owes or earned (provider payables, platform revenue) carries negative ones.

The database refuses UPDATE and DELETE on all three tables, an entry of 0, and (at commit)
a transaction whose entries do not sum to zero or whose entries or accounts are in another
currency (migration 0002).
"""
from __future__ import annotations

from django.db import models
from django.utils import timezone

# Provider accounts name their provider; platform revenue names the provider whose sale
# earned the fee (or none, for adjustments); the other accounts are the platform's own.
PER_PROVIDER_KINDS = ("provider_payable", "provider_receivable")
PLATFORM_ONLY_KINDS = ("cash", "buyer_receivable", "stripe_fees")


class LedgerAccount(models.Model):
    class Kind(models.TextChoices):
        CASH = "cash", "Cash (the platform's Stripe balance)"
        BUYER_RECEIVABLE = "buyer_receivable", "Buyer receivable (invoiced, not yet paid)"
        PROVIDER_PAYABLE = "provider_payable", "Provider payable (owed to a provider)"
        PROVIDER_RECEIVABLE = "provider_receivable", "Provider receivable (a provider owes the platform)"
        PLATFORM_REVENUE = "platform_revenue", "Platform revenue (fees)"
        STRIPE_FEES = "stripe_fees", "Stripe fees (processing fees paid)"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    provider = models.ForeignKey("marketplace.Organization", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="ledger_accounts")
    currency = models.CharField(max_length=3)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["currency", "kind", "provider_id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "provider", "currency"], nulls_distinct=False,
                                    name="ledger_account_unique_kind_provider_currency"),
            models.CheckConstraint(condition=models.Q(currency__regex=r"^[A-Z]{3}$"),
                                   name="ledger_account_currency_iso"),
            models.CheckConstraint(
                condition=(models.Q(kind__in=PER_PROVIDER_KINDS, provider__isnull=False)
                           | models.Q(kind__in=PLATFORM_ONLY_KINDS, provider__isnull=True)
                           | models.Q(kind="platform_revenue")),
                name="ledger_account_provider_matches_kind"),
        ]

    def __str__(self) -> str:
        owner = f" · {self.provider}" if self.provider_id else ""
        return f"{self.get_kind_display().split(' (')[0]}{owner} ({self.currency})"


class LedgerTransaction(models.Model):
    class Kind(models.TextChoices):
        CHARGE = "charge", "Charge (card payment)"
        INVOICE_ISSUED = "invoice_issued", "Invoice issued"
        INVOICE_PAID = "invoice_paid", "Invoice paid"
        TRANSFER = "transfer", "Transfer to a provider"
        REFUND = "refund", "Refund"
        TRANSFER_REVERSAL = "transfer_reversal", "Transfer reversal"
        REVERSAL_SHORTFALL = "reversal_shortfall", "Reversal shortfall (provider owes the rest)"
        RECEIVABLE_NETTING = "receivable_netting", "Receivable netted against payable"
        STRIPE_FEE = "stripe_fee", "Stripe processing fee"
        ADJUSTMENT = "adjustment", "Adjustment"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    # The idempotency key: "charge:pi_123", "refund:re_9:line:4". Posting it again returns
    # this transaction.
    reference = models.CharField(max_length=200, unique=True)
    # Plain integers, not foreign keys: the ledger outlives and does not follow order rows.
    order_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    order_line_id = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3)
    memo = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(currency__regex=r"^[A-Z]{3}$"),
                                   name="ledger_transaction_currency_iso"),
            models.CheckConstraint(condition=~models.Q(reference=""), name="ledger_transaction_reference_set"),
        ]

    def __str__(self) -> str:
        return self.reference


class LedgerEntry(models.Model):
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    amount_minor = models.BigIntegerField(help_text="Minor units; debit positive, credit negative.")
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount_minor=0), name="ledger_entry_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.amount_minor:+d} {self.currency}"

    @property
    def debit_minor(self) -> int:
        return self.amount_minor if self.amount_minor > 0 else 0

    @property
    def credit_minor(self) -> int:
        return -self.amount_minor if self.amount_minor < 0 else 0
