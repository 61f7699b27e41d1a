"""Bad disclosure settings are refused at start-up with one sentence naming the setting
(config/settings.py: env_int / env_rate), never a traceback; good ones are taken.

Each case starts Django in a subprocess given the test run's own DATABASE_URL / REDIS_URL
(exported by the embedded_services plugin), so no subprocess starts services of its own.
The subprocesses run side by side: the whole file takes about a second.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); "
         "django.setup(); from django.conf import settings; "
         "print(settings.DISCLOSURE_THRESHOLD, settings.QUOTE_RATE, settings.COUNT_QUERY_RATE)")
SETTINGS = ("DISCLOSURE_THRESHOLD", "QUOTE_RATE", "COUNT_QUERY_RATE", "SEARCH_ENGINE_FLAVOUR")

BAD = [
    ("DISCLOSURE_THRESHOLD", "0"), ("DISCLOSURE_THRESHOLD", "-3"), ("DISCLOSURE_THRESHOLD", "abc"),
    ("DISCLOSURE_THRESHOLD", "11.5"), ("DISCLOSURE_THRESHOLD", "1001"),
    ("QUOTE_RATE", "lots"), ("QUOTE_RATE", "0/hour"), ("QUOTE_RATE", "60 per hour"),
    ("COUNT_QUERY_RATE", "5/fortnight"), ("COUNT_QUERY_RATE", "/minute"),
    ("SEARCH_ENGINE_FLAVOUR", "solr"),
]
GOOD = [
    ({"DISCLOSURE_THRESHOLD": "25"}, "25 120/hour 1200/hour"),
    ({"DISCLOSURE_THRESHOLD": " 11 ", "QUOTE_RATE": "10/minute", "COUNT_QUERY_RATE": "5/second"},
     "11 10/minute 5/second"),
    ({}, "11 120/hour 1200/hour"),  # the defaults
]
MANAGE = [("DISCLOSURE_THRESHOLD", "0"), ("COUNT_QUERY_RATE", "5/fortnight")]


def _env(overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    # The running test services: a subprocess without them would start its own.
    assert env.get("DATABASE_URL") and env.get("REDIS_URL"), "the embedded_services plugin exports these"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return {**env, **overrides}


@pytest.fixture(scope="module")
def started() -> dict[tuple, subprocess.CompletedProcess]:
    """Every case, started at once; (kind, ...) -> its completed process."""
    commands: dict[tuple, tuple[list[str], dict[str, str]]] = {}
    for name, value in BAD:
        commands[("setup", name, value)] = ([sys.executable, "-c", SETUP], _env({name: value}))
    for overrides, _ in GOOD:
        commands[("good", *sorted(overrides.items()))] = ([sys.executable, "-c", SETUP], _env(overrides))
    for name, value in MANAGE:
        commands[("manage", name, value)] = ([sys.executable, "manage.py", "check"], _env({name: value}))
    running = {key: subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for key, (argv, env) in commands.items()}
    done = {}
    for key, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        done[key] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


def _assert_refused(result: subprocess.CompletedProcess, name: str, value: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one sentence
    assert lines[0].startswith("configuration error: "), lines[0]
    assert name in lines[0] and repr(value) in lines[0], lines[0]  # names the setting and what it got
    assert result.stdout == ""  # never started


@pytest.mark.parametrize("name, value", BAD)
def test_a_bad_setting_stops_start_up_with_one_sentence(started, name, value) -> None:
    _assert_refused(started[("setup", name, value)], name, value)


@pytest.mark.parametrize("name, value", MANAGE)
def test_manage_py_refuses_them_the_same_way(started, name, value) -> None:
    _assert_refused(started[("manage", name, value)], name, value)


@pytest.mark.parametrize("overrides, shown", GOOD)
def test_good_settings_start_and_are_taken(started, overrides, shown) -> None:
    result = started[("good", *sorted(overrides.items()))]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shown
    assert "configuration error" not in result.stderr and "Traceback" not in result.stderr
