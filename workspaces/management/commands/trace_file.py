"""Name the order a leaked delivered file came from (workspaces/fingerprint.py).

    python manage.py trace_file FILE [FILE ...]
    python -m workspaces.trace FILE [FILE ...]

One line per file: "FILE: order #ID, buyer NAME, delivered DATE (found by its private tag)"
or "FILE: not from this marketplace". Exit 0 when every file was traced, 1 otherwise.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workspaces.fingerprint import trace_file


class Command(BaseCommand):
    help = "Name the order (id, buyer, date) each delivered DICOM file came from."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        untraced = 0
        for name in options["files"]:
            try:
                result = trace_file(name)
            except OSError as exc:
                self.stdout.write(f"{name}: cannot be read ({type(exc).__name__})")
                untraced += 1
                continue
            self.stdout.write(f"{name}: {result.message}")
            untraced += not result.found
        if untraced:
            raise CommandError(f"{untraced} of {len(options['files'])} file(s) not traced to an order.", returncode=1)
