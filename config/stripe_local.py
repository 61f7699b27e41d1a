"""A local server speaking Stripe's HTTP API, for tests and ``make run`` (no internet).

Two processes behind one URL:

* the stand-in (this module's aiohttp app) answers what localstripe does not serve:
  Connect accounts (``/v1/accounts``) with an available balance per account,
  transfers and their reversals, send-invoice invoices and invoice items
  (config/stripe_standin.py), and sends those objects' events to the registered
  webhook receivers, signed like Stripe (``Stripe-Signature: t=<time>,v1=<hmac>``);
* localstripe (started by the stand-in as its child, on 127.0.0.1) answers the rest:
  PaymentIntents, SetupIntents, PaymentMethods, customers, charges, refunds, its own
  signed webhooks and a test Stripe.js at ``/js.stripe.com/v3/``. The stand-in
  forwards those requests. localstripe rejects ``transfer_group`` on PaymentIntents,
  so the stand-in keeps it and puts it back into every PaymentIntent it returns
  (localstripe's own webhooks do not carry it).

The stand-in enforces idempotency keys on every POST authenticated with a secret key
(Stripe.js posts with a publishable key and is exempt): a POST without
``Idempotency-Key`` is refused, the same key with the same request replays the
stored answer (``Idempotent-Replayed: true``), the same key with another request is
a 400 ``idempotency_error``. Answers of 500 and above are not stored, so a retry runs
again. Real Stripe does not require the header; this server does, to catch callers
that forget it (stripe-python adds a random key to every POST on its own).

Test helpers: ``POST /_standin/accounts/{id}/balance`` (json ``{"available": int,
"currency": optional}``) sets a connected account's available balance, as if it had
been paid out; ``GET /v1/balance`` with ``Stripe-Account: acct_...`` reads it;
``GET /_standin/health`` answers once localstripe does.

localstripe is run through ``python -m config.stripe_local --run-localstripe``, which
differs from ``python -m localstripe --from-scratch`` in three ways: it listens on
127.0.0.1 only (localstripe itself binds every IPv6 and IPv4 address), it never writes
its store to /tmp/localstripe.pickle (shared by every user of the machine; nothing
reads it back when starting from scratch), and Stripe's declining test cards
(4000000000000002 and the other decline codes) decline charges as they do at Stripe
(localstripe declines them only when attached to a customer).

API for the tests and the dev server: ``start_stripe_local(workdir)`` returns a
``StripeLocal`` (``api_base``, ``js_url``, pids, ``register_webhook(url, secret)``);
``stop_stripe_local(it_or_workdir)``. The pair runs in its own process group and
exits when the process that started it is gone. No Django imports here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds
STATE_FILE = "stripe_local.json"
LOG_FILE = "stripe_local.log"
WEBHOOK_ATTEMPTS = 4  # first try and three retries, 0.5 s apart, doubling
WEBHOOK_RETRY_DELAY = 0.5
# Stripe's test cards whose charges are declined (https://docs.stripe.com/testing#declined-payments).
DECLINING_TEST_CARDS = ("4000000000000002", "4000000000009995", "4000000000009987", "4000000000009979",
                        "4000000000000069", "4000000000000127", "4000000000000119")
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
                "accept-encoding", "date", "server"}


class StripeLocalError(RuntimeError):
    """The local Stripe server could not start or stop; the message is one sentence."""


# --------------------------------------------------------------------------- request helpers


def secret_key(headers) -> str | None:
    """The secret API key of a request (``Authorization: Bearer sk_...``), or None."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme == "Bearer" and value.startswith("sk_"):
        return value
    return None


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``metadata[k]=v``, ``items[0][x]=y``) as nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node):
        if isinstance(node, dict):
            node = {k: lists(v) for k, v in node.items()}
            if node and all(k.isdigit() for k in node):
                return [node[k] for k in sorted(node, key=int)]
        return node

    return lists(root)


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        data = json.loads(body)
        return data if isinstance(data, dict) else {}
    return unflatten(parse_qsl(body.decode(), keep_blank_values=True))


