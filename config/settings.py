"""Settings for the medical imaging data marketplace.

One module, every value from the environment. Where a service's setting is absent the
embedded default is started (a real PostgreSQL / Redis from wheels, a local folder for
object storage), so `make run` works on a bare machine.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def env_secret(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker secrets)."""
    file_path = env.str(f"{name}_FILE", default="")
    if file_path:
        return Path(file_path).read_text().strip()
    return env.str(name, default=default)


def _fail(sentence: str) -> None:
    # A missing requirement stops start-up with one clear sentence, never a traceback.
    sys.stderr.write(f"configuration error: {sentence}\n")
    raise SystemExit(2)


def env_bool(name: str, default: bool) -> bool:
    """True or False (any case); anything else stops start-up naming the setting."""
    raw = env.str(name, default=str(default)).strip().lower()
    if raw not in ("true", "false"):
        _fail(f"{name} must be True or False (got {raw[:20]!r}).")
    return raw == "true"


def _local_secret_key(path: Path) -> str:
    """Local development only: a random key made once and kept in VAR_DIR (never in the code)."""
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A whole number in [minimum, maximum]; anything else stops start-up naming the setting."""
    raw = env.str(name, default=str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        _fail(f"{name} must be a whole number from {minimum} to {maximum} (got {raw[:40]!r}).")
    return value


def env_countries(name: str, default: str = "") -> frozenset[str]:
    """Comma-separated ISO 3166 alpha-2 codes (any case); an unknown code stops start-up."""
    from marketplace.countries import COUNTRIES

    codes = {part.strip().upper() for part in env.str(name, default=default).split(",") if part.strip()}
    unknown = sorted(code for code in codes if code not in COUNTRIES)
    if unknown:
        _fail(f"{name} must list ISO 3166 country codes separated by commas (unknown: {', '.join(unknown)[:80]}).")
    return frozenset(codes)


def env_rate(name: str, default: str) -> str:
    """A rate such as "60/hour" (per second, minute, hour or day)."""
    raw = env.str(name, default=default).strip()
    if not re.fullmatch(r"[1-9][0-9]{0,6}/(second|minute|hour|day)", raw):
        _fail(f"{name} must be a number of requests per second, minute, hour or day, e.g. {default} "
              f"(got {raw[:40]!r}).")
    return raw


VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

# --- Django core -------------------------------------------------------------------------
# Production unless DJANGO_DEBUG=True (`make run` and the tests set it for local use).
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        _fail("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set unless DJANGO_DEBUG=True.")
    SECRET_KEY = _local_secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "csp",
    "marketplace",
    "catalog",
    "orders",
    "orders.ledger",
    "workspaces",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Before NotFoundErrorMiddleware, whose process_exception then runs first.
    "marketplace.error_pages.BrandedErrorPagesMiddleware",
    "marketplace.middleware.NotFoundErrorMiddleware",
]
# With DEBUG=True too, people see the branded error pages, never a traceback (which the
# server log keeps): marketplace/error_pages.py.
DEFAULT_EXCEPTION_REPORTER = "marketplace.error_pages.BrandedExceptionReporter"
CSRF_FAILURE_VIEW = "marketplace.error_pages.csrf_failure"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
AUTH_USER_MODEL = "marketplace.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "marketplace.context_processors.roles",
            ],
        },
    },
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Uploads stream to quarantine storage; keep request bodies on disk, not in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 2000
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Security: what `manage.py check --deploy` asks for, on unless DJANGO_DEBUG=True ------
# Behind a TLS-terminating proxy set DJANGO_BEHIND_TLS_PROXY=True (it must set
# X-Forwarded-Proto and strip it from clients).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content Security Policy (django-csp): scripts only from our own origin (no inline
# scripts or handlers); inline style attributes are allowed for the bar widths.
from csp.constants import NONE, SELF, UNSAFE_INLINE  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF], "script-src": [SELF], "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"], "connect-src": [SELF], "font-src": [SELF],
        "object-src": [NONE], "base-uri": [SELF], "form-action": [SELF], "frame-ancestors": [NONE],
    },
}

# --- Database ----------------------------------------------------------------------------
# Two roles (README "Database roles"): requests and workers connect as DATABASE_URL, a role
# that may read and write rows but owns nothing, so it cannot truncate the audit trail or
# drop its trigger; `manage.py migrate` connects as DATABASE_OWNER_URL (alias "owner"),
# the role that owns the tables. Without DATABASE_OWNER_URL both are the one DATABASE_URL.
# The embedded server (no DATABASE_URL) has both roles; its owner URL follows from the
# app URL, so a child given only DATABASE_URL (make run) migrates as the owner too.
from config.embedded import owner_url as _embedded_owner_url  # noqa: E402

_database_url = env.str("DATABASE_URL", default="")
if not _database_url:
    from config.embedded import EmbeddedServiceError, ensure_postgres

    try:
        _database_url = ensure_postgres(VAR_DIR / "postgres")
    except EmbeddedServiceError as exc:
        _fail(str(exc))
_owner_database_url = (env.str("DATABASE_OWNER_URL", default="") or _embedded_owner_url(_database_url)
                       or _database_url)
DATABASES = {"default": env.db_url_config(_database_url), "owner": env.db_url_config(_owner_database_url)}
for _alias in DATABASES.values():
    _alias["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    _alias["ENGINE"] = "django.db.backends.postgresql"
# The role granted row access after every migrate: the default alias's user, unless named
# (the test run connects as the owner, so its flushes may TRUNCATE, and names the app role).
DATABASE_APP_ROLE = env.str("DATABASE_APP_ROLE", default="") or DATABASES["default"].get("USER", "")

# --- Celery / Redis ----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if not REDIS_URL:
    from config.embedded import EmbeddedServiceError, ensure_redis

    try:
        REDIS_URL = ensure_redis(VAR_DIR / "redis")
    except EmbeddedServiceError as exc:
        _fail(str(exc))

CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A killed worker must not lose a task (Celery acknowledges early by default): acknowledge
# late, requeue on loss.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "housekeeping"
# Three queues, each served by its own worker pool (config/devserver.py, docker-compose.yml):
# ingest (de-identification, CPU), delivery (copies, I/O), housekeeping (beat jobs, stats,
# notifications). Exact names are matched before patterns.
CELERY_TASK_ROUTES = {
    "catalog.tasks.upload_batch_ingest_task": {"queue": "ingest"},
    "catalog.tasks.upload_files_ingest_task": {"queue": "ingest"},
    "catalog.tasks.*": {"queue": "housekeeping"},
    "workspaces.tasks.delivery_run_task": {"queue": "delivery"},
    "workspaces.tasks.*": {"queue": "housekeeping"},
    "orders.tasks.*": {"queue": "housekeeping"},
    "marketplace.tasks.*": {"queue": "housekeeping"},
}
# (soft, hard) time limits in seconds for every task of a queue (config/celery.py applies
# them). Ingest: one chunk of INGEST_CHUNK_FILES files, each decode capped at
# DEID_DECODE_TIMEOUT_SECONDS, or one archive expansion. Delivery: one time slice; a
# delivery that reaches its soft limit re-queues itself and continues where it stopped.
CELERY_QUEUE_TIME_LIMITS = {
    "ingest": (env_int("INGEST_SOFT_TIME_LIMIT", 900, minimum=10, maximum=86400),
               env_int("INGEST_TIME_LIMIT", 960, minimum=20, maximum=86400)),
    "delivery": (env_int("DELIVERY_SOFT_TIME_LIMIT", 600, minimum=10, maximum=86400),
                 env_int("DELIVERY_TIME_LIMIT", 660, minimum=20, maximum=86400)),
    "housekeeping": (env_int("HOUSEKEEPING_SOFT_TIME_LIMIT", 120, minimum=10, maximum=86400),
                     env_int("HOUSEKEEPING_TIME_LIMIT", 150, minimum=20, maximum=86400)),
}
for _queue, (_soft, _hard) in CELERY_QUEUE_TIME_LIMITS.items():
    if _soft >= _hard:
        _fail(f"The soft time limit of the {_queue} queue must be below its hard limit ({_soft} >= {_hard}).")
# Redis hands an unacknowledged task to another worker only after visibility_timeout: it
# must outlast the longest task, or a task still running is started a second time. Work
# whose worker died is picked up sooner by the stuck-job sweeps below (beat), not by this.
# The restore sweep runs every 5 s instead of every 10 s x 10 calls (a whole-worker kill took 106 s to recover with the defaults).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": max(hard for _soft, hard in CELERY_QUEUE_TIME_LIMITS.values()) + 60,
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_QUEUE_TIME_LIMITS["housekeeping"][0]  # tasks outside any route
CELERY_TASK_TIME_LIMIT = CELERY_QUEUE_TIME_LIMITS["housekeeping"][1]
# Periodic jobs (celery beat, one process: `make run` and docker-compose start it). Sent by
# name: beat imports no task module, and a name no worker knows is logged and dropped by
# the worker (catalog.tasks.upload_batches_recover_stuck_task arrives with its own branch).
# `expires`: a sweep nobody ran in time is skipped, never piled up.
from celery.schedules import crontab as _crontab  # noqa: E402

STUCK_SWEEP_SECONDS = env_int("STUCK_SWEEP_SECONDS", 15, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE = {
    "deliveries-recover-stuck": {
        "task": "workspaces.tasks.deliveries_recover_stuck_task",
        "schedule": float(STUCK_SWEEP_SECONDS),
        "options": {"queue": "housekeeping", "expires": STUCK_SWEEP_SECONDS},
    },
    "upload-batches-recover-stuck": {
        "task": "catalog.tasks.upload_batches_recover_stuck_task",
        "schedule": 60.0,
        "options": {"queue": "housekeeping", "expires": 60},
    },
    "provider-transfers-retry": {
        "task": "orders.tasks.providers_retry_failed_task",
        "schedule": 600.0,
        "options": {"queue": "housekeeping", "expires": 600},
    },
    # Daily (UTC): licence terms that ended lose their access, and buyers hear 30 and 7 days
    # before the end. A skipped run loses nothing: the next one takes every line due by then.
    "entitlements-expire": {
        "task": "orders.tasks.entitlements_expire_task",
        "schedule": _crontab(hour=2, minute=0),
        "options": {"queue": "housekeeping", "expires": 6 * 3600},
    },
    "entitlements-remind": {
        "task": "orders.tasks.entitlements_remind_task",
        "schedule": _crontab(hour=2, minute=30),
        "options": {"queue": "housekeeping", "expires": 6 * 3600},
    },
    # Outgoing webhooks whose retry is due (marketplace/webhooks.py): each send after an
    # event is queued at once; this sweep takes the retries and anything a lost task left.
    "webhook-deliveries-sweep": {
        "task": "marketplace.tasks.webhook_deliveries_sweep_task",
        "schedule": 60.0,
        "options": {"queue": "housekeeping", "expires": 60},
    },
    # Offers past their expiry are marked expired (pages also mark them when read).
    "offers-expire": {
        "task": "orders.tasks.offers_expire_task",
        "schedule": 900.0,
        "options": {"queue": "housekeeping", "expires": 900},
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Object storage ----------------------------------------------------------------------
S3_BUCKET = env.str("S3_BUCKET", default="")
if S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "access_key": env_secret("S3_ACCESS_KEY_ID") or None,
            "secret_key": env_secret("S3_SECRET_ACCESS_KEY") or None,
            "region_name": env.str("S3_REGION", default="us-east-1"),
            # django-storages defaults to SigV2, 1 h links and silent overwrite.
            "signature_version": "s3v4",
            "querystring_expire": 300,
            "file_overwrite": True,  # keys are our own ids; re-ingest must replace, not rename
            "default_acl": None,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "storage"), "base_url": None},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "marketplace.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Medical imaging data marketplace API",
    "DESCRIPTION": "Search de-identified imaging datasets, place orders, download deliveries.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Accounts (django-allauth, allauth.mfa) ----------------------------------------------
# Every interactive login goes through allauth's form (the admin's login page redirects to
# it), so one place enforces e-mail verification, rate limits and the second factor.
INSTALLED_APPS += ["allauth", "allauth.account", "allauth.mfa"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "allauth.account.middleware.AccountMiddleware")
# Staff and provider-organization owners are sent to set up TOTP before anything else.
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.messages.middleware.MessageMiddleware") + 1,
                  "marketplace.middleware.RequireTwoFactorMiddleware")
# Times on pages in the account's or the browser's zone (after authentication: the account wins).
MIDDLEWARE.insert(MIDDLEWARE.index("allauth.account.middleware.AccountMiddleware") + 1,
                  "marketplace.timezones.TimeZoneMiddleware")
AUTHENTICATION_BACKENDS = [
    "allauth.account.auth_backends.AuthenticationBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_URL = "login"  # allauth's login view, also mounted at /login/
ACCOUNT_ADAPTER = "marketplace.adapter.AccountAdapter"
ACCOUNT_FORMS = {"signup": "marketplace.forms.SignUpForm"}
ACCOUNT_LOGIN_METHODS = {"username", "email"}
# No username at sign-up (it is generated): the sign-up form then has nothing to answer
# "this name is taken" about. With mandatory verification and enumeration prevention, a
# taken e-mail gets the same "check your e-mail" page (and a mail to its owner).
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CHANGE_EMAIL = True  # one address per account; a new one replaces it once verified
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "MedImage Exchange: "
# Failed logins: per account (any spelling of it: username or e-mail, see the adapter) and
# per address; while over the limit even the right password is refused.
ACCOUNT_LOGIN_FAILED_RATE = env_rate("ACCOUNT_LOGIN_FAILED_RATE", "5/hour")
ACCOUNT_LOGIN_FAILED_IP_RATE = env_rate("ACCOUNT_LOGIN_FAILED_IP_RATE", "20/hour")


def _allauth_rate(rate: str, key: str) -> str:
    """"5/hour" -> allauth's "5/3600s/key"."""
    count, unit = rate.split("/")
    seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit]
    return f"{count}/{seconds}s/{key}"


