from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from marketplace.models import AuditEvent, Invitation, Membership, Organization, User
from marketplace.services import client_ip, organization_approve

admin.site.site_header = "Imaging data marketplace — administration"


@admin.register(User)
class MarketplaceUserAdmin(UserAdmin):
    readonly_fields = ["terms_version", "terms_accepted_at"]
    fieldsets = [*UserAdmin.fieldsets, ("Terms of use", {"fields": ["terms_version", "terms_accepted_at"]})]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Read-only: invitations are made by owners and answered by the invitee."""

    list_display = ["organization", "email", "role", "created", "accepted_at", "declined_at"]
    search_fields = ["organization__name", "email"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "country", "is_approved", "created"]
    list_filter = ["kind", ("approved_at", admin.EmptyFieldListFilter)]
    search_fields = ["name"]
    readonly_fields = ["approved_at", "approved_by", "created"]
    inlines = [MembershipInline]
    actions = ["approve"]

    @admin.display(boolean=True, description="Approved")
    def is_approved(self, obj: Organization) -> bool:
        return obj.is_approved

    @admin.action(description="Approve selected organizations (providers may then publish)")
    def approve(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for org in queryset:
            organization_approve(organization=org, acting_user=request.user, ip=client_ip(request))
        self.message_user(request, f"Approved {queryset.count()} organization(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the table refuses updates and deletes anyway (database trigger)."""

    list_display = ["created", "actor_label", "action", "object_type", "object_id", "ip_address"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "action", "object_id"]
    date_hierarchy = "created"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
