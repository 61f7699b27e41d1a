"""Production settings pass Django's deployment checklist, and debug is off unless asked for."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra}
    env.pop("DJANGO_DEBUG", None) if "DJANGO_DEBUG" not in extra else None
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


PRODUCTION = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "market.example.org"}


def test_production_settings_pass_check_deploy_without_a_warning() -> None:
    result = _run(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_is_off_unless_set_and_production_needs_a_secret_key() -> None:
    shown = _run(PRODUCTION, "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.DEBUG, "
                 "settings.SESSION_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS)")
    assert shown.stdout.split() == ["False", "True", "31536000"], shown.stderr
    no_key = _run({"DJANGO_SECRET_KEY": ""}, "check")
    assert no_key.returncode == 2 and "configuration error: DJANGO_SECRET_KEY" in no_key.stderr
    assert "Traceback" not in no_key.stderr


@pytest.mark.parametrize("value", ["yes", "1", "on"])
def test_a_debug_flag_other_than_true_or_false_is_refused(value: str) -> None:
    result = _run({**PRODUCTION, "DJANGO_DEBUG": value}, "check")
    assert result.returncode == 2 and "DJANGO_DEBUG must be True or False" in result.stderr


def test_pages_carry_a_content_security_policy_without_inline_scripts(client, db) -> None:
    response = client.get("/datasets/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "onchange=" not in response.content.decode()
    docs = client.get("/api/docs/").content.decode()
    assert "<script>" not in docs.replace(" ", "")  # Swagger UI's start-up script is a file
