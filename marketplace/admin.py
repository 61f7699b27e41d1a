from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from marketplace.countries import COUNTRY_CHOICES
from marketplace.exceptions import ApplicationError
from marketplace.grants import ORGANIZATION_GROUP_PREFIX, organization_groups_resync
from marketplace.models import (
    ApiToken,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from marketplace.services import audit_record, client_ip, organization_approve, organization_verify_academic
from marketplace.tokens import api_token_revoke_by_staff
from marketplace.vetting import organization_buyer_reject, organization_buyer_verify, organization_provider_reject
from marketplace.webhooks import webhook_delivery_requeue, webhook_endpoint_deactivate_by_staff

admin.site.site_header = "Imaging data marketplace — administration"


class AuditedModelAdmin(admin.ModelAdmin):
    """Every admin deletion lands in the audit trail (tests/marketplace/test_audit_admin.py
    checks that every registered admin that may delete derives from this)."""

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # Called by the delete view and the "delete selected" action, before the deletion,
        # inside the same request: ids only, never the object's text.
        for obj in queryset:
            audit_record(actor=request.user, action="admin.delete", obj=obj, ip=client_ip(request),
                         detail={"model": obj._meta.label_lower})
        return super().log_deletions(request, queryset)


@admin.display(description="Who may do what (per-object grants)")
def object_grants(obj: Any) -> str:
    """A readonly admin field: the grants on one object, one holder per line."""
    from django.utils.html import format_html_join

    from marketplace.grants import who_may

    rows = who_may(obj) if obj.pk else {}
    if not rows:
        return "No one (no grants)"
    return format_html_join("", "<div>{}: {}</div>", ((holder, ", ".join(perms)) for holder, perms in rows.items()))


def each_row(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, action, done_label: str) -> None:
    """Run an action per row; each failure is reported with its reason, the rest go on."""
    done = 0
    for obj in queryset:
        try:
            action(obj)
            done += 1
        except ApplicationError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{done_label}: {done}.", messages.SUCCESS)


def _powers(user: User) -> dict[str, Any]:
    return {
        "is_active": user.is_active, "is_staff": user.is_staff, "is_superuser": user.is_superuser,
        # Organization groups follow memberships; they are not powers an admin hands out.
        "groups": sorted(user.groups.exclude(name__startswith=ORGANIZATION_GROUP_PREFIX).values_list("pk", flat=True)),
        "permissions": sorted(user.user_permissions.values_list("pk", flat=True)),
    }


@admin.register(User)
class MarketplaceUserAdmin(AuditedModelAdmin, UserAdmin):
    """Staff, superuser, active, group and permission changes are audited (who gave whom
    which powers), with the values before and after."""

    readonly_fields = ["terms_version", "terms_accepted_at"]
    fieldsets = [*UserAdmin.fieldsets, ("Terms of use", {"fields": ["terms_version", "terms_accepted_at"]})]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        before = _powers(User.objects.get(pk=obj.pk)) if change and obj.pk else None
        request._audit_powers_before = before  # read in save_related, after the m2m are saved
        super().save_model(request, obj, form, change)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "groups":
            kwargs["queryset"] = Group.objects.exclude(name__startswith=ORGANIZATION_GROUP_PREFIX)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        organization_groups_resync(form.instance)  # the form set the groups it shows, only those
        before = getattr(request, "_audit_powers_before", None)
        after = _powers(form.instance)
        if before is None:
            if after["is_staff"] or after["is_superuser"] or after["groups"] or after["permissions"]:
                audit_record(actor=request.user, action="user.powers_change", obj=form.instance,
                             ip=client_ip(request), detail={"before": None, "after": after})
            return
        if before != after:
            changed = [key for key in after if before[key] != after[key]]
            audit_record(actor=request.user, action="user.powers_change", obj=form.instance, ip=client_ip(request),
                         detail={"changed": changed, "before": before, "after": after})


admin.site.unregister(Group)


@admin.register(Group)
class AuditedGroupAdmin(AuditedModelAdmin, GroupAdmin):
    """A group's permissions are staff powers too."""

    def save_model(self, request: HttpRequest, obj: Group, form: Any, change: bool) -> None:
        request._audit_group_before = (sorted(Group.objects.get(pk=obj.pk).permissions.values_list("pk", flat=True))
                                       if change and obj.pk else [])
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        before = getattr(request, "_audit_group_before", [])
        after = sorted(form.instance.permissions.values_list("pk", flat=True))
        if before != after:
            audit_record(actor=request.user, action="group.permissions_change", obj=form.instance,
                         ip=client_ip(request), detail={"before": before, "after": after})


@admin.register(Invitation)
class InvitationAdmin(AuditedModelAdmin):
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


class OrganizationForm(forms.ModelForm):
    country = forms.ChoiceField(choices=[("", "—"), *COUNTRY_CHOICES], required=False)

    class Meta:
        model = Organization
        fields = "__all__"


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason (required to reject; the members are told)",
                             widget=forms.TextInput(attrs={"size": 60}))


