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
the tag files, which by then know every checksum and the Payload-Oxum.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet

from catalog import storage
from workspaces.archive import Member, zip_stream
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
             scope: str = "") -> bytes:
    """bag-info.txt: who bagged it, when, how much payload, and which order, contract and
    certificate it belongs to."""
    fields = [
        ("Source-Organization", settings.PLATFORM_LEGAL_NAME),
        ("Bagging-Date", bagged.date().isoformat()),
        ("Payload-Oxum", f"{payload_bytes}.{payload_files}"),
        ("External-Identifier", f"order-{delivery.order_id}"),
        ("Delivery-Id", str(delivery.pk)),
        *_certificate_ids(delivery).items(),
    ]
    if scope:
        fields.append(("Internal-Sender-Description", f"Part of the delivery: {scope}"))
    return "".join(f"{label}: {value.replace(chr(10), ' ')}\n" for label, value in fields).encode("utf-8")


def _bytes_member(name: str, data: bytes) -> Member:
    return Member(name=name, size=len(data), chunks=lambda: [data])


def delivery_bag_stream(*, delivery: Delivery, files: QuerySet[DeliveryFile], documents: dict[str, str],
                        root: str, bagged: datetime, scope: str = "",
                        still_allowed: Callable[[], bool] = lambda: True) -> Iterator[bytes]:
    """The ZIP bytes of a bag rooted at `root/` holding `files` and `documents` (archive
    name -> storage key) as payload. `still_allowed` is asked every ACCESS_CHECK_EVERY
    files; when it says no, the stream stops (AccessEndedError) and the archive stays
    incomplete."""
    manifest = tempfile.SpooledTemporaryFile(max_size=_MANIFEST_IN_MEMORY)
    totals = {"bytes": 0, "files": 0}

    def payload(name: str, size: int, sha256: str) -> None:
        manifest.write(f"{sha256}  data/{_bag_path(name)}\n".encode())
        totals["bytes"] += size
        totals["files"] += 1

    def hashed(key: str, digest: hashlib._Hash) -> Iterator[bytes]:
        for chunk in storage.iter_chunks(key):
            digest.update(chunk)
            yield chunk

    def members() -> Iterator[Member]:
        rows = files.order_by("path").values_list("path", "storage_key", "size_bytes", "sha256")
        for count, (path, key, size, sha256) in enumerate(rows.iterator(chunk_size=500), start=1):
            if count % ACCESS_CHECK_EVERY == 0 and not still_allowed():
                raise AccessEndedError(f"download of delivery {delivery.pk} stopped: access ended")
            yield Member(name=f"{root}/data/{path}", size=size, chunks=lambda key=key: storage.iter_chunks(key))
            payload(path, size, sha256)
        for name, key in documents.items():
            digest = hashlib.sha256()
            size = storage.size(key)
            yield Member(name=f"{root}/data/{name}", size=size, chunks=lambda key=key, d=digest: hashed(key, d))
            # zip_stream wrote the member before asking for the next one: the digest is complete.
            payload(name, size, digest.hexdigest())

        manifest_size = manifest.tell()
        manifest_digest = hashlib.sha256()

        def manifest_chunks() -> Iterator[bytes]:
            manifest.seek(0)
            while block := manifest.read(storage.CHUNK):
                manifest_digest.update(block)
                yield block

        yield Member(name=f"{root}/manifest-sha256.txt", size=manifest_size, chunks=manifest_chunks)
        info = bag_info(delivery=delivery, payload_bytes=totals["bytes"], payload_files=totals["files"],
                        bagged=bagged, scope=scope)
        yield _bytes_member(f"{root}/bagit.txt", BAGIT_TXT)
        yield _bytes_member(f"{root}/bag-info.txt", info)
        tags = [("bagit.txt", hashlib.sha256(BAGIT_TXT).hexdigest()),
                ("bag-info.txt", hashlib.sha256(info).hexdigest()),
                ("manifest-sha256.txt", manifest_digest.hexdigest())]
        yield _bytes_member(f"{root}/tagmanifest-sha256.txt",
                            "".join(f"{digest}  {name}\n" for name, digest in tags).encode())

    with manifest:
        yield from zip_stream(members(), modified=bagged)
