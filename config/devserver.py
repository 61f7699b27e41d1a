"""`make run`: the whole marketplace on one machine, with embedded services if needed.

    python -m config.devserver

1. VAR_DIR (default <repo>/var) is created.
2. PostgreSQL and Redis are started from wheels (config.embedded) unless
   DATABASE_URL / REDIS_URL are set; the URLs are exported to every child.
   Unless STRIPE_SECRET_KEY is set, a local server speaking Stripe's API
   (config.stripe_local, under VAR_DIR/stripe) is started too, its webhooks go to
   the web server's /payments/stripe/webhook/, and every child gets STRIPE_SECRET_KEY,
   STRIPE_PUBLISHABLE_KEY, STRIPE_WEBHOOK_SECRET (kept in VAR_DIR/stripe/webhook_secret),
   STRIPE_API_BASE and STRIPE_JS_URL pointing at it.
3. migrate, seed_demo (first start only: marker VAR_DIR/.seeded), collectstatic.
4. runserver (HOST/PORT, default 127.0.0.1:8000), one Celery worker per queue
   (WORKER_POOLS: ingest, delivery, housekeeping, each with its own concurrency)
   and Celery beat (the stuck-job sweeps) run as children.
5. A worker or beat that dies is started again after a backoff (1 s, doubling to
   30 s; reset once it ran for a minute), and the rest keep running. Work it held
   resumes through the stuck-job sweeps (settings: DELIVERY_STUCK_SECONDS).
6. On Ctrl-C / SIGTERM, or when the web server dies, all children are terminated
   and the embedded PostgreSQL and Redis are stopped (they outlive us otherwise),
   and the local Stripe server.

No Django imports: Django runs only in the children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from config import embedded, stripe_local

REPO = Path(__file__).resolve().parent.parent
# (queue, worker processes): two cores shared with the web server, so ingestion (CPU-bound
# de-identification) gets two, delivery (server-side copies, I/O) two, housekeeping one.
WORKER_POOLS = [("ingest", 2), ("delivery", 2), ("housekeeping", 1)]
RESTART_BACKOFF = (1.0, 30.0)  # first delay, cap (seconds); doubles per quick death
STABLE_AFTER = 60.0  # a child that ran this long starts again with the first delay
SEED_MARKER = ".seeded"
# Keys for the local Stripe server (it accepts any sk_/pk_ key); not secrets.
LOCAL_STRIPE_SECRET_KEY = "sk_test_local_" + "0" * 24
LOCAL_STRIPE_PUBLISHABLE_KEY = "pk_test_local_" + "0" * 24
STRIPE_WEBHOOK_PATH = "payments/stripe/webhook/"
DEMO_LOGINS = "demo_logins.txt"


class DevServerError(RuntimeError):
    """A step failed; the message is one sentence for the console."""


# --------------------------------------------------------------------------- pure logic


def var_dir_from_env(env: dict[str, str], repo: Path = REPO) -> Path:
    """VAR_DIR from the environment (relative to the repo), default <repo>/var."""
    value = env.get("VAR_DIR")
    path = Path(value) if value else repo / "var"
    return path if path.is_absolute() else (repo / path)


def embedded_plan(env: dict[str, str]) -> list[str]:
    """Which embedded services to start: those whose URL is not in the environment."""
    plan = []
    if not env.get("DATABASE_URL"):
        plan.append("postgres")
    if not env.get("REDIS_URL"):
        plan.append("redis")
    return plan


def stripe_plan(env: dict[str, str]) -> bool:
    """Start the local Stripe server (config/stripe_local.py) unless the environment names real keys."""
    return not env.get("STRIPE_SECRET_KEY")


def local_webhook_secret(var_dir: Path) -> str:
    """The local Stripe server's webhook signing secret, made once and kept in VAR_DIR across restarts."""
    path = var_dir / "stripe" / "webhook_secret"
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("whsec_" + secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def stripe_env(api_base: str, js_url: str, webhook_secret: str) -> dict[str, str]:
    """What every child needs to use the local Stripe server."""
    return {"STRIPE_SECRET_KEY": LOCAL_STRIPE_SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": LOCAL_STRIPE_PUBLISHABLE_KEY,
            "STRIPE_WEBHOOK_SECRET": webhook_secret, "STRIPE_API_BASE": api_base, "STRIPE_JS_URL": js_url}


def bind_address(env: dict[str, str]) -> tuple[str, int]:
    host = env.get("HOST") or "127.0.0.1"
    try:
        port = int(env.get("PORT") or 8000)
    except ValueError:
        raise DevServerError(f"PORT must be a number, not {env.get('PORT')!r}.") from None
    return host, port


def child_env(base: dict[str, str], urls: dict[str, str], var_dir: Path) -> dict[str, str]:
    """Environment for every child: the service URLs and VAR_DIR are set explicitly."""
    env = dict(base)
    env.update(urls)
    env["VAR_DIR"] = str(var_dir)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def needs_seed(var_dir: Path) -> bool:
    return not (var_dir / SEED_MARKER).exists()


def mark_seeded(var_dir: Path) -> None:
    (var_dir / SEED_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))