class RejectReasonForm(forms.Form):
    reason = forms.CharField(label="Reason", max_length=2000, strip=True,
                             widget=forms.Textarea(attrs={"rows": 5, "cols": 70}),
                             help_text="Required. Shown as written to the members, in the app and by e-mail; "
                                       "say what to change.")


class RejectWithReasonMixin:
    """A page per row (``<id>/reject/``) asking the reason, for the work queue's "Reject…"
    links; ``reject_row`` calls the service, which audits and tells the members. A refusal
    (not in a rejectable state, no reason) is shown on the form."""

    reject_who = "the members"

    def reject_row(self, request: HttpRequest, obj: Any, reason: str) -> None:
        raise NotImplementedError

    def get_urls(self) -> list:
        from django.urls import path

        info = self.model._meta.app_label, self.model._meta.model_name
        return [path("<int:object_id>/reject/", self.admin_site.admin_view(self.reject_view),
                     name="{}_{}_reject".format(*info)), *super().get_urls()]

    def reject_view(self, request: HttpRequest, object_id: int) -> Any:
        from django.core.exceptions import PermissionDenied
        from django.shortcuts import get_object_or_404, redirect
        from django.template.response import TemplateResponse
        from django.urls import reverse
        from django.utils.http import url_has_allowed_host_and_scheme

        obj = get_object_or_404(self.model, pk=object_id)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        info = self.model._meta.app_label, self.model._meta.model_name
        change_url = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
        back = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            back = ""
        form = RejectReasonForm(request.POST or None)
        status = 200
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                self.reject_row(request, obj, reason)
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                status = 400
            else:
                self.message_user(request, f"Rejected {obj}. {self.reject_who.capitalize()} read: \u201c{reason}\u201d",
                                  messages.SUCCESS)
                return redirect(back or change_url)
        elif request.method == "POST":
            status = 400
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "object": obj, "form": form,
                   "title": f"Reject {obj}", "change_url": change_url, "next": back, "reject_who": self.reject_who}
        return TemplateResponse(request, "admin/reject_with_reason.html", context, status=status)


