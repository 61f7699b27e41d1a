from __future__ import annotations

import secrets
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    email = models.EmailField(unique=True)
    # The terms of use the account accepted at sign-up (settings.TERMS_VERSION then).
    terms_version = models.CharField(max_length=32, blank=True)
    terms_accepted_at = models.DateTimeField(null=True, blank=True)
    # The IANA zone pages show times in; blank follows the browser (marketplace/timezones.py).
    time_zone = models.CharField(max_length=64, blank=True)


def _new_deid_secret() -> str:
    return secrets.token_hex(32)


class Organization(models.Model):
    class Kind(models.TextChoices):
        PROVIDER = "provider", "Data provider"
        BUYER = "buyer", "Buyer / research organization"

    class Sector(models.TextChoices):
        ACADEMIC = "academic", "Academic (university, research institute)"
        COMMERCIAL = "commercial", "Commercial (company)"
        PUBLIC = "public", "Public (hospital, government, non-profit)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 country code")
    # A provider may publish only after an admin approved it; a buyer may check out only
    # after an admin verified it (marketplace/vetting.py): the same two fields for both.
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Per-provider secret for pseudonyms, UID remapping and date shifts: the same patient
    # gets the same pseudonym in every upload of this provider, and another provider's
    # pseudonyms cannot be linked to it.
    deid_secret = models.CharField(max_length=64, default=_new_deid_secret, editable=False)
    # Who the organization is, for the admin who verifies a buyer and for providers asked
    # to consent to an order. `sector` is what the organization is; `kind` is its role here.
    sector = models.CharField(max_length=16, choices=Sector.choices, blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    # Buyers: the last refusal to verify, with the reason the members were told.
    rejected_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    # Buyers: an admin checked that this is an academic institution (academic discounts).
    academic_verified_at = models.DateTimeField(null=True, blank=True)
    # Providers: the platform's fee in basis points (1/100 %) when it differs from
    # settings.PLATFORM_FEE_BPS, and the Stripe Connect account their shares go to.
    platform_fee_bps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Platform fee for this provider in basis points (1500 = 15 %); "
                                         "empty: the marketplace default.")
    stripe_account_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_provider(self) -> bool:
        return self.kind == self.Kind.PROVIDER

    @property
    def is_approved(self) -> bool:
        return self.approved_at is not None

    @property
    def is_verified_buyer(self) -> bool:
        return self.kind == self.Kind.BUYER and self.approved_at is not None

    @property
    def is_verified_academic(self) -> bool:
        return self.kind == self.Kind.BUYER and self.academic_verified_at is not None


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Invitation(models.Model):
    """An owner invites an e-mail address; the person behind it (once signed in with that
    address verified) accepts or declines. Nobody joins an organization without asking."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["email"])]

    def __str__(self) -> str:
        return f"invitation {self.pk} to {self.organization}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.declined_at is None


class AuditEvent(models.Model):
    """Append-only record of who did what to which object, when, from where.

    UPDATE and DELETE are refused by a database trigger (migration 0002), so not even
    ORM code or the admin can rewrite history; the application's database role may not
    TRUNCATE it or drop the trigger (marketplace/database.py), and each event is chained to
    the previous one by hash (marketplace/audit.py). Details hold ids and counts, never PHI.
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)  # set before hashing
    # sha256 over this event's canonical form and the previous event's hash (by id), so a
    # removed, inserted or edited event breaks the chain (manage.py audit_verify).
    prev_hash = models.CharField(max_length=64, blank=True)
    chain_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        actor = self.actor_label or "system"
        return f"{self.created:%Y-%m-%d %H:%M:%S} {actor} {self.action} {self.object_type}:{self.object_id}"


class Notification(models.Model):
    """Something a user should look at (new data for a saved search, an answer to a data
    request); shown in the app and sent by e-mail."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="notifications")
    message = models.CharField(max_length=300)
    url = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self) -> str:
        return self.message


def _new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


class WebhookEndpoint(models.Model):
    """An organization's URL that receives signed events (marketplace/webhooks.py). The
    secret is kept readable: it signs every payload, and the organization's owners see it."""

    class Event(models.TextChoices):
        DELIVERY_READY = "delivery.ready", "A delivery is ready in the workspace"
        SAVED_SEARCH_NEW_DATA = "saved_search.new_data", "New data matches a saved search"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=64, default=_new_webhook_secret, editable=False)
    events = models.JSONField(default=list)  # a list of Event values
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of organization {self.organization_id}"


class WebhookDelivery(models.Model):
    """One event for one endpoint and its sending attempts. Pending rows are due at
    next_attempt_at; the sender locks a row while it sends, so two workers never send it
    at the same time."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    attempt_count = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    last_response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    created = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event_type} to webhook {self.endpoint_id} ({self.status})"


class ApiToken(models.Model):
    """A personal access token for the REST API and the command-line client.

    Only the SHA-256 of the secret is stored, with its first characters (``prefix``) so the
    owner can tell tokens apart; the secret itself is shown once, at creation
    (marketplace/tokens.py). A revoked or expired row stays, so a caller is told which.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read: list orders, deliveries and files"
        DOWNLOAD = "download", "Download: fetch delivered files"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True)
    # Updated at most once a minute (a busy client would otherwise write on every call).
    last_used = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired()
