"""Facet counts and cohort figures without keywords, from numpy columns in memory.

A rollup over eleven dimensions is nearly as long as the studies themselves, and
PostgreSQL groups a million rows in seconds on two cores. So each web process holds the
search dimensions of every live study as small integer codes (about 20 MB per million
studies), loaded once per version of the data (``SearchState.version``, bumped by the
worker whenever a dataset's studies change) and counts with vector operations: one mask
per filter, one ``bincount`` per facet. Keyword queries and study pages stay on
PostgreSQL (its full-text index), see postgres.py.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
import numpy as np
from django.db import connection

from catalog.search.dimensions import FIELD_SQL, SLICE_SQL, STUDY_FACETS, StudyQuery
from catalog.search.postgres import DatasetInfo, PostgresSearch

_PLAIN = [f for f in STUDY_FACETS.values() if not f.array]
_SELECT = ", ".join(
    ["id", "dataset_id", "pseudo_patient_id", "modalities"]
    + [{"slice_thickness": SLICE_SQL, "field_strength": FIELD_SQL}.get(f.name, f.column) for f in _PLAIN])


@dataclass
class Columns:
    version: int
    ids: np.ndarray  # int64 study id per row, ascending
    dataset: np.ndarray  # int32 dataset id per study
    patient: np.ndarray  # int32 patient code (unique per dataset and pseudonym)
    codes: dict[str, np.ndarray]  # facet -> int16 code per study
    values: dict[str, list[str]]  # facet -> value per code
    modality_bits: np.ndarray  # uint64: bit i set when the study has modality_values[i]
    modality_values: list[str]

    @property
    def size(self) -> int:
        return len(self.dataset)


def _current_version() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version FROM catalog_searchstate WHERE id = 1")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _load(version: int) -> Columns:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SELECT} FROM catalog_study WHERE instance_count > 0 ORDER BY id")
        rows = cursor.fetchall()
    count = len(rows)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=count)
    dataset = np.fromiter((r[1] for r in rows), dtype=np.int32, count=count)
    patient_keys = [f"{r[1]}:{r[2]}" for r in rows]
    _, patient = np.unique(np.array(patient_keys, dtype=object), return_inverse=True) if count else (None, np.zeros(0, np.int64))
    codes: dict[str, np.ndarray] = {}
    values: dict[str, list[str]] = {}
    for offset, facet in enumerate(_PLAIN, start=4):
        raw = [("true" if r[offset] else "false") if facet.boolean else (r[offset] or "") for r in rows]
        uniques, inverse = np.unique(np.array(raw, dtype=object), return_inverse=True) if count else ([], np.zeros(0))
        codes[facet.name] = inverse.astype(np.int16)
        values[facet.name] = [str(v) for v in uniques]
    modality_values = sorted({m for r in rows for m in (r[3] or [])})[:64]
    bit = {m: np.uint64(1) << np.uint64(i) for i, m in enumerate(modality_values)}
    bits = np.fromiter((sum((int(bit[m]) for m in set(r[3] or []) if m in bit), 0) for r in rows),
                       dtype=np.uint64, count=count)
    return Columns(version, ids, dataset, patient.astype(np.int32), codes, values, bits, modality_values)


_lock = threading.Lock()
_cached: Columns | None = None


def columns() -> Columns:
    """The current columns (reloaded when the worker has changed the data)."""
    global _cached
    version = _current_version()
    if _cached is None or _cached.version != version:
        with _lock:
            if _cached is None or _cached.version != version:
                _cached = _load(version)
    return _cached


_KEYWORD_CACHE_SIZE = 32
_keyword_rows: dict[tuple[int, str], np.ndarray] = {}


def keyword_rows(cols: Columns, q: str) -> np.ndarray:
    """Row positions of the studies matching keywords (PostgreSQL's full-text index finds
    them; the rows are kept per data version, so refining facets under the same keywords
    does not search again)."""
    key = (cols.version, q)
    rows = _keyword_rows.get(key)
    if rows is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM catalog_study WHERE instance_count > 0 AND "
                           "search_vector @@ websearch_to_tsquery('english', %s)", [q])
            ids = np.fromiter((r[0] for r in cursor.fetchall()), dtype=np.int64)
        positions = np.searchsorted(cols.ids, ids)
        inside = positions < len(cols.ids)
        positions, ids = positions[inside], ids[inside]
        rows = positions[cols.ids[positions] == ids]  # studies loaded into this version
        with _lock:
            if len(_keyword_rows) >= _KEYWORD_CACHE_SIZE:
                _keyword_rows.pop(next(iter(_keyword_rows)))
            _keyword_rows[key] = rows
    return rows


class ColumnarSearch(PostgresSearch):
    """PostgresSearch with the counts done on the in-memory columns (keywords select the
    rows through PostgreSQL's full-text index first)."""

    name = "columnar"

    @staticmethod
    def _keyword_mask(cols: Columns, query: StudyQuery) -> np.ndarray | None:
        if not query.q:
            return None
        mask = np.zeros(cols.size, dtype=bool)
        mask[keyword_rows(cols, query.q)] = True
        return mask

    # -- masks ---------------------------------------------------------------------------

    @staticmethod
    def _dataset_mask(cols: Columns, ids: list[int]) -> np.ndarray:
        if not len(cols.dataset) or not ids:
            return np.zeros(cols.size, dtype=bool)
        table = np.zeros(max(int(cols.dataset.max()), max(ids)) + 1, dtype=bool)
        table[ids] = True
        return table[cols.dataset]

    @staticmethod
    def _filter_mask(cols: Columns, name: str, wanted: list[str]) -> np.ndarray:
        if STUDY_FACETS[name].array:
            selected = np.uint64(0)
            for value in wanted:
                if value in cols.modality_values:
                    selected |= np.uint64(1) << np.uint64(cols.modality_values.index(value))
            return (cols.modality_bits & selected) != 0
        allowed = np.array([v in wanted for v in cols.values[name]] or [False], dtype=bool)
        return allowed[cols.codes[name]]

    def _masks(self, cols: Columns, query: StudyQuery) -> dict[str, np.ndarray]:
        return {name: self._filter_mask(cols, name, values)
                for name, values in query.study_filters().items()}

    @staticmethod
    def _combine(masks: list[np.ndarray], size: int) -> np.ndarray:
        if not masks:
            return np.ones(size, dtype=bool)
        out = masks[0].copy()
        for mask in masks[1:]:
            out &= mask
        return out

    def _tally(self, cols: Columns, name: str, rows: np.ndarray) -> dict[str, int]:
        if STUDY_FACETS[name].array:
            bits = cols.modality_bits[rows]
            out = {}
            for i, value in enumerate(cols.modality_values):
                n = int(np.count_nonzero(bits & (np.uint64(1) << np.uint64(i))))
                if n:
                    out[value] = n
            return out
        counts = np.bincount(cols.codes[name][rows], minlength=len(cols.values[name]))
        return {cols.values[name][i]: int(n) for i in np.flatnonzero(counts) for n in [counts[i]]}

    # -- the backend interface -------------------------------------------------------------

    def counts(self, query: StudyQuery, datasets: dict[int, DatasetInfo], *,
               facets: bool = True) -> dict[str, dict[str, int]]:
        cols = columns()
        universe = self._dataset_mask(cols, list(datasets))
        keyword = self._keyword_mask(cols, query)
        if keyword is not None:
            universe &= keyword
        chosen = self._dataset_mask(cols, [i for i, info in datasets.items() if self.passes(info, query)])
        masks = self._masks(cols, query)
        study_match = self._combine(list(masks.values()), cols.size) & universe
        rows = np.flatnonzero(study_match)
        per_dataset = np.bincount(cols.dataset[rows]) if len(rows) else np.zeros(0, np.int64)
        out: dict[str, dict[str, int]] = {
            "dataset": {str(i): int(per_dataset[i]) for i in np.flatnonzero(per_dataset)}}
        if not facets:
            return out
        everything = np.flatnonzero(study_match & chosen)
        for name in STUDY_FACETS:
            if name in masks:
                others = [m for other, m in masks.items() if other != name]
                rows_for = np.flatnonzero(self._combine(others, cols.size) & universe & chosen)
            else:
                rows_for = everything
            out[name] = self._tally(cols, name, rows_for)
        return out

    def breakdown(self, query: StudyQuery, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        return {name: self._tally(cols, name, rows) for name in dimensions}

    def by_dataset(self, query: StudyQuery, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        out: dict[int, dict[str, int]] = {}
        for dataset_id in np.unique(cols.dataset[rows]):
            subset = rows[cols.dataset[rows] == dataset_id]
            out[int(dataset_id)] = self._tally(cols, dimension, subset)
        return out

    def patients(self, query: StudyQuery, dataset_ids: list[int]) -> dict[int, int]:
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        if not len(rows):
            return {}
        # Patient codes are unique per dataset: distinct (dataset, patient) pairs.
        pairs = np.unique(cols.patient[rows])
        owners = np.zeros(int(cols.patient.max()) + 1, dtype=np.int32)
        owners[cols.patient] = cols.dataset
        per_dataset = np.bincount(owners[pairs])
        return {int(i): int(per_dataset[i]) for i in np.flatnonzero(per_dataset)}

    def _rows(self, cols: Columns, query: StudyQuery, dataset_ids: list[int]) -> np.ndarray:
        masks = list(self._masks(cols, query).values())
        keyword = self._keyword_mask(cols, query)
        if keyword is not None:
            masks.append(keyword)
        return np.flatnonzero(self._combine(masks, cols.size) & self._dataset_mask(cols, dataset_ids))


def bump_version() -> None:
    """Called by the worker after a dataset's studies changed: web processes reload.
    A random version, not a counter: a restored or rolled-back database cannot bring an
    old number back to mean other data."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO catalog_searchstate (id, version) VALUES (1, floor(random() * 9e18)::bigint) "
            "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version")


__all__ = ["ColumnarSearch", "Columns", "bump_version", "columns"]
