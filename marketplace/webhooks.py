"""Outgoing webhooks: an organization's owners register URLs that receive signed events.

An event becomes one WebhookDelivery row per subscribed endpoint, written in the caller's
transaction; a task sends it after commit. A failed send is tried again at growing
intervals (RETRY_DELAYS) by the sweep that beat runs every minute, up to MAX_ATTEMPTS.

Every body is signed like Stripe's: ``X-Marketplace-Signature: t=<unix>,v1=<hex>`` where
hex is HMAC-SHA256 of ``"<t>.<body>"`` with the endpoint's secret (README, "Webhooks").
Payloads hold ids, counts, titles and links, never PHI.

Requests go only to http/https URLs whose host resolves to public addresses (unless
settings.WEBHOOKS_ALLOW_PRIVATE), to the address that was checked, with a timeout, and
redirects are not followed: a webhook must not become a way to reach our own network.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from marketplace.exceptions import ApplicationError, NotFoundError
from marketplace.models import Membership, Organization, User, WebhookDelivery, WebhookEndpoint
from marketplace.services import audit_record

logger = logging.getLogger(__name__)

Event = WebhookEndpoint.Event
PING = "ping"  # sent on request by an owner, whatever the endpoint subscribed to
SIGNATURE_HEADER = "X-Marketplace-Signature"
TIMEOUT_SECONDS = 5.0
# Seconds to wait after the 1st, 2nd, ... failed attempt; the attempt after the last delay
# is the final one (MAX_ATTEMPTS in all).
RETRY_DELAYS = (60, 5 * 60, 30 * 60, 2 * 3600, 12 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
MAX_ENDPOINTS_PER_ORGANIZATION = 10
# The sweep sends in-process, each request at most TIMEOUT_SECONDS per network wait: it
# stops taking rows after this long (under the housekeeping queue's soft limit) and the next
# sweep takes the rest.
SWEEP_SECONDS = 60.0
SWEEP_BATCH = 100


class WebhookError(ApplicationError):
    code = "webhook_error"


class WebhookURLError(WebhookError):
    code = "webhook_url"


# ---- reads -------------------------------------------------------------------------------

def webhook_organizations_owned(*, user: User) -> QuerySet[Organization]:
    """Organizations whose webhooks the user may manage (owners only)."""
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user, memberships__role=Membership.Role.OWNER)


def access_webhook_organization(*, user: User, organization_id: int) -> Organization:
    """One NotFoundError for "no such organization" and "not an owner of it"."""
    org = webhook_organizations_owned(user=user).filter(pk=organization_id).first()
    if org is None:
        raise NotFoundError("Organization not found.")
    return org


def access_webhook_endpoint(*, user: User, endpoint_id: int) -> WebhookEndpoint:
    endpoint = (WebhookEndpoint.objects.select_related("organization")
                .filter(pk=endpoint_id, organization__in=webhook_organizations_owned(user=user)).first())
    if endpoint is None:
        raise NotFoundError("Webhook not found.")
    return endpoint


def webhook_deliveries_for(*, organization: Organization, limit: int = 50) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(endpoint__organization=organization)
                .select_related("endpoint").order_by("-created", "-id")[:limit])


# ---- URL safety -----------------------------------------------------------------------------

def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def webhook_url_resolve(url: str) -> tuple[str, int, str]:
    """(scheme, port, address) a webhook URL may be sent to, or WebhookURLError saying why
    not. The address is the one to connect to: resolving the name a second time when
    connecting could give another answer (DNS rebinding)."""
    if not url or len(url) > 500 or "\x00" in url or any(c.isspace() for c in url):
        raise WebhookURLError("Enter the full address of your webhook receiver (at most 500 characters).")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookURLError("This webhook address is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookURLError("A webhook address starts with https:// (or http://) and names a host.")
    if parts.username or parts.password:
        raise WebhookURLError("Put no user name or password in the webhook address; verify the signature instead.")
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookURLError(f"The host {parts.hostname[:100]} of this webhook address cannot be found.") from None
    addresses = [info[4][0] for info in infos]
    if not settings.WEBHOOKS_ALLOW_PRIVATE and not all(_address_allowed(a) for a in addresses):
        raise WebhookURLError("Webhook addresses must be public: loopback, private and link-local "
                              "addresses are refused.")
    return parts.scheme, port, addresses[0]


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Marketplace-Signature header value for this body at this time."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ---- endpoints (owners, audited) ----------------------------------------------------------

def _events_clean(events: list[str]) -> list[str]:
    chosen = sorted(set(events))
    if not chosen or any(e not in Event.values for e in chosen):
        raise WebhookError("Choose at least one of the events offered.", code="webhook_events")
    return chosen


@transaction.atomic
def webhook_endpoint_create(*, organization: Organization, url: str, events: list[str], acting_user: User,
                            ip: str | None = None) -> WebhookEndpoint:
    """An owner registers a URL for some events. The new endpoint's secret signs every
    payload; the owners see it on the organization's webhook page."""
    org = access_webhook_organization(user=acting_user, organization_id=organization.pk)
    url = (url or "").strip()
    chosen = _events_clean(events)
    webhook_url_resolve(url)
    # Locked so that two owners adding at once cannot pass the limit together.
    Organization.objects.select_for_update().filter(pk=org.pk).first()
    if org.webhook_endpoints.filter(active=True).count() >= MAX_ENDPOINTS_PER_ORGANIZATION:
        raise WebhookError(f"At most {MAX_ENDPOINTS_PER_ORGANIZATION} active webhooks per organization; "
                           "deactivate one first.", code="webhook_limit")
    endpoint = WebhookEndpoint.objects.create(organization=org, url=url, events=chosen, created_by=acting_user)
    # The URL may name internal hosts of the customer: ids and events only.
    audit_record(actor=acting_user, action="webhook.create", obj=endpoint, ip=ip,
                 detail={"organization_id": org.pk, "events": chosen})
    return endpoint


