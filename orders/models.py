from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import Dataset, Study


class DuaTemplate(models.Model):
    """A standard data use agreement. Orders record the exact version accepted."""

    version = models.CharField(max_length=32, unique=True)
    title = models.CharField(max_length=200)
    text = models.TextField()
    is_active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "data use agreement template"

    def __str__(self) -> str:
        return f"{self.title} v{self.version}"


class Order(models.Model):
    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting contract approval"
        APPROVED = "approved", "Approved"
        DELIVERING = "delivering", "Delivering"
        DELIVERED = "delivered", "Delivered"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    class PaymentMethod(models.TextChoices):
        FREE = "free", "Free"
        INVOICE = "invoice", "Invoice"

    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="orders")
    # The filter the buyer chose (whole dataset = {}); studies below are the snapshot.
    criteria = models.JSONField(default=dict, blank=True)
    studies = models.ManyToManyField(Study, related_name="+", blank=True)
    study_count = models.PositiveIntegerField()
    # Price snapshot: never recomputed from today's dataset price.
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    payment_method = models.CharField(max_length=16, choices=PaymentMethod.choices)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.AWAITING_APPROVAL, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    TRANSITIONS = {
        Status.AWAITING_APPROVAL: {Status.APPROVED, Status.REJECTED, Status.CANCELLED},
        # Until the data is delivered an order can still be cancelled (by an admin, with a
        # reason, or when its dataset is withdrawn); delivered data follows its licence.
        Status.APPROVED: {Status.DELIVERING, Status.CANCELLED},
        Status.DELIVERING: {Status.DELIVERED, Status.CANCELLED},
        Status.DELIVERED: set(),
        Status.REJECTED: set(),
        Status.CANCELLED: set(),
    }

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"Order #{self.pk}"

    def can_cancel(self) -> bool:
        return Order.Status.CANCELLED in self.TRANSITIONS[self.status]


class OrderStatusChange(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
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

