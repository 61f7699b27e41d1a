"""Write what to pay by hand: providers without a Stripe Connect account whose transferable
amount in the currency is positive, one CSV row each."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.ledger.services import payout_csv, payout_rows


class Command(BaseCommand):
    help = "CSV of manual payouts (providers not on Stripe Connect) for one currency."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--currency", required=True, help="ISO 4217 code, e.g. USD")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            text = payout_csv(payout_rows(options["currency"]))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options.get("output"):
            with open(options["output"], "w", newline="", encoding="utf-8") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
