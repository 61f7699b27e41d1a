"""The audit trail's hash chain: each event is chained to the one before it; a removed,
inserted or edited event is named by `manage.py audit_verify`; concurrent appenders do
not fork the chain; the migration chains events recorded before the chain existed."""
from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from marketplace.audit import GENESIS, event_hash
from marketplace.models import AuditEvent
from marketplace.services import audit_record

TRIGGER = "marketplace_auditevent_append_only"


def tamper(sql: str, params: list) -> None:  # noqa: ANN001
    """What only the owner role could do: switch the append-only trigger off and write."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE marketplace_auditevent DISABLE TRIGGER {TRIGGER}")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE marketplace_auditevent ENABLE TRIGGER {TRIGGER}")


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


@pytest.fixture
def three(db, bob):
    events = [audit_record(actor=bob, action=f"test.{i}", obj=bob, ip="2001:DB8::1",
                           detail={"n": i, "b": [1, 2], "a": "é"}) for i in range(3)]
    return events


@pytest.mark.django_db
def test_each_event_is_chained_to_the_one_before(three):
    first = AuditEvent.objects.order_by("id").first()
    assert first.prev_hash == GENESIS
    stored = list(AuditEvent.objects.order_by("id"))
    for before, after in zip(stored, stored[1:]):
        assert after.prev_hash == before.chain_hash
    for event in stored:  # what the database gives back hashes to what was stored
        assert event.chain_hash == event_hash(event, event.prev_hash)
    assert verify().strip() == f"audit trail intact: {len(stored)} events"


@pytest.mark.django_db
def test_it_names_an_edited_event(three):
    tamper("UPDATE marketplace_auditevent SET detail = '{\"n\": 99}' WHERE id = %s", [three[1].pk])
    with pytest.raises(CommandError, match=rf"broken at event #{three[1].pk}: .*edited"):
        verify()


@pytest.mark.django_db
def test_it_names_the_event_after_a_removed_one(three):
    tamper("DELETE FROM marketplace_auditevent WHERE id = %s", [three[1].pk])
    with pytest.raises(CommandError, match=rf"broken at event #{three[2].pk}: .*removed"):
        verify()


@pytest.mark.django_db(transaction=True)
def test_concurrent_appenders_do_not_fork_the_chain(bob):
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            for i in range(5):
                audit_record(actor=None, action="test.concurrent", detail={"thread": n, "i": i})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(prevs) == len(set(prevs)) >= 20  # no two events claim the same predecessor
    assert "intact" in verify()


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_events_recorded_before_the_chain(bob):
    from django.db.migrations.executor import MigrationExecutor

    for i in range(3):
        audit_record(actor=bob, action="old", obj=bob, detail={"i": i})
    tamper("UPDATE marketplace_auditevent SET prev_hash = '', chain_hash = ''", [])
    with pytest.raises(CommandError):
        verify()
    executor = MigrationExecutor(connection)
    executor.migrate([("marketplace", "0004_auditevent_chain")])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert "intact: 3 events" in verify()
