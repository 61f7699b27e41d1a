from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from marketplace.admin import AuditedModelAdmin, ReadOnlyAdmin, each_row
from marketplace.exceptions import ApplicationError
from marketplace.services import client_ip
from orders.agreements import dua_template_change, dua_template_create, dua_template_in_use
from orders.consent import consent_blocking_lines
from orders.currency import format_money
from orders.entitlements import entitlement_revoke
from orders.invoicing import invoice_settle, invoice_void
from orders.models import (
    Contract,
    DuaTemplate,
    Invoice,
    Negotiation,
    Offer,
    Order,
    OrderLine,
    OrderStatusChange,
    Payment,
    ProviderTransfer,
    Refund,
    Signature,
    StripeEvent,
)
from orders.payouts import providers_pay, transfer_mark_paid_outside
from orders.refunds import order_refund
from orders.services import contract_approve_signed, contract_decide, credit_approve, order_cancel
from orders.signatures import printed_name, record_sha256, signature_manifest, signing_needs_totp
from orders.webhooks import event_process
from orders.work_queue import work_queue


class DecisionActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason (required to reject, cancel, refund or revoke)",
                             widget=forms.TextInput(attrs={"size": 60}))


class ContractApprovalForm(forms.Form):
    password = forms.CharField(label="Your password", strip=False,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    totp_code = forms.CharField(label="Authenticator code", required=False, max_length=16,
                                widget=forms.TextInput(attrs={"autocomplete": "one-time-code",
                                                              "inputmode": "numeric"}))


@admin.register(Contract)
class ContractAdmin(AuditedModelAdmin):
    """Approval is an electronic signature: a form per contract (the "Approve and sign"
    button on its page) asks the admin's password and TOTP code in the same request.
    Rejection stays a bulk action with a reason and is not signed."""

    list_display = ["order", "buyer", "dataset", "total", "template_version", "status", "accepted_at", "decided_at"]
    list_filter = ["status"]
    readonly_fields = ["approval", "provider_consent", "intended_use", "order", "template", "template_version", "text",
                       "accepted_by", "accepted_at", "accepted_ip", "status", "decided_by", "decided_at",
                       "decision_reason", "signatures"]
    action_form = DecisionActionForm
    actions = ["reject"]

    @admin.display(description="Buyer")
    def buyer(self, obj: Contract) -> str:
        return str(obj.order.buyer)

    @admin.display(description="Datasets")
    def dataset(self, obj: Contract) -> str:
        return obj.order.title

    @admin.display(description="Total")
    def total(self, obj: Contract) -> str:
        return format_money(obj.order.total_minor, obj.order.currency)

    @admin.display(description="Provider consent")
    def provider_consent(self, obj: Contract) -> str:
        if obj.pk is None:
            return "—"
        return format_html_join(mark_safe("<br>"), "{} ({}): {}{}", (
            (line.dataset.title, line.provider.name, line.get_consent_status_display(),
             f" — {line.consent_reason}" if line.consent_reason else "")
            for line in obj.order.lines.select_related("dataset", "provider")))

    @admin.display(description="Intended use")
    def intended_use(self, obj: Contract) -> str:
        order = obj.order
        buyer_org = order.buyer_organization
        who = (f"{buyer_org.name} ({buyer_org.get_sector_display() or 'sector not given'}, "
               f"{buyer_org.country or 'country not given'})" if buyer_org else "no buyer organization")
        return format_html("{}<br><b>{}</b>: {}", who, order.get_use_category_display() or "—",
                           order.intended_use or "—")

    @admin.display(description="Approval")
    def approval(self, obj: Contract) -> str:
        if obj.pk is None or obj.status != Contract.Status.PENDING:
            return "—"
        if consent_blocking_lines(obj.order):
            return "Waiting for the providers' consent (see below): approval opens once every provider consented."
        url = reverse("admin:orders_contract_approve", args=[obj.pk])
        return format_html('<a class="button" id="contract-approve" href="{}">Approve and sign…</a>', url)

    @admin.display(description="Electronic signatures")
    def signatures(self, obj: Contract) -> str:
        rows = signature_manifest(obj) if obj.pk else []
        if not rows:
            return "—"
        return format_html_join(
            mark_safe("<br>"), "{} · {} · {} · SHA-256 {} · {}",
            ((row["signature"].printed_name, row["signature"].get_meaning_display(),
              row["signature"].signed_at.isoformat(timespec="seconds"), row["signature"].record_sha256,
              "matches the contract" if row["matches"] else "the contract changed since signing") for row in rows))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the accepted agreement is a record; an order is cancelled, never deleted

    def get_urls(self) -> list:
        return [path("<int:contract_id>/approve/", self.admin_site.admin_view(self.approve_view),
                     name="orders_contract_approve"), *super().get_urls()]

    def approve_view(self, request: HttpRequest, contract_id: int) -> HttpResponse:
        """Approve one contract: the admin signs it (meaning "approval") with their
        password and TOTP code typed here; the decision follows only a valid signature."""
        contract = get_object_or_404(Contract.objects.select_related("order", "order__buyer"), pk=contract_id)
        if not self.has_change_permission(request, contract):
            raise PermissionDenied
        change_url = reverse("admin:orders_contract_change", args=[contract.pk])
        form = ContractApprovalForm(request.POST or None)
        status = 200
        if request.method == "POST" and form.is_valid():
            try:
                contract_approve_signed(contract=contract, acting_user=request.user,
                                        password=form.cleaned_data["password"],
                                        totp_code=form.cleaned_data["totp_code"], ip=client_ip(request))
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                status = exc.status
            else:
                self.message_user(request, f"Approved and signed the contract for order #{contract.order_id}.",
                                  messages.SUCCESS)
                return redirect(change_url)
        elif request.method == "POST":
            status = 400
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "contract": contract, "form": form,
            "title": f"Approve the contract for order #{contract.order_id}", "change_url": change_url,
            "printed_name": printed_name(request.user), "meaning": Signature.Meaning.APPROVAL.label,
            "record_sha256": record_sha256(contract), "needs_totp": signing_needs_totp(request.user),
            "total": format_money(contract.order.total_minor, contract.order.currency),
            "lines": contract.order.lines.select_related("dataset", "provider"),
            "buyer_org": contract.order.buyer_organization,
            "consent_blocking": consent_blocking_lines(contract.order),
        }
        return TemplateResponse(request, "admin/orders/contract/approve.html", context, status=status)

    @admin.action(description="Reject selected contracts (type a reason first)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Contract]) -> None:
        reason = request.POST.get("reason", "")
        done = 0
        for contract in queryset:
            try:
                contract_decide(contract=contract, approve=False, acting_user=request.user, reason=reason,
                                ip=client_ip(request))
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"Contract for order #{contract.order_id}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"Rejected {done} contract(s).", messages.SUCCESS)


@admin.register(Signature)
class SignatureAdmin(ReadOnlyAdmin):
    """Read only: signatures are made by signing, and the database refuses changing or
    deleting them."""

    list_display = ["signed_at", "printed_name", "meaning", "record_type", "record_id", "short_sha256", "factors",
                    "ip"]
    list_filter = ["meaning", "record_type"]
    search_fields = ["printed_name", "record_id", "record_sha256"]
    readonly_fields = [f.name for f in Signature._meta.fields]

    @admin.display(description="SHA-256")
    def short_sha256(self, obj: Signature) -> str:
        return format_html('<code title="{}">{}…</code>', obj.record_sha256, obj.record_sha256[:12])


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class OrderStatusChangeInline(ReadOnlyInline):
    model = OrderStatusChange
    fields = readonly_fields = ["field", "old_status", "new_status", "acting_user", "reason", "created"]


class OrderLineInline(ReadOnlyInline):
    model = OrderLine
    fields = readonly_fields = ["dataset", "provider", "study_count", "pricing_model", "amount",
                                "refunded_minor", "licence_ends", "access_ended_at", "consent_status",
                                "consent_reason"]

    @admin.display(description="Amount")
    def amount(self, obj: OrderLine) -> str:
        return format_money(obj.amount_minor, obj.currency)


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = readonly_fields = ["amount_minor", "currency", "status", "stripe_payment_intent", "stripe_charge",
                                "error", "created"]


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = readonly_fields = ["line", "amount_minor", "currency", "reason", "acting_user", "stripe_refund",
                                "created"]


class TransferInline(ReadOnlyInline):
    model = ProviderTransfer
    fields = readonly_fields = ["provider", "amount_minor", "currency", "status", "stripe_transfer",
                                "reversed_minor", "error", "created"]


@admin.register(Order)
class OrderAdmin(AuditedModelAdmin):
    list_display = ["pk", "buyer", "buyer_organization", "title", "total", "payment_method", "status",
                    "payment_status", "fulfilment_status", "created"]
    list_filter = ["status", "payment_status", "fulfilment_status", "payment_method"]
    search_fields = ["pk", "buyer__username", "buyer__email", "buyer_organization__name", "po_number"]
    readonly_fields = ["buyer", "buyer_organization", "currency", "total_minor", "payment_method", "po_number",
                       "status", "payment_status", "fulfilment_status", "credit_approved_at", "credit_approved_by",
                       "flag_reason", "use_category", "intended_use"]
    inlines = [OrderLineInline, PaymentInline, RefundInline, TransferInline, OrderStatusChangeInline]
    action_form = DecisionActionForm
    actions = ["cancel", "approve_credit", "refund", "pay_providers"]

    @admin.display(description="Total")
    def total(self, obj: Order) -> str:
        return format_money(obj.total_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders come from checkout

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # orders are cancelled with a reason (below), never deleted

    @admin.action(description="Cancel selected orders not yet delivered (type a reason first; paid ones are refunded)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda o: order_cancel(order=o, acting_user=request.user, reason=reason,
                                                               ip=client_ip(request)), "Cancelled")

    @admin.action(description="Approve credit terms (invoiced orders are delivered before payment)")
    def approve_credit(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        each_row(self, request, queryset, lambda o: credit_approve(order=o, acting_user=request.user,
                                                                 ip=client_ip(request)), "Credit approved")

    @admin.action(description="Refund selected orders in full (type a reason first; access ends)")
    def refund(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda o: order_refund(order=o, line=None, reason=reason,
                                                               acting_user=request.user, ip=client_ip(request)),
              "Refunded")

    @admin.action(description="Send the providers' transfers now (paid orders)")
    def pay_providers(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        each_row(self, request, queryset, lambda o: providers_pay(order_id=o.pk), "Transfers sent or queued")


@admin.register(OrderLine)
class OrderLineAdmin(AuditedModelAdmin):
    list_display = ["__str__", "provider", "study_count", "pricing_model", "amount", "refunded_minor",
                    "licence_ends", "access_ended_at"]
    list_filter = ["pricing_model", "provider"]
    exclude = ["studies"]
    readonly_fields = [f.name for f in OrderLine._meta.fields]
    action_form = DecisionActionForm
    actions = ["refund_line", "revoke_access"]

    @admin.display(description="Amount")
    def amount(self, obj: OrderLine) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Refund selected lines (type a reason first; their access ends)")
    def refund_line(self, request: HttpRequest, queryset: QuerySet[OrderLine]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda line: order_refund(order=line.order, line=line, reason=reason,
                                                                  acting_user=request.user, ip=client_ip(request)),
              "Refunded lines")

    @admin.action(description="Revoke access (type a reason first)")
    def revoke_access(self, request: HttpRequest, queryset: QuerySet[OrderLine]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda line: entitlement_revoke(line, request.user, reason,
                                                                        ip=client_ip(request)),
              "Access revoked")


@admin.register(Invoice)
class InvoiceAdmin(AuditedModelAdmin):
    list_display = ["number", "order", "po_number", "issued", "due", "amount", "status", "settled_at"]
    list_filter = ["status"]
    search_fields = ["number", "po_number"]
    readonly_fields = [f.name for f in Invoice._meta.fields]
    action_form = DecisionActionForm
    actions = ["mark_paid", "void"]

    @admin.display(description="Amount")
    def amount(self, obj: Invoice) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Mark paid (type how it was paid, e.g. the bank reference)")
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda i: invoice_settle(invoice=i, acting_user=request.user, reason=reason,
                                                                 ip=client_ip(request)), "Marked paid")

    @admin.action(description="Void unpaid invoices (type a reason first; the order is cancelled)")
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda i: invoice_void(invoice=i, acting_user=request.user, reason=reason,
                                                               ip=client_ip(request)), "Voided")


@admin.register(ProviderTransfer)
class ProviderTransferAdmin(AuditedModelAdmin):
    list_display = ["order", "provider", "amount", "status", "stripe_transfer", "reversed_minor", "created"]
    list_filter = ["status", "provider"]
    readonly_fields = [f.name for f in ProviderTransfer._meta.fields]
    action_form = DecisionActionForm
    actions = ["mark_paid_outside", "retry"]

    @admin.display(description="Amount")
    def amount(self, obj: ProviderTransfer) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Mark paid outside Stripe (type the bank reference first)")
    def mark_paid_outside(self, request: HttpRequest, queryset: QuerySet[ProviderTransfer]) -> None:
        reason = request.POST.get("reason", "")
        each_row(self, request, queryset, lambda t: transfer_mark_paid_outside(
            transfer=t, acting_user=request.user, reason=reason, ip=client_ip(request)), "Marked paid")

    @admin.action(description="Send again through Stripe")
    def retry(self, request: HttpRequest, queryset: QuerySet[ProviderTransfer]) -> None:
        each_row(self, request, queryset, lambda t: providers_pay(order_id=t.order_id), "Retried")


@admin.register(StripeEvent)
class StripeEventAdmin(AuditedModelAdmin):
    list_display = ["event_id", "type", "status", "attempts", "received", "processed"]
    list_filter = ["status", "type"]
    search_fields = ["event_id"]
    readonly_fields = [f.name for f in StripeEvent._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Handle failed events again")
    def replay(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        done = 0
        for event in queryset.filter(status=StripeEvent.Status.FAILED):
            try:
                event_process(event)
                done += 1
            except Exception as exc:  # noqa: BLE001 - shown to the admin; kept on the row
                self.message_user(request, f"{event}: {type(exc).__name__}: {exc}", messages.ERROR)
        if done:
            self.message_user(request, f"Handled {done} event(s).", messages.SUCCESS)


class DuaTemplateForm(forms.ModelForm):
    class Meta:
        model = DuaTemplate
        fields = ["version", "title", "text", "is_active"]

    # As typed: a used version's text is compared with the stored one, so a save without a
    # change must not differ by a trailing newline or the browser's CRLF line ends.
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 24}), strip=False)

    def clean_text(self) -> str:
        return self.cleaned_data["text"].replace("\r\n", "\n")

    def _get_validation_exclusions(self) -> set[str]:
        # One active version: dua_template_activate deactivates the others before activating
        # this one, so the form does not refuse a second active row it is about to resolve.
        exclude = super()._get_validation_exclusions()
        exclude.add("is_active")
        return exclude

    def clean_is_active(self) -> bool:
        active = self.cleaned_data.get("is_active", False)
        if self.instance.pk and not active and DuaTemplate.objects.filter(pk=self.instance.pk, is_active=True).exists():
            raise forms.ValidationError("This is the active agreement: activate another version instead (ordering "
                                        "needs one active agreement).")
        return active


