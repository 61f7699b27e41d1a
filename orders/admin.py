from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from marketplace.admin import AuditedModelAdmin
from marketplace.exceptions import ApplicationError
from marketplace.services import client_ip
from orders.models import Contract, DuaTemplate, Order, OrderStatusChange
from orders.services import contract_decide, order_cancel


class DecisionActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason (required to reject or cancel)",
                             widget=forms.TextInput(attrs={"size": 60}))


@admin.register(Contract)
class ContractAdmin(AuditedModelAdmin):
    list_display = ["order", "buyer", "dataset", "total", "template_version", "status", "accepted_at", "decided_at"]
    list_filter = ["status"]
    readonly_fields = ["order", "template", "template_version", "text", "accepted_by", "accepted_at", "accepted_ip",
                       "status", "decided_by", "decided_at", "decision_reason"]
    action_form = DecisionActionForm
    actions = ["approve", "reject"]

    @admin.display(description="Buyer")
    def buyer(self, obj: Contract) -> str:
        return str(obj.order.buyer)

    @admin.display(description="Dataset")
    def dataset(self, obj: Contract) -> str:
        return str(obj.order.dataset)

    @admin.display(description="Total")
    def total(self, obj: Contract) -> str:
        return f"{obj.order.total} {obj.order.currency}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the accepted agreement is a record; an order is cancelled, never deleted

    @admin.action(description="Approve selected contracts (starts delivery)")
    def approve(self, request: HttpRequest, queryset: QuerySet[Contract]) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Reject selected contracts (type a reason first)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Contract]) -> None:
        self._decide(request, queryset, approve=False)

    def _decide(self, request: HttpRequest, queryset: QuerySet[Contract], *, approve: bool) -> None:
        reason = request.POST.get("reason", "")
        done = 0
        for contract in queryset:
            try:
                contract_decide(contract=contract, approve=approve, acting_user=request.user, reason=reason,
                                ip=client_ip(request))
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"Contract for order #{contract.order_id}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{'Approved' if approve else 'Rejected'} {done} contract(s).",
                              messages.SUCCESS)


class OrderStatusChangeInline(admin.TabularInline):
    model = OrderStatusChange
    extra = 0
    readonly_fields = ["old_status", "new_status", "acting_user", "reason", "created"]
    can_delete = False


@admin.register(Order)
class OrderAdmin(AuditedModelAdmin):
    list_display = ["pk", "buyer", "dataset", "study_count", "total", "currency", "payment_method", "status", "created"]
    list_filter = ["status", "payment_method"]
    readonly_fields = ["buyer", "dataset", "criteria", "study_count", "unit_price", "total", "currency",
                       "payment_method", "status"]
    exclude = ["studies"]
    inlines = [OrderStatusChangeInline]
    action_form = DecisionActionForm
    actions = ["cancel"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # orders are cancelled with a reason (below), never deleted

    @admin.action(description="Cancel selected orders not yet delivered (type a reason first)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        reason = request.POST.get("reason", "")
        done = 0
        for order in queryset:
            try:
                order_cancel(order=order, acting_user=request.user, reason=reason, ip=client_ip(request))
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"Order #{order.pk}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"Cancelled {done} order(s).", messages.SUCCESS)


@admin.register(DuaTemplate)
class DuaTemplateAdmin(AuditedModelAdmin):
    list_display = ["title", "version", "is_active", "created"]