class StandingFilter(admin.SimpleListFilter):
    """Where an organization stands with the admins; the work queue links to the waiting ones."""

    title = "standing"
    parameter_name = "standing"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("provider_waiting", "Providers awaiting approval"), ("provider_approved", "Approved providers"),
                ("provider_rejected", "Providers not approved (rejected)"),
                ("buyer_waiting", "Buyers awaiting verification"), ("buyer_verified", "Verified buyers"),
                ("buyer_rejected", "Buyers not verified (rejected)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> QuerySet[Organization]:
        if not self.value():
            return queryset
        kind, _, standing = self.value().partition("_")
        queryset = queryset.filter(kind=kind)
        if standing == "waiting":
            return queryset.filter(approved_at__isnull=True, rejected_at__isnull=True).order_by("created", "pk")
        if standing == "rejected":
            return queryset.filter(approved_at__isnull=True, rejected_at__isnull=False)
        return queryset.filter(approved_at__isnull=False)


@admin.register(Organization)
class OrganizationAdmin(RejectWithReasonMixin, AuditedModelAdmin):
    """Providers are approved (they may publish); buyers are verified (they may check out).
    Both use approved_at, but the list says which it is; each kind is rejected with a
    reason its members are told."""

    form = OrganizationForm
    action_form = ReasonActionForm
    list_display = ["name", "kind", "sector", "country", "standing", "academic", "payouts", "created"]
    list_filter = [StandingFilter, "kind", "sector", ("academic_verified_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "contact_name", "contact_email"]
    readonly_fields = ["approved_at", "approved_by", "rejected_at", "rejection_reason", "academic_verified_at",
                       "stripe_account_id", "created"]
    inlines = [MembershipInline]
    actions = ["approve", "verify_buyer", "reject_buyer", "verify_academic", "open_stripe_account"]

    @admin.display(description="Approved / verified", ordering="approved_at")
    def standing(self, obj: Organization) -> str:
        if obj.is_provider:
            if obj.approved_at:
                return "Approved provider"
            return "Provider not approved (rejected)" if obj.rejected_at else "Provider awaiting approval"
        if obj.approved_at:
            return "Verified"
        return "Not verified (rejected)" if obj.rejected_at else "Awaiting verification"

    @admin.display(description="Academic", ordering="academic_verified_at")
    def academic(self, obj: Organization) -> str:
        # Only buyers get academic discounts: for a provider the question does not arise.
        if obj.is_provider:
            return "—"
        return "Verified academic" if obj.is_verified_academic else "Not verified as academic"

    def reject_row(self, request: HttpRequest, obj: Organization, reason: str) -> None:
        if obj.is_provider:
            organization_provider_reject(organization=obj, acting_user=request.user, reason=reason,
                                         ip=client_ip(request))
        else:
            organization_buyer_reject(organization=obj, acting_user=request.user, reason=reason,
                                      ip=client_ip(request))

    @admin.display(description="Payouts")
    def payouts(self, obj: Organization) -> str:
        if not obj.is_provider:
            return "—"
        return f"Stripe {obj.stripe_account_id}" if obj.stripe_account_id else "outside Stripe (payout CSV)"

    @admin.action(description="Verify buyer organization (its members may then check out)")
    def verify_buyer(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        each_row(self, request, queryset, lambda org: organization_buyer_verify(
            organization=org, acting_user=request.user, ip=client_ip(request)), "Verified buyer organizations")

    @admin.action(description="Reject with reason (providers and buyers; type the reason first, the members are told)")
    def reject_buyer(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda org: self.reject_row(request, org, reason),
                 f"Rejected organizations (reason: \u201c{reason.strip()}\u201d)")

    @admin.action(description="Verify selected buyer organizations as academic (academic discounts apply)")
    def verify_academic(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        done = 0
        for org in queryset:
            try:
                organization_verify_academic(organization=org, acting_user=request.user, ip=client_ip(request))
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{org}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"Verified {done} academic organization(s).", messages.SUCCESS)

    @admin.action(description="Open a Stripe Connect account for selected providers (their shares are sent there)")
    def open_stripe_account(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        # orders builds on marketplace: imported here, where the admin acts, not at module level.
        from orders.exceptions import PaymentGatewayError
        from orders.payouts import connected_account_create

        done = 0
        for org in queryset:
            if not org.is_provider:
                self.message_user(request, f"{org}: only providers receive payouts.", messages.ERROR)
                continue
            owner = org.memberships.filter(role="owner").select_related("user").first()
            try:
                connected_account_create(provider=org, acting_user=request.user,
                                         email=owner.user.email if owner else request.user.email)
                done += 1
            except PaymentGatewayError as exc:
                self.message_user(request, f"{org}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"Stripe accounts ready for {done} provider(s).", messages.SUCCESS)

    @admin.action(description="Approve selected provider organizations (they may then publish)")
    def approve(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        done = 0
        for org in queryset:
            if not org.is_provider:
                # A buyer is verified with its own action: audited as such, and its members told.
                self.message_user(request, f"{org}: a buyer organization; use \"Verify buyer organization\".",
                                  messages.ERROR)
                continue
            organization_approve(organization=org, acting_user=request.user, ip=client_ip(request))
            done += 1
        if done:
            self.message_user(request, f"Approved {done} organization(s).", messages.SUCCESS)


class ReadOnlyAdmin(AuditedModelAdmin):
    """Rows made and changed by their owners through services; the admin looks and acts
    (audited actions) but neither adds, edits nor deletes."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        now = timezone.now()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires__lte=now)
        if self.value() == "active":
            return queryset.filter(Q(expires__isnull=True) | Q(expires__gt=now), revoked_at__isnull=True)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Personal access tokens, seen by their prefix: the hash is never shown (a token is
    made by its owner, who alone sees the secret, once). Staff may revoke; revoked rows
    stay so their caller is told why."""

    list_display = ["prefix", "name", "user", "scopes", "created", "expires", "last_used", "revoked_at", "state"]
    list_filter = [TokenStateFilter, "created", ("expires", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "user__email", "name", "prefix"]
    list_select_related = ["user"]
    fields = ["user", "name", "prefix", "scopes", "created", "expires", "last_used", "revoked_at", "state"]
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(description="State")
    def state(self, obj: ApiToken) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "expired" if obj.is_expired() else "active"

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_apitoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        each_row(self, request, queryset, lambda token: api_token_revoke_by_staff(
            token=token, acting_user=request.user, ip=client_ip(request)), "Revoked tokens")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    """Organizations' webhooks. The signing secret is only said to exist: its owners see it
    on their organization's page. Staff may deactivate an endpoint."""

    list_display = ["id", "organization", "url", "events", "active", "has_secret", "created", "deactivated_at"]
    list_filter = ["active", "created"]
    search_fields = ["organization__name", "url"]
    list_select_related = ["organization"]
    fields = ["organization", "url", "events", "active", "has_secret", "created_by", "created", "deactivated_at"]
    readonly_fields = fields
    actions = ["deactivate"]

    @admin.display(boolean=True, description="Signing secret set")
    def has_secret(self, obj: WebhookEndpoint) -> bool:
        return bool(obj.secret)

    def has_deactivate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_webhookendpoint")

    @admin.action(description="Deactivate selected webhooks (waiting events end as failed)",
                  permissions=["deactivate"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        each_row(self, request, queryset, lambda endpoint: webhook_endpoint_deactivate_by_staff(
            endpoint=endpoint, acting_user=request.user, ip=client_ip(request)), "Deactivated webhooks")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Sent and waiting webhook events. Staff may queue failed ones again once the receiver
    is fixed."""

    list_display = ["id", "event_type", "endpoint", "status", "attempt_count", "last_response_code", "last_error",
                    "next_attempt_at", "delivered_at", "created"]
    list_filter = ["status", "event_type", "created"]
    search_fields = ["endpoint__organization__name", "event_type"]
    list_select_related = ["endpoint"]
    fields = ["endpoint", "event_type", "status", "attempt_count", "last_response_code", "last_error",
              "next_attempt_at", "delivered_at", "created"]
    readonly_fields = fields
    actions = ["requeue"]

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_webhookdelivery")

    @admin.action(description="Queue selected failed deliveries again", permissions=["requeue"])
    def requeue(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        each_row(self, request, queryset, lambda delivery: webhook_delivery_requeue(
            delivery=delivery, acting_user=request.user, ip=client_ip(request)), "Queued again")


EXPORT_FIELDS = ["id", "created", "actor_id", "actor_label", "action", "object_type", "object_id", "ip_address",
                 "detail", "prev_hash", "chain_hash"]


def _export_rows(queryset: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    for event in queryset.order_by("id").iterator(chunk_size=2000):
        row = {name: getattr(event, name) for name in EXPORT_FIELDS}
        row["created"] = event.created.isoformat(timespec="microseconds")
        yield row


def _csv_lines(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in _export_rows(queryset):
        row["detail"] = json.dumps(row["detail"], sort_keys=True)
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_chunks(queryset: QuerySet[AuditEvent]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(_export_rows(queryset)):
        yield ("," if i else "") + "\n" + json.dumps(row, sort_keys=True)
    yield "\n]\n"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the table refuses updates and deletes anyway (database trigger). Staff
    who may view audit events ("Can view audit event", or superusers) export the selected events, oldest
    first with their chain hashes, as CSV or JSON; each export is itself audited."""

    list_display = ["created", "actor_label", "action", "object_type", "object_id", "ip_address"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "action", "object_id"]
    date_hierarchy = "created"
    actions = ["export_csv", "export_json"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and request.user.has_perm(
            "marketplace.view_auditevent")

    @admin.action(description="Export selected events as CSV", permissions=["export"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        return self._export(request, queryset, "csv", _csv_lines(queryset), "text/csv")

    @admin.action(description="Export selected events as JSON", permissions=["export"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        return self._export(request, queryset, "json", _json_chunks(queryset), "application/json")

    def _export(self, request: HttpRequest, queryset: QuerySet[AuditEvent], kind: str, body: Iterator[str],
                content_type: str) -> StreamingHttpResponse:
        audit_record(actor=request.user, action="audit.export", ip=client_ip(request),
                     detail={"format": kind, "events": queryset.count()})
        response = StreamingHttpResponse(body, content_type=content_type)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{kind}"'
        return response




def audit_every_admin(site: admin.AdminSite = admin.site) -> None:
    """Admins registered by other packages (allauth's e-mail addresses, authenticators...)
    get the same deletion audit: each is re-registered as an audited subclass of itself.
    Called from MarketplaceConfig.ready, after the admin has imported every admin module."""
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, AuditedModelAdmin):
            continue
        audited = type(f"Audited{type(model_admin).__name__}", (AuditedModelAdmin, type(model_admin)), {})
        site.unregister(model)
        site.register(model, audited)
