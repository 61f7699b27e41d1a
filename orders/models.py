"""Carts, orders with one line per dataset, their contract, payments, invoices, refunds,
provider transfers and the Stripe events that move them. Money is integer minor units of
one ISO 4217 currency per order (orders/currency.py formats it)."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import Dataset, Study
from marketplace.models import Organization


class DuaTemplate(models.Model):
    """A standard data use agreement. Orders record the exact version accepted; a version
    a contract uses is never edited, a change becomes the next version
    (orders/agreements.py dua_template_change). One version is active at a time."""

    version = models.CharField(max_length=32, unique=True)
    title = models.CharField(max_length=200)
    text = models.TextField()
    is_active = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "data use agreement template"
        constraints = [models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True),
                                               name="one_active_dua_template")]

    def __str__(self) -> str:
        return f"{self.title} v{self.version}"


class Cart(models.Model):
    """One open cart per buyer; checking out turns its items into one order."""

    buyer = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cart")
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Cart of {self.buyer}"


class CartItem(models.Model):
    """A cohort's studies of one dataset, as the cohort builder counts them; priced again
    at checkout (the buyer confirms the total they saw)."""

    cart = models.ForeignKey(Cart, on_delete=models.CASCADE, related_name="items")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    criteria = models.JSONField(default=dict, blank=True)
    # Studies the buyer's organization already holds under a live licence are left out
    # unless the buyer includes them knowingly.
    include_held = models.BooleanField(default=False)
    # An accepted offer (orders/offers.py): the line is priced at the offer, not the plan.
    offer = models.ForeignKey("Offer", null=True, blank=True, on_delete=models.SET_NULL, related_name="cart_items")
    added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["added", "id"]
        constraints = [models.UniqueConstraint(fields=["cart", "dataset"], name="one_cart_item_per_dataset")]


class Order(models.Model):
    """What a buyer committed to. Its own status, its payment status and its fulfilment
    status move separately, each through its transition table (orders/transitions.py);
    the contract decision lives on Contract and the copy's progress on the Delivery."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    class PaymentStatus(models.TextChoices):
        NOT_REQUIRED = "not_required", "Free"
        UNPAID = "unpaid", "Awaiting payment"
        PROCESSING = "processing", "Payment processing"
        FAILED = "failed", "Payment failed"
        PAID = "paid", "Paid"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        REFUNDED = "refunded", "Refunded"
        FLAGGED = "flagged", "Held for review"
        VOID = "void", "Void"

    class FulfilmentStatus(models.TextChoices):
        UNFULFILLED = "unfulfilled", "Not started"
        FULFILLING = "fulfilling", "Delivering"
        FULFILLED = "fulfilled", "Delivered"
        STOPPED = "stopped", "Stopped"

    class PaymentMethod(models.TextChoices):
        FREE = "free", "Free"
        CARD = "card", "Card"
        INVOICE = "invoice", "Invoice"

    class DeliveryFormat(models.TextChoices):
        DICOM = "dicom", "DICOM"
        DICOM_NIFTI = "dicom+nifti", "DICOM and NIfTI"
        NIFTI = "nifti", "NIfTI only"

    class UseCategory(models.TextChoices):
        ACADEMIC_RESEARCH = "academic_research", "Academic research"
        AI_COMMERCIAL = "ai_commercial", "AI/ML model development (commercial)"
        CLINICAL_VALIDATION = "clinical_validation", "Clinical product validation"
        EDUCATION = "education", "Education and training"
        PUBLIC_HEALTH = "public_health", "Public health"

    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    buyer_organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT,
                                           related_name="orders")
    currency = models.CharField(max_length=3)
    total_minor = models.BigIntegerField(default=0)
    payment_method = models.CharField(max_length=16, choices=PaymentMethod.choices)
    po_number = models.CharField("purchase order number", max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    payment_status = models.CharField(max_length=24, choices=PaymentStatus.choices, db_index=True, default="unpaid")
    fulfilment_status = models.CharField(max_length=16, choices=FulfilmentStatus.choices,
                                         default=FulfilmentStatus.UNFULFILLED, db_index=True)
    # Invoiced orders are delivered on credit once an admin approved the terms.
    credit_approved_at = models.DateTimeField(null=True, blank=True)
    credit_approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="+")
    # Why a payment was held (an amount or currency that did not match the order).
    flag_reason = models.CharField(max_length=300, blank=True)
    # What the buyer said the data is for (checked at checkout: orders/intended_use.py);
    # shown to the providers asked to consent and to the admin approving the contract.
    intended_use = models.TextField(blank=True)
    use_category = models.CharField(max_length=24, choices=UseCategory.choices, blank=True)
    # What the delivery writes: the DICOM files, NIfTI converted per series
    # (workspaces/nifti.py), or both. Chosen at checkout.
    delivery_format = models.CharField(max_length=16, choices=DeliveryFormat.choices, default=DeliveryFormat.DICOM)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"Order #{self.pk}"

    @property
    def wants_dicom(self) -> bool:
        return self.delivery_format != self.DeliveryFormat.NIFTI

    @property
    def wants_nifti(self) -> bool:
        return self.delivery_format != self.DeliveryFormat.DICOM

    @property
    def transfer_group(self) -> str:
        return f"order_{self.pk}"

    @property
    def title(self) -> str:
        """The datasets in words: "Chest CT" or "Chest CT and 2 more datasets"."""
        titles = [line.dataset.title for line in self.lines.all()]
        if not titles:
            return ""
        more = len(titles) - 1
        return titles[0] if not more else f"{titles[0]} and {more} more dataset{'s' if more > 1 else ''}"

    @property
    def study_count(self) -> int:
        return sum(line.study_count for line in self.lines.all())