ACCOUNT_RATE_LIMITS = {
    "login_failed": f"{_allauth_rate(ACCOUNT_LOGIN_FAILED_IP_RATE, 'ip')},{_allauth_rate(ACCOUNT_LOGIN_FAILED_RATE, 'key')}",
    "login": "30/m/ip",
    "signup": "10/m/ip",
    "reset_password": "10/m/ip,3/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reauthenticate": "10/m/user",
    "confirm_email": "1/180s/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "MedImage Exchange"
# Version of the terms of use a new account accepts (stored on the user with the time).
TERMS_VERSION = env.str("TERMS_VERSION", default="2026-12")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# API: personal access tokens (marketplace/api_auth.py) and sessions; no HTTP Basic (a
# password per request, outside every login limit). The token class comes first so a
# missing or bad token is answered 401 with a WWW-Authenticate header. Anonymous callers
# are throttled per address, users per account.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "marketplace.api_auth.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "rest_framework.throttling.AnonRateThrottle",
    "rest_framework.throttling.UserRateThrottle",
]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "anon": env_rate("API_ANON_RATE", "600/hour"),
    "user": env_rate("API_USER_RATE", "6000/hour"),
}

# --- Marketplace -------------------------------------------------------------------------
# Upload limits: a zip may not expand past these (zip bombs), nor hold more members.
UPLOAD_MAX_FILE_BYTES = env.int("UPLOAD_MAX_FILE_BYTES", default=512 * 1024 * 1024)
UPLOAD_ZIP_MAX_TOTAL_BYTES = env.int("UPLOAD_ZIP_MAX_TOTAL_BYTES", default=2 * 1024 * 1024 * 1024)
UPLOAD_ZIP_MAX_MEMBERS = env.int("UPLOAD_ZIP_MAX_MEMBERS", default=20000)
UPLOAD_ZIP_MAX_RATIO = env.int("UPLOAD_ZIP_MAX_RATIO", default=200)
DOWNLOAD_LINK_SECONDS = env.int("DOWNLOAD_LINK_SECONDS", default=300)
# Files per worker task when a batch is spread over the worker pool: small enough that
# every worker process stays busy, large enough to keep queue traffic low.
INGEST_CHUNK_FILES = env.int("INGEST_CHUNK_FILES", default=25)
# A running batch with no progress for this long is stuck (its worker died): the sweep
# (upload_batches_recover_stuck) re-queues it, and fails it after INGEST_MAX_ATTEMPTS starts.
INGEST_STUCK_MINUTES = env.int("INGEST_STUCK_MINUTES", default=15)
INGEST_MAX_ATTEMPTS = env.int("INGEST_MAX_ATTEMPTS", default=3)
# The quarantined originals of a failed batch are kept this long so the provider can retry
# it; then the sweep removes them and the provider uploads again.
INGEST_FAILED_RETENTION_HOURS = env.int("INGEST_FAILED_RETENTION_HOURS", default=24)
# Longest one frame may take to decode (in a child process) when ingestion checks pixel data.
INGEST_DECODE_TIMEOUT_SECONDS = env.int("INGEST_DECODE_TIMEOUT_SECONDS", default=10)
# A pixel decode (compressed data, in a child process) is killed after this many seconds:
# one provider's hostile files cost at most this each, never a worker for long.
DEID_DECODE_TIMEOUT_SECONDS = env_int("DEID_DECODE_TIMEOUT_SECONDS", 10, minimum=1, maximum=600)
# Fair ingestion: one provider holds at most this many ingest worker processes at once; its
# further chunks wait (re-queued after INGEST_FAIR_RETRY_SECONDS) so other providers' uploads
# get the remaining processes. A slot a killed worker never released lapses after
# INGEST_PROVIDER_SLOT_SECONDS (a longer chunk then briefly shares its provider's slot).
INGEST_PROVIDER_SLOTS = env_int("INGEST_PROVIDER_SLOTS", 1, minimum=1, maximum=64)
INGEST_FAIR_RETRY_SECONDS = env_int("INGEST_FAIR_RETRY_SECONDS", 5, minimum=1, maximum=600)
INGEST_PROVIDER_SLOT_SECONDS = env_int("INGEST_PROVIDER_SLOT_SECONDS", 180, minimum=10, maximum=86400)
# Deliveries: one "running" without progress (a copied file) for this long is re-queued by
# the sweep, at most DELIVERY_MAX_RESTARTS times, then failed with the reason.
DELIVERY_STUCK_SECONDS = env_int("DELIVERY_STUCK_SECONDS", 30, minimum=5, maximum=86400)
DELIVERY_MAX_RESTARTS = env_int("DELIVERY_MAX_RESTARTS", 3, minimum=0, maximum=100)
# Files one delivery copies at a time (threads of the worker process: reading, hashing and
# writing, or waiting on S3, overlap). 1: one file after another.
DELIVERY_COPY_THREADS = env_int("DELIVERY_COPY_THREADS", 4, minimum=1, maximum=32)
# NIfTI on request (workspaces/nifti.py): dcm2niix runs per series in a subprocess, killed
# after this many seconds (the series is then reported as not converted). A running
# conversion marks the delivery's progress every few seconds, so the stuck sweep leaves it.
NIFTI_TIMEOUT_SECONDS = env_int("NIFTI_TIMEOUT_SECONDS", 300, minimum=5, maximum=86400)
# The dcm2niix executable; empty: the one the dcm2niix wheel installs (or on PATH).
DCM2NIIX_PATH = env.str("DCM2NIIX_PATH", default="")
# Back-off: the quiet time before the second, third… automatic restart (the first waits
# DELIVERY_STUCK_SECONDS); past the list, its last value. Also how long a queued delivery
# no worker took waits before its task is sent again (a broker restart loses the queue).
DELIVERY_RESTART_BACKOFF_SECONDS = [int(v) for v in env.list("DELIVERY_RESTART_BACKOFF_SECONDS",
                                                             default=["300", "900"])]
