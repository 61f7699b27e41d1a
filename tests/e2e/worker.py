"""Start a real Celery worker process against the test database (no eager mode)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _database_url(settings_dict: dict) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@contextmanager
def celery_worker(settings_dict: dict, *, timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """Run `celery worker` on every queue with DATABASE_URL pointing at the test database."""
    env = dict(os.environ, DATABASE_URL=_database_url(settings_dict), PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "ingest,delivery,housekeeping",
         "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while "ready." not in Path(log.name).read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery worker did not start:\n" + Path(log.name).read_text(errors="replace"))
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        worker_log = Path(log.name).read_text(errors="replace")
        Path(log.name).unlink(missing_ok=True)
        sys.stdout.write(worker_log[-4000:])


def wait_for(predicate, *, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
