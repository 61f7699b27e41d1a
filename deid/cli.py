"""python -m deid IN_DIR OUT_DIR --key-file FILE [--option NAME[=true|false] ...] [--workers N]

Writes each de-identified file under the same relative path in OUT_DIR and one JSON line
per input to OUT_DIR/manifest.jsonl. One bad file never stops the run. There is no
default key: pass --key-file, or create one first with --generate-key FILE (32 random
bytes as hex, mode 0600, never overwritten). The progress bar (stderr) and the summary
carry counts and rates only, since upload file names can themselves contain patient names.
With --workers N, N processes share the files: this one and N - 1 helpers (forked when
no other thread runs here, else spawned) that take small batches; manifest lines are
then written in completion order.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, TextIO

from deid.engine import deidentify_file
from deid.errors import DeidError
from deid.io import staged_outputs
from deid.profile import Options

MANIFEST = "manifest.jsonl"
# Each worker process creates its temporary files in OUT_DIR/<this><pid>/ (see
# deid.io.staged_outputs); run() removes them when it ends.
STAGING_PREFIX = ".deid-staging-"


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


# Set once per worker process by _init_worker: jobs then carry paths only.
_WORKER: dict[str, Any] = {}


def _init_worker(key: bytes, options: Options, out_dir: Path) -> None:
    _WORKER["key"], _WORKER["options"] = key, options
    _WORKER["staging"] = _staging(out_dir)


def _batch_in_worker(jobs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    with staged_outputs(_WORKER["staging"]):
        return [_one((rel, src, dst, _WORKER["key"], _WORKER["options"]))
                for rel, src, dst in jobs]


def _staging(out_dir: Path) -> Path:
    return out_dir / f"{STAGING_PREFIX}{os.getpid()}"


def _remove_staging(out_dir: Path) -> None:
    """Remove the workers' staging folders (with what a killed run left in them)."""
    for folder in out_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(folder, ignore_errors=True)


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


def _inputs(in_dir: Path, out_dir: Path) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """(regular files to de-identify, [(entry, status, reason)] for the entries that are
    not read: broken links, pipes, sockets, devices — listed, never opened, since
    opening a pipe would wait forever)."""
    out_resolved = out_dir.resolve()
    files, not_read = [], []
    for root, dirs, names in os.walk(in_dir):
        # OUT_DIR inside IN_DIR: do not eat our own output (one resolve per directory,
        # not per file: thousands of files share a few directories).
        dirs[:] = [d for d in dirs if Path(root, d).resolve() != out_resolved]
        for name in names:
            path = Path(root, name)
            if path.is_file():
                if not (path.is_symlink() and _inside(path, out_resolved)):
                    files.append(path)
            elif path.is_symlink() and not path.exists():
                not_read.append((path, "error", "broken symbolic link: nothing to read"))
            else:
                not_read.append((path, "rejected", "not a regular file (a pipe, socket or device): not read"))
    return sorted(files), sorted(not_read)


def _inside(path: Path, directory: Path) -> bool:
    resolved = path.resolve()
    return resolved == directory or directory in resolved.parents


