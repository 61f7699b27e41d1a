"""The audit trail's hash chain: one canonical form per event, checked end to end.

Each event stores ``prev_hash`` (the chain hash of the event before it, by id; GENESIS for
the first) and ``chain_hash`` = sha256(prev_hash + canonical JSON of the event). Editing an
event changes its hash; removing or inserting one breaks the next event's ``prev_hash``.
(Removing the newest events leaves a shorter valid chain: compare exports over time.)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
# pg_advisory_xact_lock key: "audit" in ASCII. Held until the inserting transaction ends.
CHAIN_LOCK_KEY = 0x6175646974


def canonical(*, actor_id: int | None, actor_label: str, action: str, object_type: str, object_id: str,
              ip_address: str | None, detail: Any, created: dt.datetime) -> str:
    """The event as sorted, compact JSON; ``created`` in UTC with microseconds."""
    return json.dumps({
        "actor_id": actor_id, "actor_label": actor_label, "action": action, "object_type": object_type,
        "object_id": object_id, "ip_address": ip_address, "detail": detail,
        "created": created.astimezone(dt.UTC).isoformat(timespec="microseconds"),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical_form: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical_form).encode()).hexdigest()


def event_hash(event: Any, prev_hash: str) -> str:
    """The chain hash an AuditEvent (or a row with the same attributes) should carry."""
    return chain_hash(prev_hash, canonical(
        actor_id=event.actor_id, actor_label=event.actor_label, action=event.action,
        object_type=event.object_type, object_id=event.object_id, ip_address=event.ip_address,
        detail=event.detail, created=event.created))


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str


def chain_check(events: Iterable[Any]) -> Iterator[ChainBreak]:
    """Every break in events taken in id order (the first is the one to look at)."""
    expected_prev = GENESIS
    for event in events:
        if event.prev_hash != expected_prev:
            yield ChainBreak(event.pk, "its previous hash is not the hash of the event before it "
                                       "(an event was removed, inserted or reordered before it)")
        elif event.chain_hash != event_hash(event, event.prev_hash):
            yield ChainBreak(event.pk, "its hash does not match its content (the event was edited)")
        expected_prev = event.chain_hash
