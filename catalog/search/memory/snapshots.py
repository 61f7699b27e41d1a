"""Per-dataset column snapshots: the worker's side of the in-memory search (columnar.py).

When a dataset's studies change, the worker encodes that dataset's search dimensions as
small integer codes with their own vocabularies (numpy, compressed) into one row of
catalog_studycolumns, with a new random version. Web processes compare versions (one
small query) and fetch only the snapshots that changed, so a new upload costs them the
bytes of its dataset, not a re-read of a million studies.
"""
from __future__ import annotations

import io
import secrets
from dataclasses import dataclass

import numpy as np
from django.db import connection

from catalog.facets import STUDY_FACETS

PLAIN_FACETS = [f for f in STUDY_FACETS.values() if not f.array]
_SELECT = ", ".join(
    ["id", "pseudo_patient_id", "modalities"]
    + [f.on_study() for f in PLAIN_FACETS]  # a band facet's SQL expression, else its column
    + ["study_date", "instance_count"])  # for the newest and size sorts


@dataclass
class Snapshot:
    """One dataset's studies: local codes and the vocabularies they index."""

    ids: np.ndarray  # int64 study ids, ascending
    patients: np.ndarray  # int32 local patient codes
    codes: dict[str, np.ndarray]  # facet -> int16 local codes
    vocab: dict[str, list[str]]  # facet -> values (the modality facet: one bit per value)
    modality_bits: np.ndarray  # uint64
    # int32 study date as a day number (0: none) and instance count; None in snapshots
    # written before they were added (those sorts then run in SQL until the next refresh).
    study_dates: np.ndarray | None = None
    instance_counts: np.ndarray | None = None
    # Written since keyword postings are kept with the search vectors (keywords.py); with
    # older snapshots keywords go to PostgreSQL's full-text index until the next refresh.
    keyword_postings: bool = False

    def to_bytes(self) -> bytes:
        arrays = {"ids": self.ids, "patients": self.patients, "modality_bits": self.modality_bits}
        if self.keyword_postings:
            arrays["keyword_postings"] = np.ones(1, dtype=np.int8)
        if self.study_dates is not None and self.instance_counts is not None:
            arrays["study_dates"], arrays["instance_counts"] = self.study_dates, self.instance_counts
        for name, codes in self.codes.items():
            arrays[f"codes_{name}"] = codes
        for name, values in self.vocab.items():
            arrays[f"vocab_{name}"] = np.array(values, dtype=str)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Snapshot:
        with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as data:
            names = [f.name for f in PLAIN_FACETS]
            return cls(
                ids=data["ids"], patients=data["patients"], modality_bits=data["modality_bits"],
                codes={name: data[f"codes_{name}"] for name in names},
                vocab={name: [str(v) for v in data[f"vocab_{name}"]] for name in [*names, "modality"]},
                study_dates=data["study_dates"] if "study_dates" in data.files else None,
                instance_counts=data["instance_counts"] if "instance_counts" in data.files else None,
                keyword_postings="keyword_postings" in data.files,
            )


def _encode(raw: list[str]) -> tuple[np.ndarray, list[str]]:
    vocab = sorted(set(raw))
    index = {value: i for i, value in enumerate(vocab)}
    return np.fromiter((index[v] for v in raw), dtype=np.int16, count=len(raw)), vocab


def build_snapshot(dataset_id: int) -> Snapshot:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SELECT} FROM catalog_study WHERE dataset_id = %s "
                       "AND instance_count > 0 ORDER BY id", [dataset_id])
        rows = cursor.fetchall()
    patients, _ = _encode([r[1] for r in rows])
    codes, vocab = {}, {}
    for offset, facet in enumerate(PLAIN_FACETS, start=3):
        raw = [("true" if r[offset] else "false") if facet.boolean else str(r[offset] or "") for r in rows]
        codes[facet.name], vocab[facet.name] = _encode(raw)
    modalities = sorted({m for r in rows for m in (r[2] or [])})[:64]
    bit = {m: 1 << i for i, m in enumerate(modalities)}
    bits = np.fromiter((sum(bit[m] for m in set(r[2] or []) if m in bit) for r in rows),
                       dtype=np.uint64, count=len(rows))
    vocab["modality"] = modalities
    dates = np.fromiter((r[-2].toordinal() if r[-2] else 0 for r in rows), dtype=np.int32, count=len(rows))
    sizes = np.fromiter((r[-1] for r in rows), dtype=np.int32, count=len(rows))
    return Snapshot(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                    patients.astype(np.int32), codes, vocab, bits, dates, sizes)


def snapshot_refresh(*, dataset_id: int) -> int:
    """Rebuild one dataset's snapshot (after its studies changed); returns its row count."""
    snapshot = build_snapshot(dataset_id)
    snapshot.keyword_postings = True
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO catalog_studycolumns (dataset_id, version, rows, blob) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (dataset_id) DO UPDATE SET version = EXCLUDED.version, rows = EXCLUDED.rows, "
            "blob = EXCLUDED.blob",
            # A random version: a restored database cannot bring an old number back.
            [dataset_id, secrets.randbits(62), len(snapshot.ids), snapshot.to_bytes()])
    return len(snapshot.ids)


def snapshot_versions() -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT dataset_id, version FROM catalog_studycolumns")
        return {int(d): int(v) for d, v in cursor.fetchall()}


def snapshots_fetch(dataset_ids: list[int]) -> dict[int, tuple[int, Snapshot]]:
    if not dataset_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT dataset_id, version, blob FROM catalog_studycolumns "
                       "WHERE dataset_id = ANY(%s)", [dataset_ids])
        return {int(d): (int(v), Snapshot.from_bytes(blob)) for d, v, blob in cursor.fetchall()}