@transaction.atomic
def webhook_endpoint_deactivate(*, endpoint: WebhookEndpoint, acting_user: User,
                                ip: str | None = None) -> WebhookEndpoint:
    """Stop sending to this endpoint; events still waiting for it end as failed. Idempotent."""
    endpoint = access_webhook_endpoint(user=acting_user, endpoint_id=endpoint.pk)
    return _deactivate(endpoint, actor=acting_user, ip=ip, by_staff=False)


@transaction.atomic
def webhook_endpoint_deactivate_by_staff(*, endpoint: WebhookEndpoint, acting_user: User,
                                         ip: str | None = None) -> WebhookEndpoint:
    """Staff stop an endpoint of any organization (the admin's action, which checks the
    permission), with the same effect and audit as an owner's deactivation. Idempotent."""
    return _deactivate(endpoint, actor=acting_user, ip=ip, by_staff=True)


def _deactivate(endpoint: WebhookEndpoint, *, actor: User, ip: str | None, by_staff: bool) -> WebhookEndpoint:
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if not locked.active:
        return locked
    locked.active, locked.deactivated_at = False, timezone.now()
    locked.save(update_fields=["active", "deactivated_at"])
    dropped = locked.deliveries.filter(status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.FAILED, next_attempt_at=None, last_error="Webhook deactivated.")
    detail = {"organization_id": locked.organization_id, "pending_dropped": dropped}
    audit_record(actor=actor, action="webhook.deactivate", obj=locked, ip=ip,
                 detail={**detail, "by_staff": True} if by_staff else detail)
    return locked


@transaction.atomic
def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, acting_user: User,
                                   ip: str | None = None) -> WebhookEndpoint:
    """An owner replaces an active endpoint's signing secret (a leaked one, or routine). The
    old secret stops at once: every send, retries included, is signed when it is sent."""
    endpoint = access_webhook_endpoint(user=acting_user, endpoint_id=endpoint.pk)
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if not locked.active:
        raise WebhookError("This webhook is deactivated.", code="webhook_inactive")
    locked.secret = WebhookEndpoint._meta.get_field("secret").get_default()
    locked.save(update_fields=["secret"])
    # Ids only: neither secret belongs in the audit trail.
    audit_record(actor=acting_user, action="webhook.rotate_secret", obj=locked, ip=ip,
                 detail={"organization_id": locked.organization_id})
    return locked


