"""The import direction between the apps.

orders must not import workspaces: workspaces builds on orders and learns of a release,
a cancellation or an ended access from the signals in orders/signals.py
(workspaces/receivers.py). marketplace (accounts, organizations, audit) must not import
catalog: the catalogue's pages, the home page among them, live in catalog.

Inside catalog, search/ is the layer the pages stand on: it imports none of the wings
datasets/, ingestion/ and discovery/; and nothing but the URLs imports discovery/ (the
cohort builder, saved searches, data requests), so datasets and ingestion stay free of it.

Every .py file of the lower app is parsed (nothing is imported), and every import counts,
wherever it stands: at the top, inside a function, under TYPE_CHECKING, or through
importlib.import_module / __import__ with a literal name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# (the app whose files are checked, the app it must not import)
FORBIDDEN = [
    ("orders", "workspaces"),
    ("marketplace", "catalog"),
    ("catalog/search", "catalog.datasets"),
    ("catalog/search", "catalog.ingestion"),
    ("catalog/search", "catalog.discovery"),
    ("catalog/datasets", "catalog.discovery"),
    ("catalog/ingestion", "catalog.discovery"),
]


def _names_imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import in the tree, absolute names only."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layering_violations(app: str, forbidden: str, root: Path = REPO) -> list[str]:
    problems = []
    for path in sorted((root / app).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in sorted(_names_imported(tree)):
            if _is_within(module, forbidden):
                problems.append(f"{path.relative_to(root)}:{line} imports {module}")
    return problems


@pytest.mark.parametrize(("app", "forbidden"), FORBIDDEN, ids=[f"{a}-not-{f}" for a, f in FORBIDDEN])
def test_app_does_not_import(app, forbidden):
    assert (REPO / app).is_dir(), f"{app}/ is missing"
    problems = layering_violations(app, forbidden)
    assert not problems, f"{app} must not import {forbidden}:\n" + "\n".join(problems)


def test_the_check_sees_every_kind_of_import(tmp_path):
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "a.py").write_text(
        "import os\n"
        "import high\n"
        "from high.services import x\n"
        "def f():\n"
        "    from high import y\n"
        "    import high.tasks as t\n"
        "    import importlib\n"
        "    importlib.import_module('high.grants')\n"
        "from highway import z\n"        # another package that only starts alike
        "from . import sibling\n"
        "s = 'high.tasks.run'\n")       # a task name, not an import
    assert layering_violations("low", "high", root=tmp_path) == [
        "low/a.py:2 imports high", "low/a.py:3 imports high.services", "low/a.py:5 imports high",
        "low/a.py:6 imports high.tasks", "low/a.py:8 imports high.grants"]
