"""Fixtures for the deid tests.

These tests need no database and no Django: under pytest-django they simply never
request the db fixtures, so they run the same with or without `-p no:django`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The repo root must win over any installed package named "deid" (PyPI name clash), and
# this directory holds deid_factory. Both are harmless when pytest.ini already sets them.
ROOT = Path(__file__).resolve().parents[2]
for entry in (str(Path(__file__).resolve().parent), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from deid_factory import KEY, make_dataset, to_bytes  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402


@pytest.fixture
def key() -> bytes:
    return KEY


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """make_file(name="x.dcm", transfer_syntax=..., **attribute overrides) -> path."""
    def _make(name: str = "in.dcm", transfer_syntax: str = ExplicitVRLittleEndian,
              **overrides: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_bytes(make_dataset(**overrides), transfer_syntax))
        return path
    return _make


@pytest.fixture
def phi_file(make_file: Callable[..., Path]) -> Path:
    return make_file()
