"""Fetch an order's delivery into a folder (parallel, resumable, verified) and verify a
downloaded folder against its manifest.csv."""
from __future__ import annotations

import csv
import errno
import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from marketplace_client.api import AccessError, Api, ClientError, DiskFullError, NotFoundError, error_from

MANIFEST_NAME = "manifest.csv"
CERTIFICATE_NAME = "certificate.json"
# Written beside the data by the server; not data files, so `verify` does not call them extra.
DOCUMENT_NAMES = (MANIFEST_NAME, CERTIFICATE_NAME, "certificate.pdf")
PART_SUFFIX = ".part"
CHUNK = 256 * 1024
URL_BATCH = 100
# A URL is asked for again this long before the server says it expires.
URL_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str


@dataclass
class FetchResult:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    sha_mismatch: list[str] = field(default_factory=list)
    manifest_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.size_mismatch or self.sha_mismatch or self.manifest_problems)

    def lines(self) -> list[str]:
        out = [f"manifest: {problem}" for problem in self.manifest_problems]
        for label, paths in (("missing", self.missing), ("extra", self.extra),
                             ("size mismatch", self.size_mismatch), ("sha256 mismatch", self.sha_mismatch)):
            out += [f"{label}: {path}" for path in paths]
        return out


class Progress:
    """A one-line text progress bar on a stream (stderr), redrawn at most ten times a second."""

    def __init__(self, total_bytes: int, total_files: int, stream: object | None = None,
                 enabled: bool = True) -> None:
        self.total_bytes, self.total_files = max(total_bytes, 1), total_files
        self.bytes = self.files = 0
        self.stream, self.enabled = stream, enabled
        self._lock = threading.Lock()
        self._drawn = 0.0

    def add(self, count: int) -> None:
        with self._lock:
            self.bytes = min(self.bytes + count, self.total_bytes)
            self._draw()

    def file_done(self) -> None:
        with self._lock:
            self.files += 1
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or self.stream is None or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        share = self.bytes / self.total_bytes
        bar = "#" * int(30 * share)
        self.stream.write(f"\r[{bar:<30}] {100 * share:5.1f}%  {self.files}/{self.total_files} files  "
                          f"{_mb(self.bytes)}/{_mb(self.total_bytes)} MB")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.stream is not None:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f}"


