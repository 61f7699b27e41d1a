"""Payments against the local Stripe server (config/stripe_local.py), no internet.

stripe_settings — points the STRIPE_* settings at the session's ``stripe_server``
stripe_webhooks — a tiny HTTP server registered as the webhook receiver for the whole
                  session; ``wait_for(event_type, object_id)`` returns (body, signature)
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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
