from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_deid_does_not_import_django() -> None:
    code = ("import deid, deid.cli, deid.verify, sys; "
            "assert deid.__file__.startswith({!r}), deid.__file__; "
            "assert 'django' not in sys.modules, 'django imported'".format(str(ROOT / "deid")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_deid_sources_never_mention_django_imports() -> None:
    for path in (ROOT / "deid").rglob("*.py"):
        text = path.read_text()
        assert "import django" not in text and "from django" not in text, path