# Provider keys for pseudonyms and UIDs are derived from this secret (HMAC) unless set per provider.
DEID_MASTER_KEY = env_secret("DEID_MASTER_KEY") or SECRET_KEY

# --- Disclosure of counts (catalog/disclosure.py) ----------------------------------------
# No shown count of 1..threshold-1 studies or patients to anyone not entitled to the rows
# (11: no cell of 1-10, the usual rule for released health statistics). A provider may set
# a higher threshold per dataset, never a lower one.
DISCLOSURE_THRESHOLD = env_int("DISCLOSURE_THRESHOLD", 11, minimum=1, maximum=1000)
# Each quote or count answers one question about the data: cap them per account (per
# address when anonymous) to slow down differencing attacks; each one is also audited.
QUOTE_RATE = env_rate("QUOTE_RATE", "120/hour")
COUNT_QUERY_RATE = env_rate("COUNT_QUERY_RATE", "1200/hour")
# Failed electronic signatures (a wrong password or TOTP code) per account; past the limit
# even the right credentials are refused until the window ends.
SIGNATURE_FAILED_RATE = env_rate("SIGNATURE_FAILED_RATE", "10/hour")

# The platform's share of each sale in basis points (1/100 %), unless the provider has its
# own (Organization.platform_fee_bps).
PLATFORM_FEE_BPS = env_int("PLATFORM_FEE_BPS", 1500, minimum=0, maximum=10000)
# Buyers whose organization is in one of these countries cannot check out (sanctions,
# export control): comma-separated ISO 3166 codes, e.g. "KP,IR"; empty by default.
BLOCKED_COUNTRIES = env_countries("BLOCKED_COUNTRIES")
# The site's address for links in e-mails (e.g. https://data.example.org); empty: relative links.
SITE_URL = env.str("SITE_URL", default="")
# Outgoing webhooks may call loopback and private addresses only when this is True (local
# development and the tests); in production such URLs are refused (server-side request forgery).
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", DEBUG)
# Invoices: "<prefix>-<year>-<number>", due this many days after issue.
INVOICE_NUMBER_PREFIX = env.str("INVOICE_NUMBER_PREFIX", default="MIX")
INVOICE_DUE_DAYS = env_int("INVOICE_DUE_DAYS", 30, minimum=1, maximum=365)
# Printed on invoices: who bills (the platform) and how to pay it.
PLATFORM_LEGAL_NAME = env.str("PLATFORM_LEGAL_NAME", default="MedImage Exchange (demo)")
PLATFORM_ADDRESS = env.str("PLATFORM_ADDRESS", default="1 Example Street, 00000 Example City")
PLATFORM_TAX_ID = env.str("PLATFORM_TAX_ID", default="")
PLATFORM_PAYMENT_DETAILS = env.str("PLATFORM_PAYMENT_DETAILS",
                                   default="Pay through the Stripe invoice link, quoting the invoice number.")

