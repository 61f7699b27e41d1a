"""The application's database role cannot rewrite history (README, Database roles).

The test run connects as the owner role (it creates the test database and flushes with
TRUNCATE); these tests open a second connection to the same test database as the app
role, which `migrate` granted row access, and try what an attacker with the app's
credentials would try.
"""
from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from django.conf import settings
from django.core.management import load_command_class
from django.db import connection
from psycopg2 import errors


@pytest.fixture
def app_cursor(django_db_setup, django_db_blocker) -> Iterator[psycopg2.extensions.cursor]:  # noqa: ANN001
    db = settings.DATABASES["default"]
    if not settings.DATABASE_APP_ROLE or settings.DATABASE_APP_ROLE == db["USER"]:
        pytest.skip("no separate app role: set DATABASE_APP_ROLE to a role that is not the test user")
    conn = psycopg2.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=settings.DATABASE_APP_ROLE,
                            password=db.get("PASSWORD") or None)
    conn.autocommit = True
    cursor = conn.cursor()
    cursor.execute("SET lock_timeout = '5s'")  # a refusal must not wait for a test's lock
    try:
        yield cursor
    finally:
        conn.close()


def attempt(cursor, sql: str) -> None:  # noqa: ANN001
    cursor.execute("BEGIN")
    try:
        cursor.execute(sql)
    finally:
        cursor.execute("ROLLBACK")


def test_the_app_role_is_no_superuser_and_owns_nothing(app_cursor):
    app_cursor.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                       "WHERE rolname = current_user")
    assert app_cursor.fetchone() == (False, False, False, False)
    app_cursor.execute("SELECT count(*) FROM pg_class WHERE relowner = "
                       "(SELECT oid FROM pg_roles WHERE rolname = current_user)")
    assert app_cursor.fetchone() == (0,)


def test_the_app_role_reads_and_writes_rows_and_appends_audit_events(app_cursor):
    attempt(app_cursor, "SELECT pg_advisory_xact_lock(1); "
                        "INSERT INTO marketplace_auditevent (actor_label, action, object_type, object_id, detail, "
                        "created, prev_hash, chain_hash) VALUES ('', 'test', '', '', '{}', now(), '', '')")
    app_cursor.execute("SELECT count(*) FROM marketplace_auditevent")
    attempt(app_cursor, "UPDATE marketplace_organization SET name = name")
    attempt(app_cursor, "DELETE FROM marketplace_notification")


@pytest.mark.parametrize("sql", [
    "UPDATE marketplace_auditevent SET action = 'x'",
    "DELETE FROM marketplace_auditevent",
    "TRUNCATE marketplace_auditevent",
    "DROP TRIGGER marketplace_auditevent_append_only ON marketplace_auditevent",
    "ALTER TABLE marketplace_auditevent DISABLE TRIGGER ALL",
    "DROP TABLE marketplace_auditevent",
    "TRUNCATE catalog_dataset",
    "CREATE TABLE public.sneaky (x int)",
])
def test_the_app_role_cannot_rewrite_or_empty_the_audit_trail(app_cursor, sql):
    with pytest.raises(errors.InsufficientPrivilege):
        attempt(app_cursor, sql)


def test_migrate_runs_as_the_owner_alias_unless_told_otherwise():
    command = load_command_class("marketplace", "migrate")
    assert command.create_parser("manage.py", "migrate").parse_args([]).database == "owner"
    assert "owner" in settings.DATABASES


@pytest.mark.django_db
def test_the_owner_role_granted_the_app_role_no_more_than_select_and_insert_on_the_audit_table():
    with connection.cursor() as cursor:
        cursor.execute("SELECT privilege_type FROM information_schema.role_table_grants "
                       "WHERE table_name = 'marketplace_auditevent' AND grantee = %s ORDER BY 1",
                       [settings.DATABASE_APP_ROLE])
        assert [r[0] for r in cursor.fetchall()] == ["INSERT", "SELECT"]


_SHOW = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup(); "
         "from django.conf import settings as s; d = s.DATABASES; "
         "print(d['default']['USER'], d['owner']['USER'], s.DATABASE_APP_ROLE)")


@pytest.mark.parametrize("env, shown", [
    # make run: the dev server hands its children the embedded app URL only
    ({"DATABASE_URL": "postgres://marketplace_app@127.0.0.1:5999/marketplace"},
     "marketplace_app marketplace_owner marketplace_app"),
    # production: two URLs
    ({"DATABASE_URL": "postgres://web:pw@db:5432/m", "DATABASE_OWNER_URL": "postgres://ddl:pw2@db:5432/m"},
     "web ddl web"),
    # one role for everything (not recommended): nothing to grant
    ({"DATABASE_URL": "postgres://one:pw@db:5432/m"}, "one one one"),
])
def test_settings_pick_the_app_role_for_requests_and_the_owner_for_migrations(env, shown):
    import os
    import subprocess
    import sys
    from pathlib import Path

    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_OWNER_URL",
                                                             "DATABASE_APP_ROLE")}
    result = subprocess.run([sys.executable, "-c", _SHOW], cwd=Path(__file__).resolve().parents[2],
                            env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == shown


def test_a_fresh_database_migrates_as_the_owner_while_the_app_role_has_no_rights_yet(
        django_db_setup, django_db_blocker) -> None:  # noqa: ANN001
    """What `make run` does on a new machine: migrate (data migrations included) must use the
    owner's connection; the app role is granted row access only after it."""
    import os
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    db = settings.DATABASES["default"]
    if not settings.DATABASE_APP_ROLE or settings.DATABASE_APP_ROLE == db["USER"]:
        pytest.skip("no separate app role: set DATABASE_APP_ROLE to a role that is not the test user")
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    owner = psycopg2.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"],
                             password=db.get("PASSWORD") or None)
    owner.autocommit = True
    owner.cursor().execute(f'CREATE DATABASE "{name}"')

    def url(user: str) -> str:
        return f"postgres://{user}@{db['HOST']}:{db['PORT']}/{name}"

    try:
        env = {**os.environ, "DATABASE_URL": url(settings.DATABASE_APP_ROLE), "DATABASE_OWNER_URL": url(db["USER"])}
        root = Path(__file__).resolve().parents[2]
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        check = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c",
                                "from orders.models import DuaTemplate; print(DuaTemplate.objects.count())"],
                               cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert check.stdout.strip() == "1", check.stderr[-2000:]  # read as the app role
    finally:
        owner.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        owner.close()
