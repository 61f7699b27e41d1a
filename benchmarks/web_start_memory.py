"""Resident memory of a fresh web process at start, and which heavy libraries it loaded.

    python benchmarks/web_start_memory.py

In a fresh interpreter (DJANGO_DEBUG=True): builds the WSGI app, resolves the URL patterns
(which imports every view, as a gunicorn worker's first request does), then imports the
view modules; prints VmRSS after each step and whether pydicom, numpy, stripe, reportlab
(and a few libraries they pull) are in sys.modules. Nothing connects to a database:
without DATABASE_URL / REDIS_URL the script hands Django unreachable ones so that settings
start no embedded services. Numbers only (tests/test_web_imports.py is the check).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pydicom", "numpy", "PIL", "requests", "stripe", "aiohttp", "reportlab", "boto3", "botocore")
CHILD = f"""
import importlib, sys

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

print(f"interpreter          {{rss():6.1f}} MB")
from config.wsgi import application
print(f"WSGI app built       {{rss():6.1f}} MB")
from django.urls import get_resolver
get_resolver().url_patterns
print(f"URL patterns         {{rss():6.1f}} MB")
for app in ("catalog", "orders", "workspaces", "marketplace"):
    importlib.import_module(app + ".views")
print(f"view modules         {{rss():6.1f}} MB")
for name in {HEAVY!r}:
    print(f"  {{name:<10}} {{'loaded' if name in sys.modules else '-'}}")
"""


def main() -> int:
    env = dict(os.environ, DJANGO_DEBUG="True", DJANGO_SETTINGS_MODULE="config.settings")
    env.setdefault("DATABASE_URL", "postgres://nobody@127.0.0.1:9/nothing")  # never connected to
    env.setdefault("REDIS_URL", "redis://127.0.0.1:9/0")
    return subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
