"""Shared fixtures: a readable world of users and organizations (Healthchecks-style).

alice   — owner of the approved provider "Alpha Imaging"
bob     — researcher in the verified buyer organization "Bravo AI" (commercial, GB)
charlie — another researcher (Charlie AI, verified), who must see nothing of Bob's
admin   — staff superuser

Users made here have a verified e-mail address; those whose role requires a second factor
(staff, provider owners) have a TOTP authenticator with TEST_TOTP_SECRET (`totp_code()`
gives its current code for logging in through the pages).

Payments against the local Stripe server (config/stripe_local.py), no internet:

stripe_settings — points the STRIPE_* settings at the session's ``stripe_server``
stripe_webhooks — a tiny HTTP server registered as the webhook receiver for the whole
                  session; ``wait_for(event_type, object_id)`` returns (body, signature)
"""
from __future__ import annotations

import io
import json
import secrets
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from demo.synthetic import write_zip
from factories.accounts import ready_account
from factories.dicom import ct_files


@pytest.fixture(autouse=True)
def fresh_cache(request):
    # The cache is a real Redis shared by every test: no rate-limit budget (logins, API
    # throttles, quotes) or used TOTP code carries over from one test to the next.
    if request.config.pluginmanager.hasplugin("django"):
        from django.core.cache import cache

        cache.clear()


@pytest.fixture(autouse=True)
def fast_password_hashing(request):
    # Users are created per test; the default PBKDF2 costs ~0.6 s per password here.
    if request.config.pluginmanager.hasplugin("django"):
        request.getfixturevalue("settings").PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tiny_threshold(settings):
    """The shared fixture datasets hold two studies. Tests of ordering, delivery and other
    mechanics lower DISCLOSURE_THRESHOLD (a setting; 1 shows every count) to order them;
    the disclosure tests (tests/catalog/test_disclosure.py) keep the default, 11."""
    settings.DISCLOSURE_THRESHOLD = 1


@pytest.fixture
def admin_user(db):
    from marketplace.models import User

    user = User.objects.create_superuser(username="admin", email="admin@example.org", password="admin-pass-123")
    return ready_account(user, two_factor=True)


@pytest.fixture
def make_member(db):
    from marketplace.models import Membership, Organization, User

    def make(username: str, org_name: str, kind: str, *, approved: bool = True):
        user = User.objects.create_user(username=username, email=f"{username}@example.org", password="pass-1234567")
        org, created = Organization.objects.get_or_create(name=org_name, defaults={"kind": kind})
        if created and kind == Organization.Kind.BUYER:
            # What a buyer enters when setting up its organization (marketplace/vetting.py).
            Organization.objects.filter(pk=org.pk).update(
                sector=Organization.Sector.COMMERCIAL, country="GB", contact_name=f"{username.title()} Contact",
                contact_email=f"contact@{username}.example.org")
        if approved:
            # Providers approved, buyers verified: both by an admin, through approved_at.
            from django.utils import timezone

            Organization.objects.filter(pk=org.pk, approved_at__isnull=True).update(approved_at=timezone.now())
        org.refresh_from_db()
        Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
        ready_account(user, two_factor=kind == Organization.Kind.PROVIDER)
        return user, org

    return make


@pytest.fixture
def alice_and_provider(make_member):
    return make_member("alice", "Alpha Imaging", "provider")


@pytest.fixture
def alice(alice_and_provider):
    return alice_and_provider[0]


@pytest.fixture
def provider(alice_and_provider):
    return alice_and_provider[1]


@pytest.fixture
def bob(make_member):
    return make_member("bob", "Bravo AI", "buyer")[0]


@pytest.fixture
def charlie(make_member):
    return make_member("charlie", "Charlie AI", "buyer")[0]


@pytest.fixture
def dataset(provider, alice):
    from catalog.datasets.services import dataset_create

    return dataset_create(provider=provider, acting_user=alice, title="Chest CT screening",
                          description="Low-dose chest CT", price_per_study=Decimal("10.00"))


@pytest.fixture
def ingest(alice):
    """Upload (name, bytes) files into a dataset and ingest them in-process, like the worker."""
    from catalog.ingestion.ingest import upload_batch_ingest
    from catalog.ingestion.uploads import upload_batch_create

    def run(dataset, files, *, as_zip: bool = False):
        if as_zip:
            uploads = [("upload.zip", io.BytesIO(write_zip(files)))]
        else:
            uploads = [(name, io.BytesIO(data)) for name, data in files]
        batch = upload_batch_create(dataset=dataset, files=uploads, acting_user=alice)
        return upload_batch_ingest(batch_id=batch.pk)

    return run


