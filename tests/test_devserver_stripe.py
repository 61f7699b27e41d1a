"""`make run` and payments: the local Stripe server starts when no Stripe keys are given,
its settings reach every child, its webhook secret survives restarts, and it stops with the rest."""
from __future__ import annotations

import json
import os
import urllib.request

from config import devserver, stripe_local


def test_the_local_stripe_server_is_started_only_without_stripe_keys() -> None:
    assert devserver.stripe_plan({}) is True
    assert devserver.stripe_plan({"STRIPE_SECRET_KEY": ""}) is True
    assert devserver.stripe_plan({"STRIPE_SECRET_KEY": "sk_live_real"}) is False
    # Stripe is planned apart from the database and cache: one does not change the other.
    assert devserver.embedded_plan({"STRIPE_SECRET_KEY": "sk_live_real"}) == ["postgres", "redis"]


def test_every_child_gets_the_five_stripe_settings(tmp_path) -> None:
    env = devserver.stripe_env("http://127.0.0.1:5000", "http://127.0.0.1:5000/js.stripe.com/v3/", "whsec_x")
    assert env["STRIPE_SECRET_KEY"].startswith("sk_test_local_")
    assert env["STRIPE_PUBLISHABLE_KEY"].startswith("pk_test_local_")
    assert (env["STRIPE_API_BASE"], env["STRIPE_WEBHOOK_SECRET"]) == ("http://127.0.0.1:5000", "whsec_x")
    child = devserver.child_env({"PATH": "/bin"}, env, tmp_path)
    assert child["STRIPE_JS_URL"] == "http://127.0.0.1:5000/js.stripe.com/v3/"


def test_the_webhook_secret_is_made_once_and_kept(tmp_path) -> None:
    first = devserver.local_webhook_secret(tmp_path)
    assert first.startswith("whsec_") and len(first) > 30
    assert devserver.local_webhook_secret(tmp_path) == first
    assert oct((tmp_path / "stripe" / "webhook_secret").stat().st_mode & 0o777) == "0o600"


def test_services_start_the_local_stripe_server_and_stop_it(tmp_path) -> None:
    services = devserver.EmbeddedServices(tmp_path)
    env = services.start_stripe("http://127.0.0.1:8000/" + devserver.STRIPE_WEBHOOK_PATH)
    running = services.stripe
    try:
        with urllib.request.urlopen(f"{env['STRIPE_API_BASE']}/_standin/health", timeout=5) as answer:
            assert json.loads(answer.read())["ok"] is True
        assert env["STRIPE_WEBHOOK_SECRET"] == devserver.local_webhook_secret(tmp_path)
        assert running.webhooks == {"http://127.0.0.1:8000/payments/stripe/webhook/": env["STRIPE_WEBHOOK_SECRET"]}
    finally:
        services.stop()
    assert services.stripe is None and services.started == []
    for pid in running.pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1][:3]
    assert not stripe_local.stop_stripe_local(tmp_path / "stripe")  # nothing left to stop
