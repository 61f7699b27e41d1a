# Marketplace developer entry points. Works on a bare machine: PostgreSQL and Redis
# come from wheels (config/embedded.py) unless DATABASE_URL / REDIS_URL are set.
#
#   make run    the site at http://127.0.0.1:8000/, a Celery worker per queue and beat (Ctrl-C stops all)
#   make test   ruff (ruff.toml), then the test suite (throwaway PostgreSQL/Redis, moto S3, osmem)
#   make screenshots  refresh the README's screenshots (docs/screenshots/, headless Chromium)
#   make clean  stop the embedded services and delete var/

SHELL := /bin/bash
PYTHON_BOOTSTRAP := $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test screenshots clean

# The stamps depend on the requirements files: pip runs again only when they change.
$(PY):
	@test -n "$(PYTHON_BOOTSTRAP)" || { echo "make: python3.11 (or python3) is required" >&2; exit 1; }
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)

$(VENV)/.installed-runtime: requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-runtime

# Local development: DEBUG on unless DJANGO_DEBUG is set (production is the default elsewhere).
run: $(VENV)/.installed-runtime
	@echo "make run: local development settings (DJANGO_DEBUG=$${DJANGO_DEBUG:-True}); production runs with DJANGO_DEBUG=False"
	DJANGO_DEBUG=$${DJANGO_DEBUG:-True} $(PY) -m config.devserver

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

screenshots: $(VENV)/.installed-dev
	SCREENSHOTS_DIR=docs/screenshots $(VENV)/bin/pytest tests/browser/test_readme_screenshots.py -q

clean:
	@if [ -x $(PY) ] && [ -d var ]; then \
	  $(PY) -c 'from pathlib import Path; from config.embedded import stop_postgres, stop_redis; from config.stripe_local import stop_stripe_local; stop_postgres(Path("var/postgres")); stop_redis(Path("var/redis")); stop_stripe_local(Path("var/stripe"))' \
	  || echo "make clean: could not stop the embedded services cleanly" >&2; \
	fi
	rm -rf var