@admin.register(DuaTemplate)
class DuaTemplateAdmin(AuditedModelAdmin):
    """Saving a change to a version a contract uses makes the next version (the old text is
    kept, deactivated); an unused version is edited in place. Activating one deactivates
    the others (orders/agreements.py)."""

    list_display = ["title", "version", "is_active", "created"]
    form = DuaTemplateForm

    def get_readonly_fields(self, request: HttpRequest, obj: DuaTemplate | None = None) -> list[str]:
        # A used version's number is what its contracts record.
        return ["version"] if obj is not None and dua_template_in_use(obj) else []

    def has_delete_permission(self, request: HttpRequest, obj: DuaTemplate | None = None) -> bool:
        if obj is not None and (obj.is_active or dua_template_in_use(obj)):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: DuaTemplate, form: forms.ModelForm, change: bool) -> None:
        try:
            if change:
                saved = dua_template_change(template=obj, title=obj.title, text=obj.text, is_active=obj.is_active,
                                            version=form.cleaned_data.get("version"), acting_user=request.user,
                                            ip=client_ip(request))
            else:
                saved = dua_template_create(version=obj.version, title=obj.title, text=obj.text,
                                            is_active=obj.is_active, acting_user=request.user, ip=client_ip(request))
        except ApplicationError as exc:
            # Raised before anything is written (the services are atomic): the admin shows why.
            raise PermissionDenied(exc.message) from exc
        if change and saved.pk != obj.pk:
            self.message_user(request, f"Version {obj.version} is part of signed contracts and was kept; the change "
                                       f"is saved as version {saved.version}.", messages.WARNING)
        # The admin's own log and redirect follow the row that holds the change.
        for field in saved._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False