@transaction.atomic
def webhook_endpoint_ping(*, endpoint: WebhookEndpoint, acting_user: User, ip: str | None = None) -> WebhookDelivery:
    """Queue a signed test event ("ping") to an active endpoint; its outcome shows in the log."""
    endpoint = access_webhook_endpoint(user=acting_user, endpoint_id=endpoint.pk)
    if not endpoint.active:
        raise WebhookError("This webhook is deactivated.", code="webhook_inactive")
    delivery = _delivery_create(endpoint, PING, {"organization_id": endpoint.organization_id})
    audit_record(actor=acting_user, action="webhook.ping", obj=endpoint, ip=ip,
                 detail={"webhook_delivery_id": delivery.pk})
    return delivery


@transaction.atomic
def webhook_delivery_requeue(*, delivery: WebhookDelivery, acting_user: User,
                             ip: str | None = None) -> WebhookDelivery:
    """Staff send a failed delivery again (its receiver was fixed): the same body and event
    id, a fresh run of attempts. Only failed deliveries of active endpoints."""
    locked = (WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
              .get(pk=delivery.pk))
    if locked.status != WebhookDelivery.Status.FAILED:
        raise WebhookError("Only failed deliveries are queued again.", code="webhook_not_failed")
    if not locked.endpoint.active:
        raise WebhookError("Its webhook is deactivated.", code="webhook_inactive")
    attempts_before = locked.attempt_count
    # A fresh count, or the first failure would end it again (MAX_ATTEMPTS reached).
    locked.status, locked.attempt_count, locked.next_attempt_at = WebhookDelivery.Status.PENDING, 0, timezone.now()
    locked.save(update_fields=["status", "attempt_count", "next_attempt_at"])
    audit_record(actor=acting_user, action="webhook.requeue", obj=locked, ip=ip,
                 detail={"webhook_endpoint_id": locked.endpoint_id, "attempts_before": attempts_before})
    delivery_id = locked.pk
    transaction.on_commit(lambda: _enqueue(delivery_id))
    return locked


# ---- events -------------------------------------------------------------------------------

def _delivery_create(endpoint: WebhookEndpoint, event_type: str, data: dict[str, Any]) -> WebhookDelivery:
    # The body is fixed when the event happens: every retry sends the same bytes and the
    # same id, so receivers can ignore a repeat.
    body = {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "created": int(time.time()), "data": data}
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event_type=event_type, payload=body)
    delivery_id = delivery.pk
    transaction.on_commit(lambda: _enqueue(delivery_id))
    return delivery


def _enqueue(delivery_id: int) -> None:
    from marketplace.tasks import webhook_delivery_send_task

    webhook_delivery_send_task.delay(delivery_id=delivery_id)


def webhook_event_emit(*, organization_ids: list[int], event_type: str, data: dict[str, Any]) -> int:
    """Record ``event_type`` for every active endpoint of these organizations that
    subscribed to it, in the caller's transaction (a rolled-back change sends nothing);
    each is sent after commit. ``data`` must hold no PHI. Returns the rows written."""
    if event_type not in Event.values:
        raise ValueError(f"unknown webhook event {event_type!r}")
    endpoints = WebhookEndpoint.objects.filter(organization_id__in=organization_ids, active=True,
                                               events__contains=[event_type])
    count = 0
    for endpoint in endpoints:
        _delivery_create(endpoint, event_type, data)
        count += 1
    return count


# ---- sending ------------------------------------------------------------------------------

