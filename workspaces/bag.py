"""A delivery (or one study or series of it) as a BagIt bag (RFC 8493) inside a streamed ZIP.

Layout of the archive, with the bag root as its one top folder:

    order-<id>/bagit.txt
    order-<id>/bag-info.txt
    order-<id>/manifest-sha256.txt        data/<path> for every payload file
    order-<id>/tagmanifest-sha256.txt     over the three tag files above
    order-<id>/data/<study>/<series>/<sop>.dcm
    order-<id>/data/manifest.csv, certificate.json, certificate.pdf

The delivery documents are payload, not tag files: `data/` is then exactly the workspace
folder, so manifest.csv's paths are relative to the folder it sits in, as in the workspace,
and the bag's own checksums cover the documents too. A study or series archive carries the
same documents unchanged (the certificate signs the whole delivery's manifest), so its
manifest.csv lists files that archive does not hold; its manifest-sha256.txt lists exactly
the payload it holds.

Everything is written in one pass over the file rows: payload first (the SHA-256 of each
file comes from its DeliveryFile row; the documents' are computed while they stream), then
the tag files, which by then know every checksum and the Payload-Oxum. The same pass, with
nothing read, gives the archive's exact length (Content-Length) and ETag before the first
byte; a byte range (a resumed download) starts at the member it falls in (see
DeliveryBag and zip_stream).
"""
from __future__ import annotations

import hashlib
import tempfile
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import IO

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import QuerySet

import storage
from workspaces.archive import Member, ZipPlan, zip_plan, zip_stream
from workspaces.certificate import CERTIFICATE_JSON_NAME, MAX_CERTIFICATE_BYTES, certificate_parse
from workspaces.models import Delivery, DeliveryFile

BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
# How many files go out between two checks that the buyer may still download the delivery.
ACCESS_CHECK_EVERY = 200
_MANIFEST_IN_MEMORY = 1024 * 1024


class AccessEndedError(Exception):
    """The buyer's download grant was taken back while the archive streamed."""


def _bag_path(path: str) -> str:
    """A manifest file path, percent-encoded where RFC 8493 requires (CR, LF and %)."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _certificate_ids(delivery: Delivery) -> dict[str, str]:
    """Contract and certificate ids from the delivery's certificate.json, if it has one."""
    key = f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}"
    if delivery.certificate_issued is None or not storage.exists(key):
        return {}
    with storage.open_read(key) as fh:
        data, _ = certificate_parse(fh.read(MAX_CERTIFICATE_BYTES + 1))
    if data is None:
        return {}
    ids = {}
    agreement = data.get("agreement")
    if isinstance(agreement, dict) and agreement.get("contract_id") is not None:
        ids["Contract-Id"] = str(agreement["contract_id"])
    if data.get("certificate_id"):
        ids["Certificate-Id"] = str(data["certificate_id"])
    return ids


def bag_info(*, delivery: Delivery, payload_bytes: int, payload_files: int, bagged: datetime,
             scope: str = "", ids: dict[str, str] | None = None) -> bytes:
    """bag-info.txt: who bagged it, when, how much payload, and which order, contract and
    certificate it belongs to."""
    fields = [
        ("Source-Organization", settings.PLATFORM_LEGAL_NAME),
        ("Bagging-Date", bagged.date().isoformat()),
        ("Payload-Oxum", f"{payload_bytes}.{payload_files}"),
        ("External-Identifier", f"order-{delivery.order_id}"),
        ("Delivery-Id", str(delivery.pk)),
        *(_certificate_ids(delivery) if ids is None else ids).items(),
    ]
    if scope:
        fields.append(("Internal-Sender-Description", f"Part of the delivery: {scope}"))
    return "".join(f"{label}: {value.replace(chr(10), ' ')}\n" for label, value in fields).encode("utf-8")


def _bytes_member(name: str, data: bytes) -> Member:
    return Member(name=name, size=len(data), chunks=lambda: [data], crc32=lambda: zlib.crc32(data))


def _manifest_line(path: str, sha256: str) -> bytes:
    return f"{sha256}  data/{_bag_path(path)}\n".encode()


def _tagmanifest(digests: list[tuple[str, str]]) -> bytes:
    return "".join(f"{digest}  {name}\n" for name, digest in digests).encode()


_NO_DIGEST = "0" * 64  # a SHA-256 not known yet has this length: sizes are computed with it
_ETAG_VERSION = b"bag-zip-1"  # change when the archive's layout changes: old ETags then fail


