"""Check the audit trail's hash chain; name the first event that breaks it.

    python manage.py audit_verify      exit 0: "audit trail intact: N events"
                                        exit 1: "audit trail broken at event #ID: <why>"
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from marketplace.audit import chain_check
from marketplace.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and name the first bad event."

    def handle(self, *args: Any, **options: Any) -> None:
        events = AuditEvent.objects.order_by("id").only(
            "id", "actor_id", "actor_label", "action", "object_type", "object_id", "ip_address", "detail",
            "created", "prev_hash", "chain_hash").iterator(chunk_size=2000)
        seen = 0

        def counted() -> Iterator[AuditEvent]:
            nonlocal seen
            for event in events:
                seen += 1
                yield event

        first = next(chain_check(counted()), None)
        if first is not None:
            raise CommandError(f"audit trail broken at event #{first.event_id}: {first.reason}.", returncode=1)
        self.stdout.write(f"audit trail intact: {seen} events")