def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST once and return the status code; OSError/HTTPException on network trouble,
    WebhookURLError when the URL may not be called. Redirects are returned, not followed."""
    scheme, port, address = webhook_url_resolve(url)
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, port, timeout=TIMEOUT_SECONDS)

    def connect_checked(_address: tuple[str, int], timeout: float | None = None,
                        source_address: tuple[str, int] | None = None) -> socket.socket:
        # Connect to the address webhook_url_resolve approved; TLS still checks the certificate
        # against the host name (http.client passes it as server_hostname).
        return socket.create_connection((address, port), timeout, source_address)

    conn._create_connection = connect_checked  # type: ignore[attr-defined]
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(4096)  # a receiver's answer is not kept: only its status
        return response.status
    finally:
        conn.close()


def _record_failure(delivery: WebhookDelivery, now: datetime, *, error: str, code: int | None = None,
                    permanent: bool = False) -> None:
    delivery.last_response_code, delivery.last_error = code, error[:300]
    if permanent or delivery.attempt_count >= MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
    else:
        delivery.next_attempt_at = now + timedelta(seconds=RETRY_DELAYS[delivery.attempt_count - 1])


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one pending delivery if it is due at ``now``; returns its status afterwards, or
    "skipped" when it is not pending, not due, or another worker is sending it.

    Safe to run twice or concurrently: the row stays locked while it is sent, a second
    caller skips a locked row and finds a sent one no longer pending. A worker that dies
    mid-request rolls back, so the attempt is made again (receivers dedupe on the event id).
    """
    now = now or timezone.now()
    with transaction.atomic():
        # skip_locked: the task after commit and the sweep may reach the same row at once;
        # the second must neither wait for the first's request nor send it again.
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("endpoint")
                    .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
                    .first())
        if delivery is None:
            return "skipped"
        endpoint = delivery.endpoint
        fields = ["attempt_count", "status", "last_response_code", "last_error", "next_attempt_at", "delivered_at"]
        if not endpoint.active:
            _record_failure(delivery, now, error="Webhook deactivated.", permanent=True)
            delivery.save(update_fields=fields)
            return delivery.status
        delivery.attempt_count += 1
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "MedImage-Exchange-Webhooks/1",
            SIGNATURE_HEADER: webhook_signature(secret=endpoint.secret, timestamp=int(now.timestamp()), body=body),
            "X-Marketplace-Event": delivery.event_type,
            "X-Marketplace-Delivery": str(delivery.pk),
        }
        try:
            code = _post(endpoint.url, body, headers)
        except WebhookURLError as exc:
            _record_failure(delivery, now, error=exc.message, permanent=True)
        except (OSError, http.client.HTTPException) as exc:
            # The exception's class only: its text may quote the customer's internal names.
            _record_failure(delivery, now, error=f"Network error ({type(exc).__name__}).")
        else:
            if 200 <= code < 300:
                delivery.status, delivery.last_response_code, delivery.last_error = (
                    WebhookDelivery.Status.SUCCEEDED, code, "")
                delivery.next_attempt_at, delivery.delivered_at = None, now
            else:
                note = " (redirects are not followed)" if 300 <= code < 400 else ""
                _record_failure(delivery, now, code=code, error=f"HTTP {code}{note}")
        delivery.save(update_fields=fields)
    logger.info("webhook delivery %s attempt %s: %s", delivery.pk, delivery.attempt_count, delivery.status)
    return delivery.status


def webhook_deliveries_sweep(*, now: datetime | None = None, budget_seconds: float = SWEEP_SECONDS) -> dict[str, int]:
    """Beat job: send every pending delivery that is due (retries, and first attempts whose
    task was lost), oldest due first, at most SWEEP_BATCH and about budget_seconds per run."""
    now = now or timezone.now()
    started = time.monotonic()
    due = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:SWEEP_BATCH])
    counts = {"succeeded": 0, "pending": 0, "failed": 0, "skipped": 0}
    for index, pk in enumerate(due):
        if index and time.monotonic() - started > budget_seconds:
            break
        counts[webhook_delivery_attempt(delivery_id=pk, now=now)] += 1
    return counts
