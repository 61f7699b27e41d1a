"""python -m deid IN_DIR OUT_DIR --key-file FILE [--option NAME[=true|false] ...] [--workers N]

Writes each de-identified file under the same relative path in OUT_DIR and one JSON line
per input to OUT_DIR/manifest.jsonl. One bad file never stops the run. There is no
default key: pass --key-file, or create one first with --generate-key FILE (32 random
bytes as hex, mode 0600, never overwritten). Progress lines carry counts only, since
upload file names can themselves contain patient names.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from deid.engine import deidentify_file
from deid.errors import DeidError
from deid.profile import Options

MANIFEST = "manifest.jsonl"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deid", description=__doc__.splitlines()[0])
    p.add_argument("in_dir", nargs="?", type=Path)
    p.add_argument("out_dir", nargs="?", type=Path)
    p.add_argument("--key-file", type=Path, help="file holding the provider's secret key")
    p.add_argument("--generate-key", type=Path, metavar="FILE",
                   help="write a new random key to FILE and exit")
    p.add_argument("--option", action="append", default=[], metavar="NAME[=BOOL]",
                   help="PS3.15 option, one of: " + ", ".join(Options.names()))
    p.add_argument("--workers", type=int, default=1)
    return p


def read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise ValueError("key file must hold at least 16 bytes")
    return key


def generate_key(path: Path) -> None:
    # O_EXCL: never overwrite a key, that would silently change every pseudonym.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")


def _one(job: tuple[str, str, str, bytes, Options]) -> dict[str, Any]:
    rel, src, dst, key, options = job
    line: dict[str, Any] = {"input": rel, "output": None, "status": "ok", "reason": "",
                            "actions": {}}
    try:
        report = deidentify_file(src, dst, key=key, options=options)
    except DeidError as exc:
        line.update(status="rejected", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        # Only the class name: an unexpected message might quote file content.
        line.update(status="error", reason=f"internal error: {type(exc).__name__}")
    else:
        line.update(output=rel, actions=report.actions)
    return line


def _inputs(in_dir: Path, out_dir: Path) -> list[Path]:
    out_resolved = out_dir.resolve()
    files = []
    for path in sorted(in_dir.rglob("*")):
        if not path.is_file():
            continue
        if out_resolved == path.resolve() or out_resolved in path.resolve().parents:
            continue  # OUT_DIR inside IN_DIR: do not eat our own output
        files.append(path)
    return files


def run(in_dir: Path, out_dir: Path, *, key: bytes, options: Options, workers: int = 1) -> Counter[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _inputs(in_dir, out_dir)
    jobs = [(p.relative_to(in_dir).as_posix(), str(p), str(out_dir / p.relative_to(in_dir)),
             key, options) for p in files]
    totals: Counter[str] = Counter()
    with open(out_dir / MANIFEST, "w", encoding="utf-8") as manifest:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_one, jobs, chunksize=8)
                _collect(results, manifest, totals, len(jobs))
        else:
            _collect(map(_one, jobs), manifest, totals, len(jobs))
    return totals


def _collect(results: Any, manifest: Any, totals: Counter[str], total: int) -> None:
    for done, line in enumerate(results, start=1):
        manifest.write(json.dumps(line, sort_keys=True) + "\n")
        totals[line["status"]] += 1
        print(f"[{done}/{total}] ok={totals['ok']} rejected={totals['rejected']} "
              f"error={totals['error']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.generate_key:
        try:
            generate_key(args.generate_key)
        except FileExistsError:
            print(f"error: {args.generate_key} exists; refusing to overwrite a key", file=sys.stderr)
            return 2
        print(f"new key written to {args.generate_key}")
        return 0
    if args.in_dir is None or args.out_dir is None:
        print("error: IN_DIR and OUT_DIR are required", file=sys.stderr)
        return 2
    if args.key_file is None:
        print("error: no key. Pass --key-file FILE (create one with --generate-key FILE)",
              file=sys.stderr)
        return 2
    if not args.in_dir.is_dir():
        print("error: IN_DIR is not a directory", file=sys.stderr)
        return 2
    try:
        key = read_key(args.key_file)
        options = Options.from_flags(args.option)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    totals = run(args.in_dir, args.out_dir, key=key, options=options, workers=max(1, args.workers))
    print(f"done: {sum(totals.values())} files, ok {totals['ok']}, rejected "
          f"{totals['rejected']}, error {totals['error']}; manifest: {args.out_dir / MANIFEST}")
    return 0