# --- Payments (Stripe, through orders/stripe_gateway.py) ---------------------------------
# Without STRIPE_SECRET_KEY payments are off. `make run` and the tests set all five to a
# local server speaking Stripe's API (config/stripe_local.py); nothing calls the internet then.
STRIPE_SECRET_KEY = env_secret("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env_secret("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com").rstrip("/")
STRIPE_JS_URL = env.str("STRIPE_JS_URL", default="https://js.stripe.com/v3/")


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


if STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY:
    # Stripe.js is loaded from its origin, talks to the API and shows its card fields (and
    # 3-D Secure pages, from hooks.stripe.com at Stripe) in frames.
    _directives = CONTENT_SECURITY_POLICY["DIRECTIVES"]
    _stripe_js_origin = _origin(STRIPE_JS_URL)
    _directives["script-src"] = [*_directives["script-src"], _stripe_js_origin]
    _directives["connect-src"] = [*_directives["connect-src"], _origin(STRIPE_API_BASE)]
    _frames = [_stripe_js_origin] + (["https://hooks.stripe.com"] if _stripe_js_origin == "https://js.stripe.com"
                                     else [])
    _directives["frame-src"] = [SELF, *_frames]

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

# --- Logging: ids only, never PHI --------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# Study search: counts in memory by default; in Elasticsearch (or OpenSearch) when
# ELASTICSEARCH_URL is set (the worker then indexes each dataset's studies when they change).
# ELASTICSEARCH_INDEX is an alias over a suffixed index (`manage.py search_reindex` swaps it).
ELASTICSEARCH_URL = env.str("ELASTICSEARCH_URL", default="")
ELASTICSEARCH_INDEX = env.str("ELASTICSEARCH_INDEX", default="marketplace-studies")
# "opensearch": the server is OpenSearch (or osmem in the tests), which refuses the
# Elasticsearch 9 client's compatibility media type; plain JSON is sent instead.
SEARCH_ENGINE_FLAVOURS = ("elasticsearch", "opensearch")
SEARCH_ENGINE_FLAVOUR = env.str("SEARCH_ENGINE_FLAVOUR", default="elasticsearch").strip().lower()
if SEARCH_ENGINE_FLAVOUR not in SEARCH_ENGINE_FLAVOURS:
    _fail(f"SEARCH_ENGINE_FLAVOUR must be elasticsearch or opensearch (got {SEARCH_ENGINE_FLAVOUR[:20]!r}).")

# --- Bad input (marketplace/input_guard.py, marketplace/parsers.py) ----------------------
# NUL bytes and lone surrogates in any parameter, form field, file name or cookie are a
# 400 naming it (placed before sessions: a NUL session cookie would reach SQL). API JSON
# bodies are capped in size and depth, and refuse NaN/Infinity and the same characters.
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware"),
                  "marketplace.input_guard.BadInputMiddleware")
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "marketplace.parsers.SafeJSONParser",
    "rest_framework.parsers.FormParser",
    "rest_framework.parsers.MultiPartParser",
]
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
API_MAX_JSON_DEPTH = 32
