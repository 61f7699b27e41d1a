from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from marketplace.admin import AuditedModelAdmin, object_grants
from marketplace.exceptions import ApplicationError
from workspaces.models import Delivery, DeliveryStatusChange
from workspaces.services import delivery_fail, delivery_restart


class DeliveryActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason (required)", widget=forms.TextInput(attrs={"size": 60}))


class DeliveryStatusChangeInline(admin.TabularInline):
    model = DeliveryStatusChange
    extra = 0
    readonly_fields = ["old_status", "new_status", "acting_user", "reason", "created"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(AuditedModelAdmin):
    list_display = ["order", "user", "status", "done_files", "total_files", "total_bytes", "progressed", "restarts",
                    "created", "finished"]
    list_filter = ["status"]
    readonly_fields = ["order", "user", "status", "total_files", "done_files", "total_bytes", "manifest_key", "error",
                       "progressed", "run_number", "restarts", "finished", object_grants]
    inlines = [DeliveryStatusChangeInline]
    action_form = DeliveryActionForm
    actions = ["restart", "fail"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Restart selected deliveries (copied files are kept; type a reason first)")
    def restart(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._apply(request, queryset, delivery_restart, "Restarted")

    @admin.action(description="Fail selected deliveries (type a reason first)")
    def fail(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        self._apply(request, queryset, delivery_fail, "Failed")

    def _apply(self, request: HttpRequest, queryset: QuerySet[Delivery], service, verb: str) -> None:  # noqa: ANN001
        reason, done = request.POST.get("reason", ""), 0
        for delivery in queryset:
            try:
                service(delivery=delivery, acting_user=request.user, reason=reason)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"Delivery of order #{delivery.order_id}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} delivery(ies).", messages.SUCCESS)
