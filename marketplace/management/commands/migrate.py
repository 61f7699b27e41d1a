"""`manage.py migrate` runs as the owner role (DATABASE_OWNER_URL, alias "owner").

The app role (DATABASE_URL) may not create or alter tables, so Django's own migrate would
fail on it. `--database` still chooses another alias when given.
"""
from __future__ import annotations

from argparse import ArgumentParser

from django.core.management.commands.migrate import Command as DjangoMigrateCommand


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + " Runs as the owner role (alias 'owner') unless --database is given."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(database="owner")