class Progress:
    """One carriage-return-updated line on stderr: counts, files/s, MB/s and ETA. Never a name."""

    def __init__(self, total: int, total_bytes: int, stream: TextIO | None = None,
                 interval: float = 0.2) -> None:
        self.total, self.total_bytes = total, total_bytes
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done: int, totals: Counter[str], done_bytes: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (now - self._last < self.interval or done >= self.total):
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r[{bar}] {done}/{self.total} {rate:7.1f} files/s "
            f"{done_bytes / elapsed / 1e6:7.1f} MB/s ETA {_clock(eta)} "
            f"ok {totals['ok']} rejected {totals['rejected']} error {totals['error']} "
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(in_dir: Path, out_dir: Path, *, key: bytes, options: Options, workers: int = 1,
        progress: bool = True) -> Counter[str]:
    """De-identify every file under in_dir; returns counts per status (plus "bytes")."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files, not_read = _inputs(in_dir, out_dir)
    sizes = {p.relative_to(in_dir).as_posix(): _file_size(p) for p in files}
    jobs = [(p.relative_to(in_dir).as_posix(), str(p), str(out_dir / p.relative_to(in_dir)))
            for p in files]
    unread = [{"input": p.relative_to(in_dir).as_posix(), "output": None, "status": status,
               "reason": reason, "actions": {}} for p, status, reason in not_read]
    totals: Counter[str] = Counter()
    bar = Progress(len(jobs) + len(unread), sum(sizes.values())) if progress else None
    _remove_staging(out_dir)
    try:
        with open(out_dir / MANIFEST, "w", encoding="utf-8") as manifest, \
                staged_outputs(_staging(out_dir)):
            if workers > 1 and len(jobs) > 1:
                results = _shared(jobs, key, options, workers, out_dir)
            else:
                results = (_one((*job, key, options)) for job in jobs)
            _collect(itertools.chain(unread, results), manifest, totals, sizes, bar)
    finally:
        _remove_staging(out_dir)
    return totals


def _start_method() -> str:
    """fork where it is safe, else spawn. A forked helper starts at once with the
    parent's imports; a spawned one first imports pydicom, numpy and deid (0.3-0.5 s
    here, a real share of a short run). Forking a process in which other threads run
    could copy a lock one of them holds: then spawn."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _shared(jobs: list[tuple[str, str, str]], key: bytes, options: Options,
            workers: int, out_dir: Path, start_method: str | None = None,
            ) -> Iterator[dict[str, Any]]:
    """Results of ``workers`` processes: this one and workers - 1 helpers. The parent
    starts at once, also while spawned helpers are still starting; helpers get small
    batches, at most two outstanding each, so the work stays shared to the end."""
    helpers = workers - 1
    batch = max(1, min(16, len(jobs) // (workers * 16)))
    queue = deque(jobs)
    ctx = multiprocessing.get_context(start_method or _start_method())
    with ctx.Pool(helpers, initializer=_init_worker,
                  initargs=(key, options, out_dir)) as pool:
        pending: list[AsyncResult] = []
        while queue or pending:
            while queue and len(pending) < helpers * 2:
                chunk = [queue.popleft() for _ in range(min(batch, len(queue)))]
                pending.append(pool.apply_async(_batch_in_worker, (chunk,)))
            for done in [p for p in pending if p.ready()]:
                pending.remove(done)
                yield from done.get()
            if queue:
                yield _one((*queue.popleft(), key, options))
            elif pending:
                pending[0].wait(0.05)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _collect(results: Iterable[dict[str, Any]], manifest: TextIO, totals: Counter[str],
             sizes: dict[str, int], bar: Progress | None) -> None:
    done_bytes = 0
    for done, line in enumerate(results, start=1):
        manifest.write(json.dumps(line, sort_keys=True) + "\n")
        totals[line["status"]] += 1
        done_bytes += sizes.get(line["input"], 0)
        if bar is not None:
            bar.update(done, totals, done_bytes)
    totals["bytes"] = done_bytes
    if bar is not None:
        bar.update(sum(totals[k] for k in ("ok", "rejected", "error")), totals, done_bytes,
                   final=True)


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
    started = time.monotonic()
    totals = run(args.in_dir, args.out_dir, key=key, options=options, workers=max(1, args.workers))
    elapsed = max(time.monotonic() - started, 1e-9)
    files = totals["ok"] + totals["rejected"] + totals["error"]
    print(f"done: {files} files, ok {totals['ok']}, rejected {totals['rejected']}, error "
          f"{totals['error']} in {elapsed:.1f} s ({files / elapsed:.1f} files/s, "
          f"{totals['bytes'] / elapsed / 1e6:.1f} MB/s, {max(1, args.workers)} worker(s)); "
          f"manifest: {args.out_dir / MANIFEST}")
    return 0