def setup_commands(python: str, seed: bool) -> list[tuple[str, list[str]]]:
    """The one-shot steps before the servers start, in order."""
    manage = [python, "manage.py"]
    steps = [("migrate", manage + ["migrate", "--noinput"])]
    if seed:
        steps.append(("seed_demo", manage + ["seed_demo"]))
    steps.append(("collectstatic", manage + ["collectstatic", "--noinput"]))
    return steps


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: list[str]
    restart: bool  # start it again when it dies (workers, beat); the web server's death stops all


def worker_command(python: str, queue: str, concurrency: int) -> list[str]:
    return [python, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-c", str(concurrency),
            "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"]


def beat_command(python: str, var_dir: Path) -> list[str]:
    return [python, "-m", "celery", "-A", "config", "beat", "-s", str(var_dir / "celerybeat-schedule"),
            "--loglevel=INFO"]


def child_commands(python: str, host: str, port: int, var_dir: Path = REPO / "var") -> list[ChildSpec]:
    """The long-running children: web server, one worker per queue, beat."""
    children = [ChildSpec("web", [python, "manage.py", "runserver", f"{host}:{port}", "--noreload"], restart=False)]
    for queue, concurrency in WORKER_POOLS:
        children.append(ChildSpec(f"worker-{queue}", worker_command(python, queue, concurrency), restart=True))
    children.append(ChildSpec("beat", beat_command(python, var_dir), restart=True))
    return children


def restart_delay(quick_deaths: int, backoff: tuple[float, float] = RESTART_BACKOFF) -> float:
    """Seconds before the next start of a child that died `quick_deaths` times in a row."""
    first, cap = backoff
    return min(cap, first * 2 ** max(0, quick_deaths - 1))


def site_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:  # IPv6 literal
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


# --------------------------------------------------------------------------- services


@dataclass
class EmbeddedServices:
    """Embedded PostgreSQL / Redis under var_dir; remembers what it must stop."""

    var_dir: Path
    started: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    stripe: stripe_local.StripeLocal | None = None

    def start(self, plan: list[str]) -> dict[str, str]:
        urls = {}
        if "postgres" in plan:
            self.started.append("postgres")
            urls["DATABASE_URL"] = embedded.ensure_postgres(self.var_dir / "postgres")
            self._remember("postgres", embedded.postgres_pid(self.var_dir / "postgres"))
        if "redis" in plan:
            self.started.append("redis")
            urls["REDIS_URL"] = embedded.ensure_redis(self.var_dir / "redis")
            self._remember("redis", embedded.redis_pid(self.var_dir / "redis"))
        return urls

    def start_stripe(self, webhook_url: str) -> dict[str, str]:
        """The local Stripe server under var_dir/stripe, sending its webhooks to webhook_url; its settings."""
        self.started.append("stripe")
        self.stripe = stripe_local.start_stripe_local(self.var_dir / "stripe")
        secret = local_webhook_secret(self.var_dir)
        self.stripe.register_webhook(webhook_url, secret)
        return stripe_env(self.stripe.api_base, self.stripe.js_url, secret)

    def _remember(self, name: str, pid: int | None) -> None:
        if pid:
            self.pids[name] = pid

    def stop(self) -> None:
        while self.started:
            name = self.started.pop()
            if name == "stripe":
                if self.stripe is not None:
                    stripe_local.stop_stripe_local(self.stripe)
                    self.stripe = None
                continue
            try:
                if name == "postgres":
                    embedded.stop_postgres(self.var_dir / "postgres")
                else:
                    embedded.stop_redis(self.var_dir / "redis")
            except Exception as exc:  # keep stopping the others
                log(f"could not stop embedded {name} cleanly: {exc}")
            # If var/ was deleted meanwhile, the data dir no longer names the server:
            # fall back to the pid we saw at start.
            pid = self.pids.pop(name, None)
            prefix = "postgres" if name == "postgres" else "redis-server"
            sig = signal.SIGQUIT if name == "postgres" else signal.SIGTERM
            if pid and embedded.kill_process(pid, prefix, sig):
                log(f"embedded {name} (pid {pid}) had lost its data dir; killed it.")


# --------------------------------------------------------------------------- processes


def log(message: str) -> None:
    print(f"devserver: {message}", file=sys.stderr, flush=True)


