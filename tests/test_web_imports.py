"""A web worker starts without the heavy libraries only some requests or tasks need.

pydicom (with numpy, PIL and requests) costs a worker about 40 MB, stripe (with aiohttp)
about 30 MB, reportlab about 15 MB: the modules the web loads at start (the WSGI app, every
URL pattern and so every view) import them inside the functions that use them. A new
module-level import of one of them, anywhere on that path, fails this test; run
``python -X importtime -c "..."`` with the code below to see which module brought it in.

The check runs in a fresh interpreter (this test process has imported everything),
given the test run's own DATABASE_URL / REDIS_URL so that it starts no services.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("pydicom", "numpy", "stripe", "reportlab")
START = f"""
import json, sys
from config.wsgi import application
from django.urls import get_resolver
get_resolver().url_patterns  # imports every urls module and the views they name
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_the_web_app_starts_without_pydicom_numpy_stripe_or_reportlab() -> None:
    env = dict(os.environ)
    assert env.get("DATABASE_URL") and env.get("REDIS_URL"), "the embedded_services plugin exports these"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    done = subprocess.run([sys.executable, "-c", START], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"imported at web start: {loaded}"
