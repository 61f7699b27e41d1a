"""Read-only ledger admin: accounts with their balances, transactions with their entries,
entries. Nothing is added, changed or deleted here (the database refuses it anyway); the
ledger is written by orders.ledger.services only."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from marketplace.admin import AuditedModelAdmin
from marketplace.services import audit_record, client_ip
from orders.ledger.currency import format_major
from orders.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from orders.ledger.services import payout_csv, payout_rows


class ReadOnlyAdmin(AuditedModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    """Staff who may view accounts download, for the selected accounts' providers that are
    not on Stripe Connect, what to pay them by hand (one CSV per currency); each download is
    audited."""

    list_display = ["kind", "provider", "currency", "balance_display", "created"]
    list_filter = ["kind", "currency", "provider"]
    search_fields = ["provider__name"]
    list_select_related = ["provider"]
    actions = ["export_payout_csv"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerAccount]:
        return super().get_queryset(request).annotate(balance_minor=Sum("entries__amount_minor"))

    @admin.display(description="Balance (debit +, credit −)", ordering="balance_minor")
    def balance_display(self, obj: LedgerAccount) -> str:
        return format_major(obj.balance_minor or 0, obj.currency)

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and request.user.has_perm("ledger.view_ledgeraccount")

    @admin.action(description="Download payout CSV (selected accounts' providers not on Stripe Connect)",
                  permissions=["export"])
    def export_payout_csv(self, request: HttpRequest, queryset: QuerySet[LedgerAccount]) -> HttpResponse:
        pairs = set(queryset.exclude(provider=None).values_list("currency", "provider_id"))
        rows = []
        for currency in sorted({currency for currency, _ in pairs}):
            rows += payout_rows(currency, providers=[pid for cur, pid in pairs if cur == currency])
        audit_record(actor=request.user, action="ledger.payout_export", ip=client_ip(request),
                     detail={"rows": len(rows), "references": [row.reference for row in rows]})
        response = HttpResponse(payout_csv(rows), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="payouts-{stamp}.csv"'
        return response


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    fields = ["account", "amount_minor", "currency"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerEntry]:
        return super().get_queryset(request).select_related("account__provider")


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["created", "kind", "reference", "order_id", "order_line_id", "currency", "memo"]
    list_filter = ["kind", "currency", ("entries__account__provider", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["reference", "memo", "=order_id"]
    date_hierarchy = "created"
    inlines = [LedgerEntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerTransaction]:
        return super().get_queryset(request).distinct()


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "kind", "account", "amount_minor", "currency"]
    list_filter = ["account__kind", "transaction__kind", "currency", "account__provider"]
    search_fields = ["transaction__reference"]
    list_select_related = ["transaction", "account__provider"]

    @admin.display(description="Transaction kind", ordering="transaction__kind")
    def kind(self, obj: LedgerEntry) -> Any:
        return obj.transaction.get_kind_display()
