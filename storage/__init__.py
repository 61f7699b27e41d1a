"""Object storage: one interface over the local folder (embedded default) and S3.

Keys are built from our own ids, never from uploaded names. Copies between keys are
server-side on S3 (CopyObject) so delivery never streams data through a web process.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from typing import IO

from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, default_storage

CHUNK = 1024 * 1024


def quarantine_key(*, provider_id: int, batch_id: int, file_id: int) -> str:
    return f"quarantine/{provider_id}/{batch_id}/{file_id}"


def quarantine_batch_prefix(*, provider_id: int, batch_id: int) -> str:
    return f"quarantine/{provider_id}/{batch_id}"


def catalog_key(*, dataset_id: int, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"catalog/{dataset_id}/{study_uid}/{series_uid}/{sop_uid}.dcm"


def put(key: str, content: IO[bytes]) -> None:
    """Store `content` under exactly `key`, replacing what was there."""
    if default_storage.exists(key):
        default_storage.delete(key)
    saved = default_storage.save(key, File(content))
    if saved != key:  # FileSystemStorage renames on clashes; we never want that
        raise RuntimeError(f"storage saved {key!r} as {saved!r}")


def open_read(key: str) -> IO[bytes]:
    return default_storage.open(key, "rb")


def exists(key: str) -> bool:
    return default_storage.exists(key)


def delete(key: str) -> None:
    if key and default_storage.exists(key):
        default_storage.delete(key)


def delete_tree(prefix: str) -> int:
    """Delete every object under ``prefix`` (a folder of our own keys); return how many."""
    removed, pending = 0, [prefix.rstrip("/")]
    while pending:
        folder = pending.pop()
        try:
            dirs, files = default_storage.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in files:
            default_storage.delete(f"{folder}/{name}")
            removed += 1
        pending += [f"{folder}/{name}" for name in dirs]
    return removed


def size(key: str) -> int:
    return default_storage.size(key)


def iter_chunks(key: str, start: int = 0) -> Iterator[bytes]:
    """The object's bytes from offset `start`, CHUNK at a time, never the whole object in
    memory (a ranged read: the bytes before `start` are not read)."""
    if isinstance(default_storage, FileSystemStorage):
        with open_read(key) as fh:
            if start:
                fh.seek(start)
            while chunk := fh.read(CHUNK):
                yield chunk
        return
    # django-storages' S3 file object downloads the whole object into memory on its first
    # read (AWS_S3_MAX_MEMORY_SIZE defaults to no limit); the response body streams instead.
    obj = default_storage.bucket.Object(default_storage._normalize_name(key))  # noqa: SLF001
    if start and start >= obj.content_length:
        return  # S3 answers 416 to a range starting at the end
    body = (obj.get(Range=f"bytes={start}-") if start else obj.get())["Body"]
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


def sha256_of(key: str) -> str:
    digest = hashlib.sha256()
    for chunk in iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def copy(src_key: str, dst_key: str) -> None:
    """Copy one object to another key without passing it through Python where possible."""
    if isinstance(default_storage, FileSystemStorage):
        dst_path = default_storage.path(dst_key)
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        shutil.copyfile(default_storage.path(src_key), dst_path)
        return
    # imported when used: botocore is only there with S3 storage (a local-storage web worker
    # never loads it)
    from botocore.exceptions import ClientError

    bucket = default_storage.bucket
    src, dst = default_storage._normalize_name(src_key), default_storage._normalize_name(dst_key)  # noqa: SLF001 - storages has no public API for this
    try:
        # One CopyObject request. The managed copy below first asks for the object's size
        # (HeadObject) and starts a transfer manager, for every file.
        bucket.meta.client.copy_object(Bucket=bucket.name, Key=dst, CopySource={"Bucket": bucket.name, "Key": src})
    except ClientError as exc:
        # CopyObject takes objects up to 5 GB; larger ones go in parts.
        if exc.response.get("Error", {}).get("Code") not in ("InvalidRequest", "EntityTooLarge"):
            raise
        bucket.Object(dst).copy({"Bucket": bucket.name, "Key": src})


def download_url(key: str) -> str | None:
    """A short-lived direct URL when the backend has one (S3 presigned), else None."""
    if isinstance(default_storage, FileSystemStorage):
        return None
    return default_storage.url(key)
