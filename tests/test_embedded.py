"""Embedded PostgreSQL / Redis (config.embedded), the pytest plugin and devserver logic.

No Django needed: run with `pytest tests/test_embedded.py -p no:django`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from config import devserver, embedded  # noqa: E402
from config.embedded import (  # noqa: E402
    EmbeddedServiceError,
    ensure_postgres,
    ensure_redis,
    postgres_port,
    redis_port,
    stop_postgres,
    stop_redis,
)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


@pytest.fixture
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="mkt-emb-", dir="/tmp"))
    yield path
    # Never leave a server behind, whatever the test did.
    for sub in path.iterdir() if path.exists() else []:
        if (sub / "PG_VERSION").exists():
            stop_postgres(sub)
        if (sub / "redis.pid").exists():
            stop_redis(sub)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_start_query_reuse_restart_stop(short_tmp):
    import psycopg2

    data = short_tmp / "pg"
    url, cold = timed(ensure_postgres, data, durable=False)
    parsed = urlparse(url)
    assert parsed.scheme == "postgres"
    assert parsed.hostname == "127.0.0.1"
    assert parsed.path == "/marketplace"
    assert parsed.username == "postgres"
    port = parsed.port
    assert port_open(port)
    assert postgres_port(data) == port

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1, current_database()")
        assert cur.fetchone() == (1, "marketplace")
        cur.execute("CREATE TABLE kept (x int)")
        cur.execute("INSERT INTO kept VALUES (42)")
    conn.close()

    # Warm reuse: same URL, fast (best of three, to ride out a busy machine).
    warm = []
    for _ in range(3):
        again, elapsed = timed(ensure_postgres, data, durable=False)
        assert again == url
        warm.append(elapsed)
    assert min(warm) < 0.1, f"warm ensure_postgres took {min(warm):.3f}s (cold {cold:.2f}s)"

    assert stop_postgres(data) is True
    assert not port_open(port)
    assert postgres_port(data) is None
    assert stop_postgres(data) is False  # idempotent

    # Restart on the same data dir keeps the data.
    url2 = ensure_postgres(data, durable=False)
    with psycopg2.connect(url2) as conn, conn.cursor() as cur:
        cur.execute("SELECT x FROM kept")
        assert cur.fetchone() == (42,)
    conn.close()
    stop_postgres(data)
    assert not port_open(urlparse(url2).port)


def test_postgres_concurrent_cold_start_gives_one_server(short_tmp):
    data = short_tmp / "pg"
    code = (
        "import sys; from pathlib import Path; from config.embedded import ensure_postgres; "
        f"print(ensure_postgres(Path({str(data)!r}), durable=False))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    urls = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(urls) == 1, urls
    port = urlparse(urls.pop()).port
    assert port_open(port)
    assert stop_postgres(data)
    assert not port_open(port)


def test_postgres_refuses_foreign_non_empty_dir(short_tmp):
    data = short_tmp / "pg"
    data.mkdir()
    (data / "someone-elses-file.txt").write_text("hello")
    with pytest.raises(EmbeddedServiceError) as info:
        ensure_postgres(data)
    message = str(info.value)
    assert "not empty" in message and "\n" not in message
    assert (data / "someone-elses-file.txt").read_text() == "hello"


def test_postgres_missing_wheel_is_one_sentence(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedServiceError, match=r"embedded PostgreSQL is not installed.*DATABASE_URL"):
        ensure_postgres(Path("/tmp/does-not-matter"))
    with pytest.raises(EmbeddedServiceError, match=r"embedded Redis is not installed.*REDIS_URL"):
        ensure_redis(Path("/tmp/does-not-matter"))


# --------------------------------------------------------------------------- Redis


def test_redis_start_set_get_reuse_stop(short_tmp):
    import redis

    data = short_tmp / "redis"
    url = ensure_redis(data)
    parsed = urlparse(url)
    assert (parsed.scheme, parsed.hostname, parsed.path) == ("redis", "127.0.0.1", "/0")
    port = parsed.port
    client = redis.Redis.from_url(url)
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    client.close()

    again, elapsed = timed(ensure_redis, data)
    assert again == url
    assert elapsed < 0.1
    assert redis_port(data) == port
    assert (data / "redis.pid").exists()

    assert stop_redis(data) is True
    assert not port_open(port)
    assert redis_port(data) is None
    assert stop_redis(data) is False

    # durable by default: the key survives a restart (AOF in data_dir)
    url2 = ensure_redis(data)
    client = redis.Redis.from_url(url2)
    assert client.get("greeting") == b"hello"
    client.close()
    assert stop_redis(data)


# --------------------------------------------------------------------------- pytest plugin


def test_plugin_starts_throwaway_services_and_cleans_up(tmp_path):
    """Run pytest in a subprocess with -p embedded_services and no service URLs."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import os
        from pathlib import Path

        def test_env():
            import psycopg2, redis
            conn = psycopg2.connect(os.environ["DATABASE_URL"])
            conn.cursor().execute("SELECT 1")
            conn.close()
            r = redis.Redis.from_url(os.environ["REDIS_URL"])
            assert r.ping()
            r.close()
            assert Path(os.environ["VAR_DIR"]).is_dir()
            Path(os.environ["REPORT"]).write_text(
                "\\n".join([os.environ["DATABASE_URL"], os.environ["REDIS_URL"], os.environ["VAR_DIR"]]))

        def test_s3(s3_server):
            import boto3
            s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
            s3.create_bucket(Bucket="mkt-bucket")
            s3.put_object(Bucket="mkt-bucket", Key="k", Body=b"v")
            assert s3.get_object(Bucket="mkt-bucket", Key="k")["Body"].read() == b"v"
    """))
    report = tmp_path / "report.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VAR_DIR")}
    env["REPORT"] = str(report)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "embedded_services", "-p", "no:django",
         "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    db_url, redis_url, var_dir = report.read_text().splitlines()
    assert db_url.startswith("postgres://postgres@127.0.0.1:") and db_url.endswith("/marketplace")
    assert var_dir.startswith("/tmp/mkt-test-")
    # pytest_unconfigure stopped both servers and removed the temp folder
    assert not port_open(urlparse(db_url).port)
    assert not port_open(urlparse(redis_url).port)
    assert not Path(var_dir).parent.exists()


# --------------------------------------------------------------------------- devserver logic


def test_devserver_child_commands():
    children = {c.name: c for c in devserver.child_commands("/py", "0.0.0.0", 8123, Path("/v"))}
    assert children["web"].argv == ["/py", "manage.py", "runserver", "0.0.0.0:8123", "--noreload"]
    assert not children["web"].restart
    assert set(children) == {"web", "worker-ingest", "worker-delivery", "worker-housekeeping", "beat"}
    for queue, concurrency in (("ingest", "2"), ("delivery", "2"), ("housekeeping", "1")):
        argv = children[f"worker-{queue}"].argv
        assert argv[:6] == ["/py", "-m", "celery", "-A", "config", "worker"] and children[f"worker-{queue}"].restart
        assert argv[argv.index("-Q") + 1] == queue and argv[argv.index("-c") + 1] == concurrency
    assert children["beat"].argv[5] == "beat" and "/v/celerybeat-schedule" in children["beat"].argv
    assert children["beat"].restart


def test_devserver_restart_backoff_doubles_up_to_a_cap():
    assert [devserver.restart_delay(n, (1, 30)) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 2, 4, 8, 16, 30, 30]


def test_supervisor_restarts_a_dead_worker_and_keeps_the_others(tmp_path, capsys):
    sup = devserver.Supervisor(dict(os.environ), cwd=tmp_path, backoff=(0.2, 1.0))
    web = sup.start("web", ["sleep", "300"])
    worker = sup.start("worker", ["sh", "-c", "sleep 300 & wait"], restart=True)
    os.killpg(worker.pid, signal.SIGKILL)  # the whole worker: main process and children
    deadline = time.monotonic() + 10
    while sup.children["worker"].pid == worker.pid or sup.children["worker"].poll() is not None:
        assert sup.check() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert web.poll() is None
    err = capsys.readouterr().err
    assert f"worker (pid {worker.pid}) exited with code -9" in err and "worker started again" in err
    # dies again at once: the next start waits longer
    os.killpg(sup.children["worker"].pid, signal.SIGKILL)
    sup.children["worker"].wait()
    assert sup.check() is None
    assert sup.pending["worker"] - time.monotonic() > 0.25
    sup.terminate_all(timeout=5)
    assert web.poll() is not None


def test_supervisor_stops_everyone_when_the_web_server_dies(tmp_path):
    sup = devserver.Supervisor(dict(os.environ), cwd=tmp_path)
    sup.start("worker", ["sleep", "300"], restart=True)
    sup.start("web", [sys.executable, "-c", "import sys; sys.exit(4)"])
    assert sup.wait(poll=0.05) == "web exited with code 4"
    sup.terminate_all(timeout=5)
    assert sup.children["worker"].poll() is not None


def test_devserver_setup_commands_seed_only_first_time(tmp_path):
    first = [name for name, _ in devserver.setup_commands("/py", devserver.needs_seed(tmp_path))]
    assert first == ["migrate", "seed_demo", "collectstatic"]
    devserver.mark_seeded(tmp_path)
    later = [name for name, _ in devserver.setup_commands("/py", devserver.needs_seed(tmp_path))]
    assert later == ["migrate", "collectstatic"]
    steps = dict(devserver.setup_commands("/py", False))
    assert steps["migrate"] == ["/py", "manage.py", "migrate", "--noinput"]
    assert steps["collectstatic"] == ["/py", "manage.py", "collectstatic", "--noinput"]


def test_devserver_environment_logic(tmp_path):
    assert devserver.embedded_plan({}) == ["postgres", "redis"]
    assert devserver.embedded_plan({"DATABASE_URL": "postgres://x/y"}) == ["redis"]
    assert devserver.embedded_plan({"DATABASE_URL": "a", "REDIS_URL": "b"}) == []
    assert devserver.var_dir_from_env({}, repo=Path("/r")) == Path("/r/var")
    assert devserver.var_dir_from_env({"VAR_DIR": "x"}, repo=Path("/r")) == Path("/r/x")
    assert devserver.var_dir_from_env({"VAR_DIR": "/abs"}, repo=Path("/r")) == Path("/abs")
    assert devserver.bind_address({}) == ("127.0.0.1", 8000)
    assert devserver.bind_address({"HOST": "0.0.0.0", "PORT": "9000"}) == ("0.0.0.0", 9000)
    with pytest.raises(devserver.DevServerError):
        devserver.bind_address({"PORT": "eighty"})
    env = devserver.child_env({"PATH": "/bin"}, {"DATABASE_URL": "postgres://d"}, tmp_path)
    assert env["DATABASE_URL"] == "postgres://d" and env["VAR_DIR"] == str(tmp_path)
    assert env["PATH"] == "/bin" and env["DJANGO_SETTINGS_MODULE"] == "config.settings"
    assert devserver.site_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"


def test_supervisor_stops_everyone_when_one_child_dies(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    sup = devserver.Supervisor(dict(os.environ), cwd=tmp_path)
    # a long-lived child that also has a grandchild in its process group
    sup.start("long", ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"])
    sup.start("short", [sys.executable, "-c", "import time, sys; time.sleep(0.5); sys.exit(3)"])
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())

    assert sup.wait(poll=0.05) == "short exited with code 3"
    sup.terminate_all(timeout=5)
    assert sup.children["long"].poll() is not None
    time.sleep(0.1)
    assert not embedded._pid_alive(grandchild, "sleep")  # gone or a zombie


def test_supervisor_stop_request():
    sup = devserver.Supervisor(dict(os.environ))
    sup.start("sleeper", ["sleep", "300"])
    sup.request_stop(signal.SIGTERM)
    assert sup.wait(poll=0.01) == "received SIGTERM"
    sup.terminate_all(timeout=5)
    assert sup.children["sleeper"].returncode == -signal.SIGTERM


def test_devserver_services_stop_even_if_var_dir_was_deleted(short_tmp):
    services = devserver.EmbeddedServices(short_tmp / "var")
    urls = services.start(["postgres", "redis"])
    pg_port = urlparse(urls["DATABASE_URL"]).port
    redis_port_ = urlparse(urls["REDIS_URL"]).port
    pids = dict(services.pids)
    assert set(pids) == {"postgres", "redis"}
    shutil.rmtree(short_tmp / "var")  # `rm -rf var` while running
    services.stop()
    assert not port_open(pg_port) and not port_open(redis_port_)
    assert not embedded._pid_alive(pids["postgres"], "postgres")
    assert not embedded._pid_alive(pids["redis"], "redis-server")
