"""Print the current two-factor code of a demo account (DEBUG only): for `make run`, where
admin, provider1 and provider2 need a second factor after the password."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo.accounts import demo_totp_code
from marketplace.models import User


class Command(BaseCommand):
    help = "Print the current TOTP code of a demo user (only with DJANGO_DEBUG=True)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("username")

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_totp_code is for local demo data: it runs only with DJANGO_DEBUG=True.")
        user = User.objects.filter(username=options["username"]).first()
        code = demo_totp_code(user) if user is not None else None
        if code is None:
            raise CommandError(f"No user {options['username']!r} with an authenticator app.")
        self.stdout.write(code)