def safe_path(path: str) -> PurePosixPath:
    """A manifest path as a relative path that stays inside DEST; ValueError otherwise."""
    pure = PurePosixPath(path)
    if (not path or "\\" in path or "\x00" in path or pure.is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise ValueError(f"unsafe path in the manifest: {path!r}")
    return pure


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _complete(target: Path, entry: Entry) -> bool:
    try:
        return target.stat().st_size == entry.size and sha256_file(target) == entry.sha256
    except FileNotFoundError:
        return False


class _Links:
    """Download URLs, asked for in batches and again before they expire (thread-safe)."""

    def __init__(self, api: Api, order: int, paths: list[str]) -> None:
        self.api, self.order, self.paths = api, order, paths
        self.index = {path: i for i, path in enumerate(paths)}
        self.cache: dict[str, tuple] = {}
        self.lock = threading.Lock()

    def get(self, path: str, *, fresh: bool = False) -> str:
        with self.lock:
            hit = self.cache.get(path)
            if hit and not fresh and hit[1] > time.monotonic():
                return hit[0]
            start = self.index.get(path, 0)
            batch = [path] + [p for p in self.paths[start + 1:start + URL_BATCH]
                              if p not in self.cache or self.cache[p][1] <= time.monotonic()]
            answer = self.api.post(f"api/orders/{self.order}/delivery/download-urls/", {"paths": batch})
            deadline = time.monotonic() + max(int(answer.get("expires_in", 60)) - URL_MARGIN_SECONDS, 5)
            for p, url in answer["urls"].items():
                self.cache[p] = (url, deadline)
            return self.cache[path][0]


class _Retry(Exception):
    """A failure worth another attempt (network cut, bad checksum, expired link)."""


class _Stopped(Exception):
    pass


def _download(api: Api, links: _Links, entry: Entry, dest: Path, progress: Progress,
              stop: threading.Event) -> int:
    """Download one entry into DEST (through a .part file, resumed with Range when one is
    there), check size and sha256, then move it into place. Returns bytes transferred."""
    target = dest / safe_path(entry.path)
    part = target.with_name(target.name + PART_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset > entry.size:
        part.unlink()
        offset = 0
    transferred = 0
    if offset < entry.size or not part.exists():
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            url = links.get(entry.path)
        except ClientError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise _Retry(exc.message) from None
            raise
        try:
            response = api.open(url, headers)
        except urllib.error.HTTPError as exc:
            problem = error_from(exc)
            if exc.code == 416:  # the part file no longer fits the file: start again
                part.unlink(missing_ok=True)
                raise _Retry("the server refused to resume; starting over") from None
            if problem.code == "link_expired":
                links.get(entry.path, fresh=True)
                raise _Retry("the download link expired") from None
            if exc.code >= 500 or exc.code == 429:
                raise _Retry(f"server answered {exc.code}") from None
            raise problem from None
        with response:
            if response.status == 206:
                if not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                    part.unlink(missing_ok=True)
                    raise _Retry("the server resumed at another place; starting over")
                mode = "ab"
                progress.add(offset)
            else:
                mode, offset = "wb", 0
            with open(part, mode) as fh:
                while chunk := response.read(CHUNK):
                    if stop.is_set():
                        raise _Stopped()
                    fh.write(chunk)
                    transferred += len(chunk)
                    progress.add(len(chunk))
    size = part.stat().st_size
    if size != entry.size or sha256_file(part) != entry.sha256:
        part.unlink()
        raise _Retry(f"got {size} bytes with another sha256 than the manifest's; fetching again")
    os.replace(part, target)
    return transferred


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _transfer(api: Api, links: _Links, entry: Entry, dest: Path, progress: Progress, stop: threading.Event,
              retries: int, backoff: float) -> int:
    """_download with retries and back-off; raises the last problem as a message."""
    problem = ""
    for attempt in range(retries + 1):
        if stop.is_set():
            raise _Stopped()
        try:
            return _download(api, links, entry, dest, progress, stop)
        except (_Stopped, ClientError):
            raise
        except OSError as exc:
            if _is_disk_full(exc):
                raise DiskFullError(f"disk full while writing {entry.path}: free some space (or choose another "
                                    "folder) and run the same command again; finished files are kept and "
                                    "partial ones resume.") from None
            problem = f"{type(exc).__name__}: {exc}"  # network errors are OSErrors too
        except (_Retry, http.client.HTTPException) as exc:
            problem = str(exc) or type(exc).__name__
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise _Retry(problem)


def _entries(api: Api, order: int) -> tuple:
    path = f"api/orders/{order}/delivery/"
    try:
        delivery = api.get(path)
    except NotFoundError:
        raise NotFoundError(f"order {order} was not found for this token's account: it does not exist, is not "
                            "yours, or has no delivery you may see.") from None
    if not delivery["downloadable"]:
        raise AccessError(f"order {order}'s delivery is view-only: its images can be viewed in the browser, its "
                          "files cannot be downloaded.")
    if delivery["status"] != "done":
        raise ClientError(f"order {order}'s delivery is not finished (status {delivery['status']}, "
                          f"{delivery['percent']}%): run the command again once it is done.")
    manifest = api.get(path + "manifest/")
    files = [Entry(row["path"], int(row["bytes"]), row["sha256"]) for row in manifest["files"]]
    documents = [Entry(doc["name"], int(doc["bytes"]), doc["sha256"]) for doc in manifest["documents"]]
    for entry in files + documents:
        try:
            safe_path(entry.path)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
    return files, documents


def fetch(api: Api, order: int, dest: Path, *, jobs: int = 4, retries: int = 2, backoff: float = 0.5,
          progress_stream: object | None = None, log: Callable[[str], None] = lambda line: None) -> FetchResult:
    """Download every file of the order's delivery into ``dest`` in the manifest's folder
    layout, then the manifest and certificate beside it. Files already there with the right
    sha256 are skipped; partial ``.part`` files resume. Raises AccessError / NotFoundError
    (token, order), DiskFullError (nothing more is written) or ClientError; files that
    stay wrong after ``retries`` are in ``result.failed``."""
    files, documents = _entries(api, order)
    dest.mkdir(parents=True, exist_ok=True)
    result = FetchResult()
    # Data first, documents last: a manifest.csv in DEST follows a complete run.
    for phase in (files, documents):
        todo = []
        for entry in phase:
            if _complete(dest / safe_path(entry.path), entry):
                result.skipped.append(entry.path)
            else:
                todo.append(entry)
        if not todo:
            continue
        progress = Progress(sum(e.size for e in todo), len(todo), progress_stream,
                            enabled=progress_stream is not None)
        links = _Links(api, order, [e.path for e in todo])
        stop = threading.Event()
        fatal: list[BaseException] = []
        tally = threading.Lock()

        def one(entry: Entry) -> None:
            try:
                count = _transfer(api, links, entry, dest, progress, stop, retries, backoff)
                with tally:
                    result.bytes_downloaded += count
                    result.downloaded.append(entry.path)
                progress.file_done()
            except _Stopped:
                pass
            except _Retry as exc:
                result.failed[entry.path] = str(exc)
            except BaseException as exc:  # noqa: BLE001 - stops every worker, re-raised below
                fatal.append(exc)
                stop.set()

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, todo))
        progress.finish()
        if fatal:
            raise fatal[0]
        if result.failed and phase is files:
            log("some files stay wrong; the manifest is not written until they are right")
            break
    return result


