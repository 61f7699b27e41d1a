"""pytest plugin: throwaway PostgreSQL and Redis for the test run.

Loaded early with ``-p embedded_services`` (pytest.ini: ``pythonpath = . tests``,
``addopts = -p embedded_services``). At IMPORT time, before pytest-django
configures Django, it starts:

* a throwaway PostgreSQL (fsync off) if DATABASE_URL is not set, connected to as its
  owner role (DATABASE_APP_ROLE names the app role that migrate grants),
* a throwaway Redis if REDIS_URL is not set,
* and points VAR_DIR at a temp dir if VAR_DIR is not set,
* an osmem-server (an in-memory OpenSearch-compatible server from the osmem-server
  wheel) if ELASTICSEARCH_URL is not set, exported as OSMEM_URL (not as
  ELASTICSEARCH_URL: that would switch every test to the Elasticsearch backend); the
  Elasticsearch backend's tests take a clone of it per test (fixture ``search_engine``),

all under one short ``/tmp/mkt-test-*`` folder, and exports the URLs in
``os.environ`` (child processes inherit them). ``pytest_unconfigure`` stops the
servers and deletes the folder. Set DATABASE_URL / REDIS_URL to use real servers, and
ELASTICSEARCH_URL (with SEARCH_ENGINE_FLAVOUR) to run the search tests on a real
Elasticsearch or OpenSearch instead of osmem.

Also provides the session fixtures ``s3_server`` (a moto S3 server over HTTP on
127.0.0.1, yielding its endpoint URL) and ``stripe_server`` (a local server speaking
Stripe's HTTP API, config/stripe_local.py, yielding its ``StripeLocal``).

No Django imports here.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # pytest.ini's `pythonpath = .` normally does this
    sys.path.insert(0, str(_REPO))

from config.embedded import (  # noqa: E402
    APP_ROLE,
    EmbeddedServiceError,
    ensure_postgres,
    ensure_redis,
    owner_url,
    stop_postgres,
    stop_redis,
)

# What this plugin started (and must stop), filled at import time.
STARTED: dict[str, Path] = {}
_ROOT: Path | None = None
OSMEM = None  # the osmem_server.OsmemServer started here, if any


def _cleanup() -> None:
    """Stop what we started and remove the temp folder. Idempotent."""
    global _ROOT, OSMEM
    if OSMEM is not None:
        try:
            OSMEM.close()
        except Exception as exc:
            sys.stderr.write(f"embedded_services: could not stop osmem-server: {exc}\n")
        OSMEM = None
    if "postgres" in STARTED:
        try:
            stop_postgres(STARTED.pop("postgres"))
        except Exception as exc:  # never mask the test result
            sys.stderr.write(f"embedded_services: could not stop PostgreSQL: {exc}\n")
    if "redis" in STARTED:
        try:
            stop_redis(STARTED.pop("redis"))
        except Exception as exc:
            sys.stderr.write(f"embedded_services: could not stop Redis: {exc}\n")
    if _ROOT is not None:
        shutil.rmtree(_ROOT, ignore_errors=True)
        _ROOT = None


def _start_osmem() -> None:
    global OSMEM
    if os.environ.get("ELASTICSEARCH_URL"):
        return
    try:
        from osmem_server import OsmemError, OsmemServer
    except ImportError:
        raise pytest.UsageError("osmem-server is not installed: pip install -r requirements-dev.txt "
                                "(or set ELASTICSEARCH_URL to a real server)") from None
    atexit.register(_cleanup)
    try:
        # Session-wide, once; the base stays empty (each test writes to its own clone).
        OSMEM = OsmemServer.start(japanese=False)
    except OsmemError as exc:
        raise pytest.UsageError(f"{exc} (or set ELASTICSEARCH_URL to a real server)") from None
    os.environ["OSMEM_URL"] = OSMEM.url


def _start() -> None:
    global _ROOT
    _start_osmem()
    need_db = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("REDIS_URL")
    need_var = not os.environ.get("VAR_DIR")
    if not (need_db or need_redis or need_var):
        return
    _ROOT = Path(tempfile.mkdtemp(prefix="mkt-test-", dir="/tmp"))
    atexit.register(_cleanup)  # backup if pytest dies before unconfigure
    try:
        if need_var:
            var_dir = _ROOT / "var"
            var_dir.mkdir()
            os.environ["VAR_DIR"] = str(var_dir)
        if need_db:
            STARTED["postgres"] = _ROOT / "pg"
            # The test run connects as the owner role: pytest-django creates the test
            # database and transactional tests flush with TRUNCATE, both owner's rights.
            # The app role is still granted after migrate, so tests/marketplace/
            # test_database_roles.py can connect as it and prove what it may not do.
            os.environ["DATABASE_URL"] = owner_url(ensure_postgres(_ROOT / "pg", durable=False))
            os.environ.setdefault("DATABASE_APP_ROLE", APP_ROLE)
        if need_redis:
            STARTED["redis"] = _ROOT / "redis"
            os.environ["REDIS_URL"] = ensure_redis(_ROOT / "redis", durable=False)
    except EmbeddedServiceError as exc:
        _cleanup()
        raise pytest.UsageError(f"{exc} (or set DATABASE_URL / REDIS_URL to real servers)") from None


# Live-server threads and worker processes end while their connections would otherwise
# stay open, and the test database cannot be dropped while any session is connected.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# Tests run the local-development settings (http test client, no HSTS); the production
# settings are checked by tests/test_deploy_check.py (`manage.py check --deploy`).
os.environ.setdefault("DJANGO_DEBUG", "True")
_start()


def pytest_report_header(config):
    parts = []
    for name, var in (("postgres", "DATABASE_URL"), ("redis", "REDIS_URL")):
        origin = "throwaway" if name in STARTED else "from environment"
        parts.append(f"{name}: {origin} {os.environ.get(var, '')}")
    if OSMEM is not None:
        parts.append(f"search: osmem-server {OSMEM.version} {OSMEM.url}")
    else:
        parts.append(f"search: from environment {os.environ.get('ELASTICSEARCH_URL', '')}")
    return "embedded services: " + "; ".join(parts)


def pytest_unconfigure(config):
    _cleanup()


@pytest.fixture(scope="session")
def osmem_server():
    """The session's osmem-server (overrides osmem_server.pytest_plugin's, which would start
    a second one): its ``osmem_clone`` fixture clones this one."""
    if OSMEM is None:
        pytest.fail("ELASTICSEARCH_URL is set: the search tests use that server, not osmem")
    return OSMEM


@pytest.fixture
def search_engine(request, settings):
    """Points the settings at a search server of this test's own and yields (url, flavour):
    a clone of the session's osmem-server (flavour opensearch), or with ELASTICSEARCH_URL
    set, that server with a fresh index name (deleted afterwards)."""
    import uuid

    if OSMEM is not None:
        clone = OSMEM.clone()
        settings.ELASTICSEARCH_URL, settings.SEARCH_ENGINE_FLAVOUR = clone.url, "opensearch"
        settings.ELASTICSEARCH_INDEX = "test-studies"
        try:
            yield clone.url, "opensearch"
        finally:
            clone.close()
        return
    url = os.environ["ELASTICSEARCH_URL"]
    settings.ELASTICSEARCH_URL = url
    settings.SEARCH_ENGINE_FLAVOUR = os.environ.get("SEARCH_ENGINE_FLAVOUR", "elasticsearch")
    settings.ELASTICSEARCH_INDEX = f"test-studies-{uuid.uuid4().hex[:8]}"
    try:
        yield url, settings.SEARCH_ENGINE_FLAVOUR
    finally:
        from catalog.search.elastic import drop_index

        drop_index()


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server over HTTP on 127.0.0.1; yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] is not installed: pip install -r requirements-dev.txt")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stripe_server(tmp_path_factory):
    """localstripe behind our stand-in (config/stripe_local.py) on 127.0.0.1; yields its StripeLocal."""
    from config.stripe_local import StripeLocalError, start_stripe_local, stop_stripe_local

    try:
        server = start_stripe_local(tmp_path_factory.mktemp("stripe"))
    except StripeLocalError as exc:
        pytest.fail(f"could not start the local Stripe server: {exc}")
    try:
        yield server
    finally:
        stop_stripe_local(server)
