"""What the application's database role may do (README "Database roles").

After every migrate the owner role grants the app role (settings.DATABASE_APP_ROLE) row
access to every table and sequence of the schema, and takes back UPDATE and DELETE on the
append-only tables (the audit trail, the ledger and the electronic signatures). TRUNCATE,
triggers, DDL and ownership are never granted: only the owner could empty them or drop
their append-only triggers.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

AUDIT_TABLE = "marketplace_auditevent"
# Tables the application may read and add rows to, nothing else.
APPEND_ONLY_TABLES = (AUDIT_TABLE, "ledger_ledgeraccount", "ledger_ledgertransaction", "ledger_ledgerentry",
                      "orders_signature")


class DatabaseRoleError(RuntimeError):
    pass


def app_role_grant(*, using: str) -> bool:
    """Grant the app role its rights on the database of ``using`` (run as the owner).

    Returns False when there is nothing to grant: the app role is the connecting role
    itself (one role for everything, e.g. DATABASE_OWNER_URL unset). Idempotent.
    """
    role = settings.DATABASE_APP_ROLE
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        current = cursor.fetchone()[0]
        if not role or role == current:
            return False
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            raise DatabaseRoleError(f"the database role {role!r} named by DATABASE_URL / DATABASE_APP_ROLE "
                                    "does not exist: create it (README, Database roles).")
        name = connection.ops.quote_name(role)
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
        # Append-only for the application: reading and adding rows is all it may do.
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)",
                       [list(APPEND_ONLY_TABLES)])
        for (table,) in cursor.fetchall():
            table = connection.ops.quote_name(table)
            cursor.execute(f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {table} FROM {name}")
    logger.info("granted row access to database role %s", role)
    return True


def grant_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """post_migrate receiver (marketplace's, sent once every app's migrations ran)."""
    app_role_grant(using=using)