class OrderLine(models.Model):
    """One dataset of an order: its provider, its exact studies, its plan and the price
    and licence as they were when the order was placed (never recomputed)."""

    class ConsentStatus(models.TextChoices):
        NOT_REQUIRED = "not_required", "Not required"
        PENDING = "pending", "Awaiting the provider's consent"
        APPROVED = "approved", "Provider consented"
        DECLINED = "declined", "Provider declined"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="order_lines")
    provider = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sold_lines")
    criteria = models.JSONField(default=dict, blank=True)
    studies = models.ManyToManyField(Study, related_name="+", blank=True)
    study_count = models.PositiveIntegerField()
    image_count = models.PositiveIntegerField(default=0)
    # Studies left out because the buyer's organization already held them.
    held_excluded = models.PositiveIntegerField(default=0)
    pricing_model = models.CharField(max_length=16)
    price_snapshot = models.JSONField(default=dict)  # the breakdown line by line
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    licence_type = models.CharField(max_length=16, blank=True)
    licence_text = models.TextField(blank=True)
    # The dataset's licence terms when the order was placed (catalog.licence.LicenceTerms.to_dict).
    licence_terms = models.JSONField(default=dict, blank=True)
    # A line whose terms have a term in months ends that long after its access started; a
    # subscription ends after a year; perpetual licences never (None). Set at checkout for
    # subscriptions, and again when the order is released (orders/entitlements.py).
    licence_ends = models.DateTimeField(null=True, blank=True)
    refunded_minor = models.BigIntegerField(default=0)
    access_ended_at = models.DateTimeField(null=True, blank=True)
    access_end_reason = models.CharField(max_length=300, blank=True)
    # The negotiated offer this line was bought at; an offer serves one order only.
    offer = models.ForeignKey("Offer", null=True, blank=True, on_delete=models.PROTECT, related_name="order_lines")
    # The provider's consent to this order, when its dataset asks for it (orders/consent.py).
    consent_status = models.CharField(max_length=16, choices=ConsentStatus.choices,
                                      default=ConsentStatus.NOT_REQUIRED, db_index=True)
    consent_decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                           on_delete=models.SET_NULL, related_name="+")
    consent_decided_at = models.DateTimeField(null=True, blank=True)
    consent_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "dataset"], name="one_line_per_dataset"),
            models.UniqueConstraint(fields=["offer"], name="one_order_line_per_offer"),
            models.CheckConstraint(condition=models.Q(amount_minor__gte=0), name="line_amount_not_negative"),
            models.CheckConstraint(condition=models.Q(refunded_minor__gte=0)
                                   & models.Q(refunded_minor__lte=models.F("amount_minor")),
                                   name="line_refund_within_amount"),
        ]
        # The daily sweeps read the live subscription lines by their end.
        indexes = [models.Index(fields=["licence_ends"], name="line_live_licence_ends",
                                condition=models.Q(licence_ends__isnull=False, access_ended_at__isnull=True))]

    def __str__(self) -> str:
        return f"Order #{self.order_id} · {self.dataset}"

    @property
    def has_access(self) -> bool:
        return self.access_ended_at is None


