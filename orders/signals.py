"""What orders tells the apps built on it (workspaces: the delivery, its files, its grants).

orders does not import workspaces (tests/test_layering.py); it sends these signals and
workspaces/receivers.py acts on them. Each is sent with ``send`` (not ``send_robust``) from
inside the transaction that changes the order, so the receivers' work is part of that
transaction: an error in a receiver rolls the order's change back, as a direct call did.
Work that must wait for the commit (the copy task) is queued by the receiver with
transaction.on_commit.

order_released       order, acting_user
    Contract approved and money settled: the delivery starts (workspaces records it,
    grants it to the buyer and queues the copy after commit).
order_access_stopped order, reason, acting_user
    No line of the order has access any more (cancelled, or every line ended): a copy
    still running stops and the delivery's grants are taken back.
lines_access_ended   order, line_ids, reason
    These lines were refunded, revoked or reached the end of their licence: their files
    leave the workspace. Receivers return how many files they removed
    (files_removed() adds them up).
"""
from __future__ import annotations

from typing import Any

from django.dispatch import Signal

order_released = Signal()
order_access_stopped = Signal()
lines_access_ended = Signal()


def files_removed(responses: list[tuple[Any, Any]]) -> int:
    """The files removed, from lines_access_ended.send(...)'s responses."""
    return sum(result for _, result in responses if isinstance(result, int))