@admin.register(Payment)
class PaymentAdmin(AuditedModelAdmin):
    list_display = ["order", "amount", "status", "stripe_payment_intent", "stripe_charge", "created"]
    list_filter = ["status"]
    search_fields = ["stripe_payment_intent", "stripe_charge", "order__pk"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    @admin.display(description="Amount")
    def amount(self, obj: Payment) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Refund)
class RefundAdmin(AuditedModelAdmin):
    list_display = ["order", "line", "amount", "reason", "acting_user", "stripe_refund", "created"]
    search_fields = ["stripe_refund", "order__pk", "reason"]
    readonly_fields = [f.name for f in Refund._meta.fields]

    @admin.display(description="Amount")
    def amount(self, obj: Refund) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # refunds are made from Orders or Order lines, with a reason

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class OfferInline(admin.TabularInline):
    model = Offer
    extra = 0
    fields = ["number", "side", "author", "price", "status", "expires_at", "decline_reason", "dua_version", "created"]
    readonly_fields = fields
    can_delete = False

    @admin.display(description="Price")
    def price(self, obj: Offer) -> str:
        return format_money(obj.price_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Negotiation)
class NegotiationAdmin(admin.ModelAdmin):
    """Read only: offers move through orders/offers.py, by the two organizations' members."""

    list_display = ["id", "dataset", "buyer_organization", "provider", "updated"]
    list_select_related = ["dataset", "buyer_organization", "provider"]
    readonly_fields = ["buyer_organization", "requester", "provider", "dataset", "criteria", "data_request",
                       "created", "updated"]
    inlines = [OfferInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _index_with_work_queue(index):  # noqa: ANN001, ANN202 - wraps AdminSite.index
    """The admin index lists what waits for the admin (orders/work_queue.py) above the models."""
    def view(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return index(request, extra_context={"work_queue": work_queue(request.user), **(extra_context or {})})
    return view


# The index view is looked up when the admin's URLs are built, after every admin module loaded.
admin.site.index = _index_with_work_queue(admin.site.index)
