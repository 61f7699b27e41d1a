"""The demo seed's accounts still log in with the README's steps now that admins and
provider owners need a second factor."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from demo.accounts import (
    demo_account_ready,
    demo_totp_code,
    demo_two_factor,
)
from marketplace.models import User

pytestmark = pytest.mark.django_db


def test_a_demo_admin_logs_in_with_the_printed_code_and_with_a_recovery_code(settings, capsys):
    admin = demo_account_ready(User.objects.create_superuser(
        username="admin", email="admin@marketplace.example", password="demo-pass-2026"))
    secret, uri, codes = demo_two_factor(admin)
    assert demo_two_factor(admin)[0] == secret  # idempotent: the same secret on a second seed
    assert f"secret={secret}" in uri and len(codes) >= 10

    settings.DEBUG = True
    call_command("demo_totp_code", "admin")
    code = capsys.readouterr().out.strip()
    assert code == demo_totp_code(admin) and len(code) == 6

    client = Client()
    client.post(reverse("login"), {"login": "admin", "password": "demo-pass-2026"})
    client.post(reverse("mfa_authenticate"), {"code": code})
    assert client.get("/admin/").status_code == 200

    other = Client()
    other.post(reverse("login"), {"login": "admin@marketplace.example", "password": "demo-pass-2026"})
    other.post(reverse("mfa_authenticate"), {"code": codes[0]})
    assert other.get("/admin/").status_code == 200


def test_the_code_command_refuses_outside_debug(settings, admin_user):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG"):
        call_command("demo_totp_code", "admin")