def request_fingerprint(method: str, path: str, query: str, body: bytes, content_type: str) -> str:
    """Method, path and parameters, independent of their order."""
    params = parse_body(body, content_type)
    return json.dumps([method, path, sorted(parse_qsl(query, keep_blank_values=True)), params], sort_keys=True)


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header value for ``payload``."""
    mac = hmac.new(secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def webhook_id(url: str) -> str:
    return "we_" + hashlib.sha256(url.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the stand-in app


@dataclass
class StoredAnswer:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


@dataclass
class Receiver:
    url: str
    secret: str
    events: list[str] | None


def build_app(localstripe_base: str, localstripe_pid: int | None = None):
    """The stand-in: its own routes first, everything else forwarded to ``localstripe_base``."""
    from aiohttp import ClientError, ClientSession, ClientTimeout, web

    from config.stripe_standin import Standin, StripeApiError, shape

    standin = Standin()
    answers: dict[tuple[str, str], StoredAnswer] = {}
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    receivers: dict[str, Receiver] = {}
    transfer_groups: dict[str, str] = {}  # PaymentIntent id -> transfer_group
    background: set[asyncio.Task] = set()

    def error(status: int, message: str, *, code: str | None = None, type: str = "invalid_request_error"):
        exc = StripeApiError(status, message, code=code, type=type)
        return web.json_response(exc.body(), status=status)

    async def params_of(request) -> dict[str, Any]:
        try:
            return parse_body(await request.read(), request.headers.get("Content-Type", ""))
        except (ValueError, UnicodeDecodeError):
            raise StripeApiError(400, "The request body could not be parsed.") from None

    # ----------------------------------------------------------------------- middlewares

    @web.middleware
    async def stripe_errors(request, handler):
        try:
            return await handler(request)
        except StripeApiError as exc:
            return web.json_response(exc.body(), status=exc.status)

    @web.middleware
    async def idempotency(request, handler):
        api_key = secret_key(request.headers)
        if request.method != "POST" or api_key is None or request.path.startswith("/_"):
            return await handler(request)
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return error(400, "This local Stripe server requires an Idempotency-Key header on every POST made with "
                              "a secret key.", code="idempotency_key_missing")
        if len(key) > 255:
            return error(400, "Idempotency-Key must be at most 255 characters.", code="idempotency_key_invalid")
        body = await request.read()
        fingerprint = request_fingerprint(request.method, request.path, request.query_string, body,
                                          request.headers.get("Content-Type", ""))
        scope = (api_key, key)
        async with locks.setdefault(scope, asyncio.Lock()):  # a concurrent twin waits, then replays
            stored = answers.get(scope)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return error(400, "Keys for idempotent requests can only be used with the same parameters they "
                                      f"were first used with. Try using a key other than '{key}' if you meant to "
                                      "execute a different request.", type="idempotency_error")
                replay = web.Response(status=stored.status, body=stored.body, content_type=stored.content_type)
                replay.headers["Idempotent-Replayed"] = "true"
                replay.headers["Idempotency-Key"] = key
                return replay
            response = await handler(request)
            if response.status < 500:
                answers[scope] = StoredAnswer(fingerprint, response.status, response.body or b"",
                                              response.content_type)
            response.headers["Idempotency-Key"] = key
            return response

    @web.middleware
    async def own_routes_need_a_key(request, handler):
        # The routes answered here (not forwarded) want a secret key like Stripe's API.
        own = getattr(request.match_info.handler, "own_route", False)
        if own and secret_key(request.headers) is None:
            return error(401, "You did not provide a valid secret API key (Authorization: Bearer sk_...).")
        return await handler(request)

    def own(handler):
        handler.own_route = True
        return handler

    # ----------------------------------------------------------------------- events

    def send_outbox(request) -> None:
        while standin.outbox:
            event_type, obj = standin.outbox.pop(0)
            event = shape("event", id=_event_id(), created=int(time.time()), type=event_type,
                          data={"object": obj}, api_version=request.headers.get("Stripe-Version"),
                          pending_webhooks=len(receivers),
                          request={"id": None, "idempotency_key": request.headers.get("Idempotency-Key")})
            task = asyncio.ensure_future(deliver(event, list(receivers.values())))
            background.add(task)
            task.add_done_callback(background.discard)

    async def deliver(event: dict, targets: list[Receiver]) -> None:
        payload = json.dumps(event, indent=2, sort_keys=True).encode()
        for receiver in targets:
            if receiver.events is not None and event["type"] not in receiver.events:
                continue
            for attempt in range(WEBHOOK_ATTEMPTS):
                headers = {"Content-Type": "application/json; charset=utf-8",
                           "Stripe-Signature": sign(payload, receiver.secret, int(time.time()))}
                try:
                    async with app["session"].post(receiver.url, data=payload, headers=headers) as answer:
                        if 200 <= answer.status < 300:
                            break
                        outcome = f"HTTP {answer.status}"
                except (TimeoutError, ClientError) as exc:
                    outcome = str(exc) or type(exc).__name__
                print(f"stripe_local: webhook {event['type']} to {receiver.url} failed ({outcome}), attempt "
                      f"{attempt + 1} of {WEBHOOK_ATTEMPTS}", file=sys.stderr, flush=True)
                await asyncio.sleep(WEBHOOK_RETRY_DELAY * 2 ** attempt)

    def answer(request, obj: dict, status: int = 200):
        send_outbox(request)
        return web.json_response(obj, status=status)

    # ----------------------------------------------------------------------- forwarding

    async def forward(request, body: bytes | None = None) -> tuple[int, dict[str, str], bytes, str]:
        if body is None:
            body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with app["session"].request(request.method, localstripe_base + str(request.rel_url),
                                              data=body, headers=headers) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items()
                               if k.lower() not in _HOP_HEADERS and k.lower() != "content-type"}
                return upstream.status, out_headers, payload, upstream.content_type
        except (TimeoutError, ClientError) as exc:
            raise StripeApiError(502, f"localstripe did not answer ({exc or type(exc).__name__}).",
                                 type="api_error") from None

    async def lookup(request, path: str) -> dict | None:
        """GET ``path`` from localstripe with the caller's key; None if it does not exist."""
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with app["session"].get(localstripe_base + path, headers=headers) as upstream:
            if upstream.status == 404:
                return None
            if upstream.status != 200:
                raise StripeApiError(502, f"localstripe answered {upstream.status} to GET {path}.", type="api_error")
            return await upstream.json()

    def as_stripe_returns_it(obj: Any, expand_charge: bool) -> None:
        """PaymentIntents as Stripe's current API returns them: with their transfer_group,
        latest_charge an id unless expanded, no ``charges`` list (removed from the API in 2022)."""
        if isinstance(obj, dict):
            if obj.get("object") == "payment_intent":
                obj["transfer_group"] = transfer_groups.get(obj.get("id"))
                obj.pop("charges", None)
                if isinstance(obj.get("latest_charge"), dict) and not expand_charge:
                    obj["latest_charge"] = obj["latest_charge"]["id"]
            for value in obj.values():
                as_stripe_returns_it(value, expand_charge)
        elif isinstance(obj, list):
            for value in obj:
                as_stripe_returns_it(value, expand_charge)

    async def proxy(request):
        body = await request.read()
        is_payment_intent = request.path.startswith("/v1/payment_intents")
        group = None
        content_type = request.headers.get("Content-Type", "")
        if request.method == "POST" and is_payment_intent and content_type.startswith("application/x-www-form"):
            pairs = parse_qsl(body.decode(), keep_blank_values=True)
            group = next((v for k, v in pairs if k == "transfer_group"), None)
            body = urlencode([(k, v) for k, v in pairs if k != "transfer_group"]).encode()
        status, headers, payload, content_type = await forward(request, body)
        if status == 402 or is_payment_intent:
            try:
                data = json.loads(payload)
            except ValueError:
                data = None
            if isinstance(data, dict):
                if status == 402 and isinstance(data.get("error"), dict):
                    data["error"]["type"] = "card_error"  # localstripe calls every error invalid_request_error
                if group is not None and data.get("object") == "payment_intent" and status == 200:
                    transfer_groups[data["id"]] = group
                asked = request.query_string + body.decode(errors="replace")
                as_stripe_returns_it(data, expand_charge="latest_charge" in asked and "expand" in asked)
                payload = json.dumps(data, indent=2, sort_keys=True).encode()
        return web.Response(status=status, body=payload, headers=headers, content_type=content_type)

    # ----------------------------------------------------------------------- own routes

    @own
    async def create_account(request):
        return answer(request, standin.create_account(await params_of(request)))

    @own
    async def get_account(request):
        return answer(request, standin.account(request.match_info["id"]))

    @own
    async def update_account(request):
        return answer(request, standin.update_account(request.match_info["id"], await params_of(request)))

    async def balance(request):
        account = request.headers.get("Stripe-Account")
        if not account:
            return await proxy(request)
        if secret_key(request.headers) is None:
            return error(401, "You did not provide a valid secret API key (Authorization: Bearer sk_...).")
        return answer(request, standin.balance(account))

    @own
    async def create_transfer(request):
        params = await params_of(request)
        charge = None
        source = params.get("source_transaction")
        if source:
            charge = await lookup(request, f"/v1/charges/{source}") if str(source).startswith("ch_") else None
        return answer(request, standin.create_transfer(params, charge))

    @own
    async def get_transfer(request):
        return answer(request, standin.transfer(request.match_info["id"]))

    @own
    async def list_transfers(request):
        return answer(request, standin.list_transfers(dict(request.query)))

    @own
    async def reverse_transfer(request):
        return answer(request, standin.reverse_transfer(request.match_info["id"], await params_of(request)))

    @own
    async def create_invoiceitem(request):
        params = await params_of(request)
        if params.get("customer") and await lookup(request, f"/v1/customers/{params['customer']}") is None:
            raise StripeApiError(400, f"No such customer: '{params['customer']}'", code="resource_missing",
                                 param="customer")
        return answer(request, standin.create_invoiceitem(params))

    @own
    async def get_invoiceitem(request):
        return answer(request, standin.invoiceitem(request.match_info["id"]))

    async def create_invoice(request):
        params = await params_of(request)
        if params.get("collection_method") != "send_invoice":
            return await proxy(request)
        if secret_key(request.headers) is None:
            return error(401, "You did not provide a valid secret API key (Authorization: Bearer sk_...).")
        customer = await lookup(request, f"/v1/customers/{params.get('customer')}") if params.get("customer") else {}
        if customer is None:
            raise StripeApiError(400, f"No such customer: '{params['customer']}'", code="resource_missing",
                                 param="customer")
        return answer(request, standin.create_invoice(params, customer))

    def invoice_action(method_name: str | None):
        async def handler(request):
            invoice_id = request.match_info["id"]
            if invoice_id not in standin.invoices:
                return await proxy(request)
            if secret_key(request.headers) is None:
                return error(401, "You did not provide a valid secret API key (Authorization: Bearer sk_...).")
            if method_name is None:
                return answer(request, standin.invoice(invoice_id))
            return answer(request, getattr(standin, method_name)(invoice_id, await params_of(request)))
        return handler

    async def set_balance(request):
        params = await params_of(request)
        try:
            available = int(params["available"])
        except (KeyError, TypeError, ValueError):
            return error(400, 'Send json {"available": <whole number>, "currency": <optional>}.')
        return answer(request, standin.set_balance(request.match_info["id"], available, params.get("currency")))

    async def config_webhook(request):
        params = await params_of(request)
        url, secret, events = params.get("url"), params.get("secret"), params.get("events")
        if not url or not secret or not str(url).startswith("http"):
            return error(400, "A webhook needs a url (http...) and a secret.")
        receivers[request.match_info["id"]] = Receiver(url, secret, events if isinstance(events, list) else None)
        status, _, payload, content_type = await forward(request)
        return web.Response(status=status, body=payload, content_type=content_type)

    async def health(request):
        try:
            async with app["session"].get(localstripe_base + "/js.stripe.com/v3/") as upstream:
                ok = upstream.status == 200
        except (TimeoutError, ClientError):
            ok = False
        return web.json_response({"ok": ok, "pid": os.getpid(), "localstripe_pid": localstripe_pid},
                                 status=200 if ok else 503)

    # ----------------------------------------------------------------------- wiring

    async def open_session(app_):
        app_["session"] = ClientSession(timeout=ClientTimeout(total=30), auto_decompress=False)

    async def close_session(app_):
        for task in list(background):
            task.cancel()
        await app_["session"].close()

    app = web.Application(middlewares=[stripe_errors, own_routes_need_a_key, idempotency],
                          client_max_size=10 * 1024 * 1024)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    routes = [
        ("GET", "/_standin/health", health),
        ("POST", "/_standin/accounts/{id}/balance", set_balance),
        ("POST", "/_config/webhooks/{id}", config_webhook),
        ("POST", "/v1/accounts", create_account),
        ("GET", "/v1/accounts/{id}", get_account),
        ("POST", "/v1/accounts/{id}", update_account),
        ("GET", "/v1/balance", balance),
        ("POST", "/v1/transfers", create_transfer),
        ("GET", "/v1/transfers", list_transfers),
        ("GET", "/v1/transfers/{id}", get_transfer),
        ("POST", "/v1/transfers/{id}/reversals", reverse_transfer),
        ("POST", "/v1/invoiceitems", create_invoiceitem),
        ("GET", "/v1/invoiceitems/{id}", get_invoiceitem),
        ("POST", "/v1/invoices", create_invoice),
        ("GET", "/v1/invoices/{id}", invoice_action(None)),
        ("POST", "/v1/invoices/{id}/finalize", invoice_action("finalize_invoice")),
        ("POST", "/v1/invoices/{id}/send", invoice_action("send_invoice")),
        ("POST", "/v1/invoices/{id}/pay", invoice_action("pay_invoice")),
        ("POST", "/v1/invoices/{id}/void", invoice_action("void_invoice")),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/{tail:.*}", proxy)  # last: everything else goes to localstripe
    return app


def _event_id() -> str:
    from config.stripe_standin import new_id

    return new_id("evt_")


# --------------------------------------------------------------------------- processes


def _exit_with_parent() -> None:
    """SIGTERM ourselves once the process that started us is gone (a killed test run, a killed dev server)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run_localstripe(sock: socket.socket) -> None:
    """Serve localstripe on an already listening socket, adjusted as the module docstring says."""
    from aiohttp import web
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None
    declines = resources.PaymentMethod._charging_is_declined

    def charging_is_declined(self):
        return declines(self) or (self.type == "card" and self._card_number in DECLINING_TEST_CARDS)

    resources.PaymentMethod._charging_is_declined = charging_is_declined
    _exit_with_parent()
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


def serve(sock: socket.socket) -> None:
    """The stand-in on ``sock``, with localstripe as its child on another loopback port."""
    from aiohttp import web

    _exit_with_parent()
    inner = _listening_socket(HOST, 0)
    child = subprocess.Popen([sys.executable, "-m", "config.stripe_local", "--run-localstripe",
                              "--fd", str(inner.fileno())], pass_fds=[inner.fileno()], cwd=REPO)
    base = f"http://{HOST}:{inner.getsockname()[1]}"
    inner.close()

    async def stop_child(_app):
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()

    app = build_app(base, child.pid)
    app.on_cleanup.append(stop_child)
    try:
        web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
    finally:
        if child.poll() is None:
            child.kill()


@dataclass
class StripeLocal:
    """A running stand-in + localstripe pair."""

    api_base: str
    pid: int
    localstripe_pid: int | None
    workdir: Path
    webhooks: dict[str, str] = field(default_factory=dict)  # url -> secret
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def js_url(self) -> str:
        return f"{self.api_base}/js.stripe.com/v3/"

    @property
    def pids(self) -> list[int]:
        return [pid for pid in (self.pid, self.localstripe_pid) if pid]

    def register_webhook(self, url: str, secret: str, events: list[str] | None = None) -> None:
        """Send every event (or those named) to ``url``, signed with ``secret``; the same url again replaces it."""
        body = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        _post_json(f"{self.api_base}/_config/webhooks/{webhook_id(url)}", body)
        self.webhooks[url] = secret


def _post_json(url: str, body: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise StripeLocalError(f"the local Stripe server at {url} refused the request ({exc}).") from None


def _health(api_base: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{api_base}/_standin/health", timeout=2) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _our_process(pid: int) -> bool:
    try:
        return b"config.stripe_local" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        tail = [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


def start_stripe_local(workdir: Path, *, host: str = HOST, port: int = 0,
                       timeout: float = START_TIMEOUT) -> StripeLocal:
    """Start the pair on host:port (0: a free port), logging to workdir/stripe_local.log; return once it answers.
    A pair left running from workdir (a killed dev server) is stopped first."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stop_stripe_local(workdir)
    try:
        sock = _listening_socket(host, port)
    except OSError as exc:
        raise StripeLocalError(f"the local Stripe server cannot listen on {host}:{port} ({exc.strerror}).") from None
    shown = f"[{host}]" if ":" in host else host
    api_base = f"http://{shown}:{sock.getsockname()[1]}"
    log_path = workdir / LOG_FILE
    with sock, open(log_path, "ab") as log:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "config.stripe_local", "--fd", str(sock.fileno())],
                                    pass_fds=[sock.fileno()], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            raise StripeLocalError(f"the local Stripe server could not start ({exc}).") from None
    deadline = time.monotonic() + timeout
    while True:
        status = _health(api_base)
        if status and status.get("ok"):
            break
        code = proc.poll()
        if code is not None:
            raise StripeLocalError(f"the local Stripe server exited with code {code}: {_log_tail(log_path)} "
                                   f"(log: {log_path}).")
        if time.monotonic() > deadline:
            _stop_group(proc.pid, proc)
            raise StripeLocalError(f"the local Stripe server did not answer within {timeout:.0f} s "
                                   f"(log: {log_path}).")
        time.sleep(0.1)
    running = StripeLocal(api_base=api_base, pid=proc.pid, localstripe_pid=status.get("localstripe_pid"),
                          workdir=workdir, process=proc)
    (workdir / STATE_FILE).write_text(json.dumps({"api_base": api_base, "pid": proc.pid}))
    return running


