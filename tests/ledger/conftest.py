"""Ledger fixtures: providers with different platform fees, and a way to run the database's
commit-time checks inside a test's transaction.

The balance check is a deferred constraint trigger; a test's transaction is rolled back,
never committed, so ``check_now()`` makes pending checks run at once (SET CONSTRAINTS ALL
IMMEDIATE), as a commit would.
"""
from __future__ import annotations

import pytest
from django.db import connection


def check_now() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.fixture
def providers(make_member):
    """Four approved providers: the default fee (15 %), 10 %, none, and all of it."""
    from marketplace.models import Organization

    orgs = []
    for i, bps in enumerate([None, 1000, 0, 10_000]):
        _, org = make_member(f"prov{i}", f"Provider {i}", "provider")
        Organization.objects.filter(pk=org.pk).update(platform_fee_bps=bps)
        org.refresh_from_db()
        orgs.append(org)
    return orgs