class EntitlementReminder(models.Model):
    """A notice sent to the buyer before a line's licence term ends, once per line and
    number of days before the end."""

    line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="reminders")
    days_before = models.PositiveSmallIntegerField()
    sent = models.DateTimeField()

    class Meta:
        ordering = ["sent", "id"]
        constraints = [models.UniqueConstraint(fields=["line", "days_before"], name="one_reminder_per_line_and_day")]

    def __str__(self) -> str:
        return f"{self.line}: {self.days_before} days before the end"


class OrderStatusChange(models.Model):
    """History of every move of an order's status, payment status or fulfilment status."""

    class Field(models.TextChoices):
        STATUS = "status", "Order"
        PAYMENT = "payment_status", "Payment"
        FULFILMENT = "fulfilment_status", "Fulfilment"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
    field = models.CharField(max_length=24, choices=Field.choices, default=Field.STATUS)
    old_status = models.CharField(max_length=24)
    new_status = models.CharField(max_length=24)
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]


class Contract(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending admin review"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="contract")
    template = models.ForeignKey(DuaTemplate, on_delete=models.PROTECT, related_name="+")
    template_version = models.CharField(max_length=32)
    text = models.TextField()  # the text as accepted, even if the template changes later
    # SHA-256 (hex) of ``text`` as UTF-8: the dataset page shows the same hash before login.
    text_sha256 = models.CharField("SHA-256 of the text", max_length=64, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    accepted_at = models.DateTimeField()
    accepted_ip = models.GenericIPAddressField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Contract for order #{self.order_id} ({self.template_version})"


class Payment(models.Model):
    """One attempt to take the order's money by card (a Stripe PaymentIntent). The order
    counts as paid only when Stripe's signed webhook says this intent succeeded."""

    class Status(models.TextChoices):
        PROCESSING = "processing", "Processing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="payments")
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=100, unique=True)
    stripe_payment_intent = models.CharField(max_length=64, unique=True, null=True, blank=True)
    stripe_charge = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROCESSING)
    error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]


class Invoice(models.Model):
    """The platform's numbered invoice for an order paid on credit."""

    class Status(models.TextChoices):
        OPEN = "open", "Unpaid"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="invoice")
    number = models.CharField(max_length=32, unique=True)
    po_number = models.CharField(max_length=64, blank=True)
    issued = models.DateField()
    due = models.DateField()
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)
    stripe_invoice = models.CharField(max_length=64, blank=True)
    hosted_url = models.URLField(max_length=500, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    settled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    settle_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-issued", "-id"]

    def __str__(self) -> str:
        return self.number


class Refund(models.Model):
    """Money given back by an admin, with a reason: the whole order or one line."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    line = models.ForeignKey(OrderLine, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds")
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=300)
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    stripe_refund = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="refund_positive")]


class ProviderTransfer(models.Model):
    """A provider's net share of one order, sent to its Stripe Connect account (one per
    provider per order, tied to the charge and the order's transfer group) or paid
    outside Stripe (the admin's payout CSV)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Transferred"
        FAILED = "failed", "Failed"
        OUTSIDE_STRIPE = "outside", "Paid outside Stripe"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="transfers")
    provider = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="transfers")
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    stripe_transfer = models.CharField(max_length=64, blank=True)
    reversed_minor = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["order", "provider"], name="one_transfer_per_provider_order")]