@pytest.fixture
def publish(alice, admin_user):
    """Submit a dataset for review as its provider and publish it as admin; returns it fresh."""
    from catalog.datasets.services import dataset_publish, dataset_submit_for_review

    def run(dataset):
        dataset.refresh_from_db()
        dataset_submit_for_review(dataset=dataset, acting_user=alice)
        return dataset_publish(dataset=dataset, acting_user=admin_user)

    return run


@pytest.fixture
def published_dataset(dataset, ingest, publish):
    ingest(dataset, ct_files())
    return publish(dataset)


@pytest.fixture
def deliver(admin_user, dua):
    """Order a whole dataset, approve the contract and run the delivery in-process."""
    from factories.orders import approve_for_delivery, place_order
    from workspaces.models import Delivery
    from workspaces.services import delivery_run

    def run(dataset, buyer):
        order = approve_for_delivery(place_order(buyer, dataset, dua), admin_user)
        return delivery_run(delivery_id=Delivery.objects.get(order=order).pk)

    return run


@pytest.fixture
def dua(db):
    """The standard agreement from migration orders/0002; transactional tests flush that data
    (TRUNCATE), so recreate it from the migration's own text when it is gone."""
    import importlib

    from orders.models import DuaTemplate
    from orders.selectors import active_dua_template

    text = importlib.import_module("orders.migrations.0002_standard_dua").STANDARD_DUA
    return active_dua_template() or DuaTemplate.objects.create(
        version="1.0", title="Standard data use agreement", text=text, is_active=True)


@pytest.fixture
def second_provider_dataset(make_member, admin_user):
    """A dataset of another provider ("Delta Scans", owner dave), priced per study in USD, published."""
    from catalog.datasets.services import dataset_create, dataset_publish, dataset_submit_for_review
    from catalog.ingestion.ingest import upload_batch_ingest
    from catalog.ingestion.uploads import upload_batch_create

    dave, delta = make_member("dave", "Delta Scans", "provider")
    dataset = dataset_create(provider=delta, acting_user=dave, title="Delta brain MR", price_per_study=Decimal("7.25"))
    batch = upload_batch_create(dataset=dataset, files=[(n, io.BytesIO(d)) for n, d in ct_files(seed=11)],
                                acting_user=dave)
    upload_batch_ingest(batch_id=batch.pk)
    dataset.refresh_from_db()
    dataset_submit_for_review(dataset=dataset, acting_user=dave)
    return dataset_publish(dataset=dataset, acting_user=admin_user)


WEBHOOK_SECRET = "whsec_test_" + secrets.token_hex(16)


class WebhookReceiver:
    """Keeps every POST it receives: (raw body, Stripe-Signature header)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.received.append((body, self.headers.get("Stripe-Signature", "")))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/payments/stripe/webhook/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, event_type: str, object_id: str, timeout: float = 10) -> tuple[bytes, str]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for body, signature in self.received:
                    event = json.loads(body)
                    if event.get("type") == event_type and event["data"]["object"].get("id") == object_id:
                        return body, signature
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [json.loads(body).get("type") for body, _ in self.received]
                    raise AssertionError(f"no {event_type} webhook for {object_id} within {timeout} s (seen: {seen})")
                self.arrived.wait(left)


@pytest.fixture(scope="session")
def stripe_webhooks(stripe_server):
    receiver = WebhookReceiver()
    stripe_server.register_webhook(receiver.url, WEBHOOK_SECRET)
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def stripe_settings(settings, stripe_server, stripe_webhooks):
    settings.STRIPE_SECRET_KEY = "sk_test_local_" + "t" * 24
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_local_" + "t" * 24
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_server.api_base
    settings.STRIPE_JS_URL = stripe_server.js_url
    return settings


class HookReceiver:
    """Our outgoing webhooks' far end: a real HTTP server in a thread that records each POST
    (path, headers, body) and answers with the next code of ``codes`` (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, dict(self.headers), body))
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/medimage?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook_receiver():
    receiver = HookReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def webhook_send_inline(monkeypatch):
    """The webhook send task runs in-process when it is queued (what the worker runs)."""
    from marketplace.tasks import webhook_delivery_send_task

    monkeypatch.setattr(webhook_delivery_send_task, "delay", lambda **kw: webhook_delivery_send_task.run(**kw))
