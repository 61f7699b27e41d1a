from __future__ import annotations

from django.contrib import admin

from marketplace.admin import AuditedModelAdmin
from workspaces.models import Delivery


@admin.register(Delivery)
class DeliveryAdmin(AuditedModelAdmin):
    list_display = ["order", "user", "status", "done_files", "total_files", "total_bytes", "created", "finished"]
    list_filter = ["status"]
    readonly_fields = ["order", "user", "status", "total_files", "done_files", "total_bytes", "manifest_key", "error",
                       "finished"]