def stop_stripe_local(target: StripeLocal | Path) -> bool:
    """Stop the pair (given it, or its workdir); True if one was running."""
    workdir = target.workdir if isinstance(target, StripeLocal) else Path(target)
    state_path = workdir / STATE_FILE
    pid = target.pid if isinstance(target, StripeLocal) else None
    process = target.process if isinstance(target, StripeLocal) else None
    if pid is None:
        try:
            pid = int(json.loads(state_path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
    state_path.unlink(missing_ok=True)
    if process is None and not _our_process(pid):
        return False
    _stop_group(pid, process)
    return True


def _stop_group(pid: int, process: subprocess.Popen | None = None, timeout: float = 5.0) -> None:
    """SIGTERM the pair's process group (started with its own session), SIGKILL what is left after timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None:
                if process.poll() is not None:
                    break
            elif not _our_process(pid):
                break
            time.sleep(0.05)
        else:
            continue  # still running: next signal
        break
    try:  # localstripe, in the same group, follows its parent
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.stripe_local",
                                     description="A local server speaking Stripe's HTTP API (localstripe behind a "
                                                 "stand-in for Connect, transfers and send-invoice invoices).")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--fd", type=int, help="serve on this already listening socket instead of host:port")
    parser.add_argument("--run-localstripe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else _listening_socket(args.host, args.port)
    if args.run_localstripe:
        run_localstripe(sock)
    else:
        if args.fd is None:
            print(f"stripe_local: Stripe API on http://{args.host}:{sock.getsockname()[1]}", flush=True)
        serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