class _Document:
    """A delivery document streamed as payload: its SHA-256 (for manifest-sha256.txt) is
    taken while it streams, or read once when a byte range skipped it."""

    def __init__(self, key: str) -> None:
        self.key, self.size = key, storage.size(key)
        self._sha256: str | None = None
        self._crc: int | None = None

    def chunks(self) -> Iterator[bytes]:
        digest, crc = hashlib.sha256(), 0
        for chunk in storage.iter_chunks(self.key):
            digest.update(chunk)
            crc = zlib.crc32(chunk, crc)
            yield chunk
        self._sha256, self._crc = digest.hexdigest(), crc

    def _read(self) -> None:
        for _ in self.chunks():
            pass

    def sha256(self) -> str:
        if self._sha256 is None:
            self._read()
        return self._sha256  # type: ignore[return-value]

    def crc32(self) -> int:
        if self._crc is None:
            self._read()
        return self._crc  # type: ignore[return-value]


def _modified(key: str) -> str:
    try:
        return default_storage.get_modified_time(key).isoformat()
    except (NotImplementedError, OSError):
        return ""


class DeliveryBag:
    """The ZIP bytes of a bag rooted at `root/` holding `files` and `documents` (archive
    name -> storage key) as payload; whole (stream()) or one byte range of it
    (stream(first, last)), with its exact length and an ETag (plan()).

    One generator of members (members()) feeds both zip_plan (sizes only, nothing read) and
    zip_stream, so the length announced is the length sent. Deterministic: the same rows,
    documents and `bagged` time give the same bytes, so a range of a later request fits the
    bytes of an earlier one; the ETag covers what the bytes are made of.

    `still_allowed` is asked every ACCESS_CHECK_EVERY files while streaming; when it says
    no, the stream stops (AccessEndedError) and the archive stays incomplete."""

    def __init__(self, *, delivery: Delivery, files: QuerySet[DeliveryFile], documents: dict[str, str],
                 root: str, bagged: datetime, scope: str = "",
                 still_allowed: Callable[[], bool] = lambda: True) -> None:
        self.delivery, self.files, self.documents, self.root = delivery, files, documents, root
        self.bagged, self.scope, self.still_allowed = bagged, scope, still_allowed
        self._plan: ZipPlan | None = None
        self._etag = ""
        self._ids: dict[str, str] | None = None  # certificate.json read once, not once a pass

    def plan(self) -> tuple[ZipPlan, str]:
        """The archive's layout (its length: plan.length) and its ETag, from the database
        rows and the documents' sizes: no file is read."""
        if self._plan is None:
            fingerprint = hashlib.sha256(_ETAG_VERSION)
            fingerprint.update(f"{self.delivery.pk}\0{self.root}\0{self.scope}\0{self.bagged.isoformat()}\0".encode())
            with tempfile.SpooledTemporaryFile(max_size=_MANIFEST_IN_MEMORY) as manifest:
                self._plan = zip_plan(self._members(manifest, fingerprint=fingerprint, streaming=False),
                                      modified=self.bagged)
            self._etag = f'"{fingerprint.hexdigest()[:40]}"'
        return self._plan, self._etag

    def stream(self, first: int = 0, last: int | None = None) -> Iterator[bytes]:
        plan = self.plan()[0] if (first or last is not None) else None
        with tempfile.SpooledTemporaryFile(max_size=_MANIFEST_IN_MEMORY) as manifest:
            yield from zip_stream(self._members(manifest, fingerprint=None, streaming=True), modified=self.bagged,
                                  first=first, last=last, plan=plan)

    def _members(self, manifest: IO[bytes], *, fingerprint: hashlib._Hash | None,
                 streaming: bool) -> Iterator[Member]:
        root = self.root
        totals = {"bytes": 0, "files": 0}
        seen: list[DeliveryFile] = []  # CRC-32s computed while streaming, for rows without one

        def store_seen() -> None:
            if seen:
                DeliveryFile.objects.bulk_update(seen, ["crc32"])
                seen.clear()

        def row_crc(pk: int, key: str) -> int:
            # An older row without its CRC: one read of this one file, kept for next time.
            crc = 0
            for chunk in storage.iter_chunks(key):
                crc = zlib.crc32(chunk, crc)
            DeliveryFile.objects.filter(pk=pk).update(crc32=crc)
            return crc

        rows = self.files.order_by("path").values_list("pk", "path", "storage_key", "size_bytes", "sha256", "crc32")
        for count, (pk, path, key, size, sha256, crc) in enumerate(rows.iterator(chunk_size=500), start=1):
            if streaming and count % ACCESS_CHECK_EVERY == 0:
                store_seen()
                if not self.still_allowed():
                    raise AccessEndedError(f"download of delivery {self.delivery.pk} stopped: access ended")
            if fingerprint is not None:
                fingerprint.update(f"{path}\0{size}\0{sha256}\n".encode())
            yield Member(
                name=f"{root}/data/{path}", size=size, chunks=lambda key=key: storage.iter_chunks(key),
                chunks_from=lambda start, key=key: storage.iter_chunks(key, start),
                crc32=(lambda crc=crc: crc) if crc is not None else (lambda pk=pk, key=key: row_crc(pk, key)),
                crc_seen=None if crc is not None else (lambda value, pk=pk: seen.append(
                    DeliveryFile(pk=pk, crc32=value))))
            manifest.write(_manifest_line(path, sha256))
            totals["bytes"] += size
            totals["files"] += 1
        if streaming:
            store_seen()
        documents = []
        for name, key in self.documents.items():
            document = _Document(key)
            documents.append((name, document))
            if fingerprint is not None:
                fingerprint.update(f"{name}\0{key}\0{document.size}\0{_modified(key)}\n".encode())
            yield Member(name=f"{root}/data/{name}", size=document.size, chunks=document.chunks,
                         chunks_from=lambda start, key=key: storage.iter_chunks(key, start), crc32=document.crc32)
            totals["bytes"] += document.size
            totals["files"] += 1

        # manifest-sha256.txt: the rows' lines (spooled above), then the documents' (their
        # SHA-256 is known once they streamed, or read now when a range skipped them).
        rows_size = manifest.tell()

        def manifest_chunks() -> Iterator[bytes]:
            manifest.seek(0)
            remaining = rows_size
            while remaining and (block := manifest.read(min(storage.CHUNK, remaining))):
                remaining -= len(block)
                yield block
            yield b"".join(_manifest_line(name, document.sha256()) for name, document in documents)

        manifest_digest: list[str] = []

        def manifest_sha256() -> str:
            if not manifest_digest:
                digest = hashlib.sha256()
                for block in manifest_chunks():
                    digest.update(block)
                manifest_digest.append(digest.hexdigest())
            return manifest_digest[0]

        yield Member(name=f"{root}/manifest-sha256.txt",
                     size=rows_size + sum(len(_manifest_line(name, _NO_DIGEST)) for name, _ in documents),
                     chunks=manifest_chunks)
        if self._ids is None:
            self._ids = _certificate_ids(self.delivery)
        info = bag_info(delivery=self.delivery, payload_bytes=totals["bytes"], payload_files=totals["files"],
                        bagged=self.bagged, scope=self.scope, ids=self._ids)
        if fingerprint is not None:
            fingerprint.update(info)
        yield _bytes_member(f"{root}/bagit.txt", BAGIT_TXT)
        yield _bytes_member(f"{root}/bag-info.txt", info)

        def tagmanifest() -> bytes:
            return _tagmanifest([("bagit.txt", hashlib.sha256(BAGIT_TXT).hexdigest()),
                                 ("bag-info.txt", hashlib.sha256(info).hexdigest()),
                                 ("manifest-sha256.txt", manifest_sha256())])

        yield Member(name=f"{root}/tagmanifest-sha256.txt",
                     size=len(_tagmanifest([(n, _NO_DIGEST) for n in ("bagit.txt", "bag-info.txt",
                                                                      "manifest-sha256.txt")])),
                     chunks=lambda: [tagmanifest()], crc32=lambda: zlib.crc32(tagmanifest()))


def delivery_bag_stream(*, delivery: Delivery, files: QuerySet[DeliveryFile], documents: dict[str, str],
                        root: str, bagged: datetime, scope: str = "",
                        still_allowed: Callable[[], bool] = lambda: True) -> Iterator[bytes]:
    """The whole archive of DeliveryBag, streamed."""
    return DeliveryBag(delivery=delivery, files=files, documents=documents, root=root, bagged=bagged, scope=scope,
                       still_allowed=still_allowed).stream()