class StripeEvent(models.Model):
    """Every webhook event Stripe sent, stored once (its id is unique) before it is
    handled; the handler's outcome is kept so a failure can be read and replayed."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        IGNORED = "ignored", "Ignored"

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    received = models.DateTimeField(auto_now_add=True)
    processed = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Stripe event"
        ordering = ["-received", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class Signature(models.Model):
    """An electronic signature: who signed (and the name printed with it), what it means,
    which record, the SHA-256 of that record as it was signed, when (server time) and
    from where. Made only after the signer typed their password (and their TOTP code when
    the account has one) in the same request (orders/signatures.py). The table is
    append-only in the database: UPDATE and DELETE are refused for every client."""

    class Meaning(models.TextChoices):
        AUTHORSHIP = "authorship", "Authorship"
        APPROVAL = "approval", "Approval"
        RESPONSIBILITY = "responsibility", "Responsibility"

    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signatures")
    printed_name = models.CharField(max_length=300)
    meaning = models.CharField(max_length=16, choices=Meaning.choices)
    record_type = models.CharField(max_length=100)
    record_id = models.CharField(max_length=64)
    record_sha256 = models.CharField("SHA-256 of the signed record", max_length=64)
    # What the signer proved in the request: "password" or "password+totp".
    factors = models.CharField(max_length=32)
    signed_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["signed_at", "id"]
        indexes = [models.Index(fields=["record_type", "record_id"], name="signature_record_idx")]

    def __str__(self) -> str:
        return f"{self.printed_name} · {self.get_meaning_display()} · {self.record_type} #{self.record_id}"


class Negotiation(models.Model):
    """A buyer organization (through one of its researchers) asking a provider for other
    terms on one dataset, optionally for a cohort of it, and the numbered offers that
    answer it (orders/offers.py moves them). Private to the members of the two
    organizations and to staff."""

    buyer_organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="negotiations")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="negotiations")
    provider = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="provider_negotiations")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="negotiations")
    criteria = models.JSONField(default=dict, blank=True)  # a cohort, as CartItem.criteria
    data_request = models.ForeignKey("catalog.DataRequest", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="negotiations")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated", "-id"]

    def __str__(self) -> str:
        return f"Negotiation #{self.pk} · {self.dataset}"


class Offer(models.Model):
    """One version of the terms in a negotiation: version 0 is the buyer's request, then
    each side's offers and counters. At most one version of a negotiation is open; a new
    version supersedes it (OFFER_TRANSITIONS in orders/offers.py)."""

    class Side(models.TextChoices):
        BUYER = "buyer", "Buyer"
        PROVIDER = "provider", "Provider"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SUPERSEDED = "superseded", "Superseded"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"
        WITHDRAWN = "withdrawn", "Withdrawn"
        EXPIRED = "expired", "Expired"

    negotiation = models.ForeignKey(Negotiation, on_delete=models.CASCADE, related_name="offers")
    number = models.PositiveIntegerField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=8, choices=Side.choices)
    price_minor = models.BigIntegerField()  # the whole line, in minor units of currency
    currency = models.CharField(max_length=3)
    terms = models.JSONField()  # catalog.licence.LicenceTerms.to_dict()
    # The agreement in force when the version was made; checkout signs the active one.
    dua_template = models.ForeignKey(DuaTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    dua_version = models.CharField(max_length=32, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    message = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decline_reason = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["negotiation", "number"]
        constraints = [
            models.UniqueConstraint(fields=["negotiation", "number"], name="one_offer_per_version"),
            models.UniqueConstraint(fields=["negotiation"], condition=models.Q(status="open"),
                                    name="one_open_offer_per_negotiation"),
            models.CheckConstraint(condition=models.Q(price_minor__gte=0), name="offer_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"Negotiation #{self.negotiation_id} v{self.number}"

    @property
    def is_request(self) -> bool:
        return self.number == 0


class OfferStatusChange(models.Model):
    """History of every move of an offer's status."""

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=12)
    new_status = models.CharField(max_length=12)
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