def run_step(name: str, argv: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
    log(f"{name} ...")
    try:
        code = subprocess.run(argv, env=env, cwd=cwd).returncode
    except OSError as exc:
        raise DevServerError(f"{name} could not start ({exc}).") from None
    if code != 0:
        raise DevServerError(f"{name} failed with exit code {code}: see its output above.")


class Supervisor:
    """Runs children in their own process groups; restarts the restartable ones when they
    die (with backoff, logged); stops them all together."""

    def __init__(self, env: dict[str, str], cwd: Path = REPO, backoff: tuple[float, float] = RESTART_BACKOFF,
                 stable_after: float = STABLE_AFTER):
        self.env = env
        self.cwd = cwd
        self.backoff = backoff
        self.stable_after = stable_after
        self.children: dict[str, subprocess.Popen] = {}
        self.specs: dict[str, ChildSpec] = {}
        self.started_at: dict[str, float] = {}
        self.quick_deaths: dict[str, int] = {}
        self.pending: dict[str, float] = {}  # name -> monotonic time of its next start
        self.stop_requested: str | None = None

    def start(self, name: str, argv: list[str], restart: bool = False) -> subprocess.Popen:
        self.specs[name] = ChildSpec(name, argv, restart)
        try:
            proc = subprocess.Popen(argv, env=self.env, cwd=self.cwd, start_new_session=True)
        except OSError as exc:
            raise DevServerError(f"{name} could not start ({exc}).") from None
        self.children[name] = proc
        self.started_at[name] = time.monotonic()
        return proc

    def dead_child(self) -> tuple[str, int] | None:
        """A child that died and will not be started again."""
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None and not self.specs[name].restart:
                return name, code
        return None

    def check(self) -> str | None:
        """One supervision pass: schedule restarts of dead restartable children, start those
        whose backoff is over; the reason to stop everything, or None."""
        now = time.monotonic()
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is None or name in self.pending:
                continue
            if not self.specs[name].restart:
                return f"{name} exited with code {code}"
            # The main process is gone; its pool processes may not be: clear the group.
            _signal_group(proc, signal.SIGKILL)
            ran = now - self.started_at[name]
            self.quick_deaths[name] = 1 if ran >= self.stable_after else self.quick_deaths.get(name, 0) + 1
            delay = restart_delay(self.quick_deaths[name], self.backoff)
            self.pending[name] = now + delay
            log(f"{name} (pid {proc.pid}) exited with code {code} after {ran:.0f} s; starting it again in {delay:.0f} s")
        for name, when in list(self.pending.items()):
            if when <= now and not self.stop_requested:
                del self.pending[name]
                spec = self.specs[name]
                proc = self.start(name, spec.argv, spec.restart)
                log(f"{name} started again (pid {proc.pid})")
        return None

    def request_stop(self, signum, _frame=None) -> None:
        self.stop_requested = signal.Signals(signum).name

    def wait(self, poll: float = 0.2) -> str:
        """Supervise until a stop is requested or a child that is not restarted exits; returns the reason."""
        while True:
            if self.stop_requested:
                return f"received {self.stop_requested}"
            reason = self.check()
            if reason:
                return reason
            time.sleep(poll)

    def wait_for_port(self, host: str, port: int, timeout: float = 60) -> bool:
        """True once host:port accepts connections; False on timeout, stop or a dead child."""
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested and not self.dead_child():
            try:
                with socket.create_connection((connect_host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.2)
        return False

    def terminate_all(self, timeout: float = 10) -> None:
        """SIGTERM every child's process group, then SIGKILL what is left after timeout."""
        self.pending.clear()
        for proc in self.children.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.children.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.children.values():
            # also the group: celery pool processes, runserver's helpers
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    python = sys.executable
    var_dir = var_dir_from_env(env)
    services = EmbeddedServices(var_dir)
    supervisor = Supervisor(env)

    def _interrupt(signum, frame):
        supervisor.request_stop(signum)
        if not supervisor.children:  # still in setup: unwind now
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        host, port = bind_address(env)
        var_dir.mkdir(parents=True, exist_ok=True)
        plan = embedded_plan(env)
        if plan:
            log(f"starting embedded {' and '.join(plan)} in {var_dir} ...")
        urls = services.start(plan)
        if stripe_plan(env):
            log(f"starting the local Stripe server in {var_dir / 'stripe'} ...")
            urls.update(services.start_stripe(site_url(host, port) + STRIPE_WEBHOOK_PATH))
        supervisor.env = child_env(env, urls, var_dir)

        seed = needs_seed(var_dir)
        for name, step in setup_commands(python, seed):
            run_step(name, step, supervisor.env)
            if name == "seed_demo":
                mark_seeded(var_dir)

        for child in child_commands(python, host, port, var_dir):
            supervisor.start(child.name, child.argv, child.restart)
        if supervisor.wait_for_port(host, port):
            logins = var_dir / DEMO_LOGINS
            print(
                f"\n  Marketplace running at {site_url(host, port)}\n"
                f"  Demo logins: {logins}{'' if logins.exists() else ' (not written yet)'}\n"
                "  Press Ctrl-C to stop.\n",
                flush=True,
            )
        reason = supervisor.wait()
        log(f"stopping ({reason}) ...")
        return 0 if reason.startswith("received") else 1
    except (DevServerError, embedded.EmbeddedServiceError, stripe_local.StripeLocalError) as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        log("interrupted, stopping ...")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.terminate_all()
        services.stop()
        log("stopped.")


if __name__ == "__main__":
    sys.exit(main())
