"""``python -m workspaces.trace FILE [FILE ...]``: the trace_file management command
without manage.py (admin tool; needs the same environment as manage.py)."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import django
    from django.core.management import call_command
    from django.core.management.base import CommandError

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("usage: python -m workspaces.trace FILE [FILE ...]\n")
        return 0 if args else 2
    try:
        call_command("trace_file", *args)
    except CommandError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