def verify(dest: Path) -> VerifyReport:
    """Check DEST against its manifest.csv: missing, extra, wrong size, wrong sha256, and a
    manifest that is not the one delivered (its sha256 is in certificate.json)."""
    report = VerifyReport()
    manifest_path = dest / MANIFEST_NAME
    try:
        data = manifest_path.read_bytes()
    except FileNotFoundError:
        report.manifest_problems.append(f"no {MANIFEST_NAME} in {dest}")
        return report
    certificate = dest / CERTIFICATE_NAME
    if certificate.exists():
        try:
            expected = json.loads(certificate.read_text("utf-8"))["manifest"]["sha256"]
        except (ValueError, KeyError, TypeError):
            report.manifest_problems.append(f"{CERTIFICATE_NAME} is unreadable")
        else:
            if hashlib.sha256(data).hexdigest() != expected:
                report.manifest_problems.append(f"{MANIFEST_NAME} was changed: its sha256 is not the one in "
                                                f"{CERTIFICATE_NAME}")
    rows: dict[str, tuple] = {}
    try:
        for row in csv.DictReader(data.decode("utf-8").splitlines()):
            safe_path(row["path"])
            rows[row["path"]] = (int(row["bytes"]), row["sha256"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        report.manifest_problems.append(f"{MANIFEST_NAME} is unreadable ({type(exc).__name__}: {exc})")
        return report
    present = set()
    for root, _dirs, names in os.walk(dest):
        for name in names:
            relative = Path(root, name).relative_to(dest).as_posix()
            if relative not in DOCUMENT_NAMES:
                present.add(relative)
    report.extra = sorted(present - set(rows))
    for path, (size, sha) in sorted(rows.items()):
        report.checked += 1
        target = dest / path
        if path not in present:
            report.missing.append(path)
        elif target.stat().st_size != size:
            report.size_mismatch.append(path)
        elif sha256_file(target) != sha:
            report.sha_mismatch.append(path)
    return report
