"""Facet counts and cohort figures from numpy columns in memory.

A rollup over eleven dimensions is nearly as long as the studies themselves (855,140
rows for 1,000,000 studies, measured), and PostgreSQL groups a million rows in seconds on
two cores. So each web process holds the search dimensions of every live study as small
integer codes (about 20 MB per million studies), assembled from the per-dataset snapshots
the worker keeps current (snapshots.py; only changed datasets are fetched again), and
counts with vector operations: one mask per filter, one ``bincount`` per facet. Keywords
select rows through the worker's keyword postings (keywords.py); pages are sorted here
too, and only the rows of a page are read from PostgreSQL.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection

from catalog.facets import STUDY_FACETS
from catalog.models import Dataset
from catalog.search.memory import keywords
from catalog.search.memory.snapshots import PLAIN_FACETS, Snapshot, snapshot_versions, snapshots_fetch
from catalog.search.postgres import (
    DatasetInfo,
    PostgresSearch,
    dataset_passes,
    published_datasets,
    ranked_study_rows,
    study_rows,
)
from catalog.search.query import Query


@dataclass
class Columns:
    version: int  # changes whenever any dataset's snapshot does
    ids: np.ndarray  # int64 study id per row, ascending
    dataset: np.ndarray  # int32 dataset id per study
    patient: np.ndarray  # int32 patient code (unique per dataset and pseudonym)
    codes: dict[str, np.ndarray]  # facet -> int16 code per study
    values: dict[str, list[str]]  # facet -> value per code
    modality_bits: np.ndarray  # uint64: bit i set when the study has modality_values[i]
    modality_values: list[str]
    # int32 per study, for the newest and size sorts; None while any snapshot lacks them.
    study_date: np.ndarray | None = None  # day number, 0: none
    instance_count: np.ndarray | None = None
    # Every snapshot was written since keyword postings are kept (keywords.py).
    keyword_postings: bool = False

    @property
    def size(self) -> int:
        return len(self.dataset)


def _assemble(snapshots: dict[int, tuple[int, Snapshot]]) -> Columns:
    parts = [(d, s) for d, (_, s) in sorted(snapshots.items()) if len(s.ids)]
    version = hash(tuple(sorted((d, v) for d, (v, _) in snapshots.items())))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Columns(version, empty, empty.astype(np.int32), empty.astype(np.int32),
                       {f.name: empty.astype(np.int16) for f in PLAIN_FACETS},
                       {f.name: [] for f in PLAIN_FACETS}, empty.astype(np.uint64), [])
    ids = np.concatenate([s.ids for _, s in parts])
    dataset = np.concatenate([np.full(len(s.ids), d, dtype=np.int32) for d, s in parts])
    offsets = np.cumsum([0] + [int(s.patients.max()) + 1 for _, s in parts[:-1]])
    patient = np.concatenate([s.patients + np.int32(o) for (_, s), o in zip(parts, offsets)])
    codes, values = {}, {}
    for facet in PLAIN_FACETS:
        vocab = sorted({v for _, s in parts for v in s.vocab[facet.name]})
        index = {v: i for i, v in enumerate(vocab)}
        codes[facet.name] = np.concatenate([
            np.array([index[v] for v in s.vocab[facet.name]] or [0], dtype=np.int16)[s.codes[facet.name]]
            for _, s in parts])
        values[facet.name] = vocab
    modality_values = sorted({m for _, s in parts for m in s.vocab["modality"]})[:64]
    bit_of = {m: np.uint64(1) << np.uint64(i) for i, m in enumerate(modality_values)}
    remapped = []
    for _, s in parts:
        bits = np.zeros(len(s.ids), dtype=np.uint64)
        for i, m in enumerate(s.vocab["modality"]):
            if m in bit_of:
                has = (s.modality_bits >> np.uint64(i)) & np.uint64(1)
                bits |= has * bit_of[m]
        remapped.append(bits)
    order = np.argsort(ids, kind="stable")
    sortable = all(s.study_dates is not None and s.instance_counts is not None for _, s in parts)
    return Columns(version, ids[order], dataset[order], patient[order],
                   {k: v[order] for k, v in codes.items()}, values,
                   np.concatenate(remapped)[order], modality_values,
                   np.concatenate([s.study_dates for _, s in parts])[order] if sortable else None,
                   np.concatenate([s.instance_counts for _, s in parts])[order] if sortable else None,
                   all(s.keyword_postings for _, s in parts))


_lock = threading.Lock()
_snapshots: dict[int, tuple[int, Snapshot]] = {}
_cached: Columns | None = None


def columns() -> Columns:
    """The current columns: snapshots that changed since the last call are fetched."""
    global _cached
    versions = snapshot_versions()
    with _lock:
        held = {d: v for d, (v, _) in _snapshots.items()}
        if _cached is not None and held == versions:
            return _cached
        for dataset_id in [d for d in _snapshots if d not in versions]:
            del _snapshots[dataset_id]
        _snapshots.update(snapshots_fetch([d for d, v in versions.items() if held.get(d) != v]))
        _cached = _assemble(_snapshots)
        return _cached


def _dataset_mask(cols: Columns, ids: list[int]) -> np.ndarray:
    if not len(cols.dataset) or not ids:
        return np.zeros(cols.size, dtype=bool)
    table = np.zeros(max(int(cols.dataset.max()), max(ids)) + 1, dtype=bool)
    table[ids] = True
    return table[cols.dataset]


def _filter_mask(cols: Columns, name: str, wanted: list[str]) -> np.ndarray:
    if STUDY_FACETS[name].array:
        selected = np.uint64(0)
        for value in wanted:
            if value in cols.modality_values:
                selected |= np.uint64(1) << np.uint64(cols.modality_values.index(value))
        return (cols.modality_bits & selected) != 0
    allowed = np.array([v in wanted for v in cols.values[name]] or [False], dtype=bool)
    return allowed[cols.codes[name]]


# Masks of recent filters and dataset sets, per data version: a cohort page asks for the
# same ones dozens of times (fill the gap relaxes one filter at a time), ~1 ms each at a
# million studies. One byte per study each: at most _MASKS_KEPT of them are kept.
_MASKS_KEPT = 24
_masks_kept: dict[tuple[Any, ...], np.ndarray] = {}


def forget_masks() -> None:
    """Drop the remembered masks (the benchmark times each query with none kept)."""
    with _lock:
        _masks_kept.clear()


def _remembered(cols: Columns, what: tuple[Any, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
    key = (cols.version, *what)
    mask = _masks_kept.get(key)
    if mask is None:
        mask = compute()
        mask.flags.writeable = False  # shared: nobody may change it in place
        with _lock:
            while len(_masks_kept) >= _MASKS_KEPT:
                _masks_kept.pop(next(iter(_masks_kept)))
            _masks_kept[key] = mask
    return mask


_KEYWORD_CACHE_SIZE = 32
_RANK_AT_MOST = 100_000  # more matches than this: SQL ranks them all itself
_keyword_rows: dict[tuple[int, str], np.ndarray] = {}


def keyword_rows(cols: Columns, q: str) -> np.ndarray:
    """Row positions of the studies matching keywords (from the worker's keyword postings,
    or PostgreSQL's full-text index for phrases and data indexed before the postings); the
    rows are kept per data version, so refining facets under the same keywords does not
    search again."""
    key = (cols.version, q)
    rows = _keyword_rows.get(key)
    if rows is None:
        ids = keywords.matching_ids(q) if cols.keyword_postings else None
        if ids is None:
            ids = _matching_ids(q)
        positions = np.searchsorted(cols.ids, ids)
        inside = positions < len(cols.ids)
        positions, ids = positions[inside], ids[inside]
        rows = positions[cols.ids[positions] == ids]  # studies loaded into this version
        with _lock:
            if len(_keyword_rows) >= _KEYWORD_CACHE_SIZE:
                _keyword_rows.pop(next(iter(_keyword_rows)))
            _keyword_rows[key] = rows
    return rows


# COPY ... (FORMAT binary) of one bigint column: a 19-byte header, then per row a field
# count (int16), a length (int32) and the value (int64), big-endian; a 2-byte trailer.
_COPY_ROW = np.dtype([("fields", ">i2"), ("length", ">i4"), ("id", ">i8")])


def _matching_ids(q: str) -> np.ndarray:
    """Ids of the studies whose text matches the keywords, as one binary COPY read into
    numpy (a common word matches hundreds of thousands of studies: no Python object per
    row)."""
    with connection.cursor() as cursor:
        select = cursor.mogrify("SELECT id FROM catalog_study WHERE "
                                "search_vector @@ websearch_to_tsquery('english', %s)", [q])
        buffer = io.BytesIO()
        cursor.copy_expert(f"COPY ({select.decode()}) TO STDOUT (FORMAT binary)", buffer)
    data = buffer.getbuffer()[19:-2]
    rows = np.frombuffer(data, dtype=_COPY_ROW)
    if len(data) % _COPY_ROW.itemsize or not (rows["length"] == 8).all():
        raise RuntimeError("unexpected COPY row layout")
    return rows["id"].astype(np.int64)


class ColumnarSearch:
    """The in-memory implementation of catalog.search.backend.SearchBackend: counts on the
    columns (keywords select the rows through the postings or PostgreSQL's full-text index
    first); dataset attributes and the pages it cannot sort here come from PostgreSQL
    (a PostgresSearch it holds, not a base class)."""

    name = "columnar"

    def __init__(self) -> None:
        self._sql = PostgresSearch()

    def datasets(self, query: Query) -> dict[int, DatasetInfo]:
        return published_datasets(query)

    @staticmethod
    def passes(info: DatasetInfo, query: Query, skip: str | None = None) -> bool:
        return dataset_passes(info, query, skip)

    @staticmethod
    def _keyword_mask(cols: Columns, query: Query) -> np.ndarray | None:
        if not query.q:
            return None
        mask = np.zeros(cols.size, dtype=bool)
        mask[keyword_rows(cols, query.q)] = True
        return mask

    # -- masks ---------------------------------------------------------------------------

    @staticmethod
    def _dataset_mask(cols: Columns, ids: list[int]) -> np.ndarray:
        return _remembered(cols, ("datasets", tuple(sorted(ids))),
                           lambda: _dataset_mask(cols, ids)).copy()  # callers narrow it in place

    @staticmethod
    def _filter_mask(cols: Columns, name: str, wanted: list[str]) -> np.ndarray:
        return _remembered(cols, ("filter", name, tuple(sorted(wanted))),
                           lambda: _filter_mask(cols, name, wanted))

    def _masks(self, cols: Columns, query: Query) -> dict[str, np.ndarray]:
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

    def counts(self, query: Query, datasets: dict[int, DatasetInfo], *,
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

    def breakdown(self, query: Query, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        return {name: self._tally(cols, name, rows) for name in dimensions}

    def by_dataset(self, query: Query, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        out: dict[int, dict[str, int]] = {}
        for dataset_id in np.unique(cols.dataset[rows]):
            subset = rows[cols.dataset[rows] == dataset_id]
            out[int(dataset_id)] = self._tally(cols, dimension, subset)
        return out

    def patients(self, query: Query, dataset_ids: list[int]) -> dict[int, int]:
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

    def study_ids(self, query: Query, dataset_ids: list[int]) -> list[int]:
        """The very rows the counts counted (orders take what the cohort showed)."""
        if not dataset_ids:
            return []
        cols = columns()
        return sorted(int(i) for i in cols.ids[self._rows(cols, query, dataset_ids)])

    def studies(self, query: Query, dataset_ids: list[int], *, offset: int,
                limit: int) -> tuple[list[dict[str, Any]], int]:
        """Pages from the columns, in the same order as PostgresSearch.studies: relevance
        ranks only the matching rows (found here) in SQL; newest, size and price sort the
        matching rows here (a stable sort of rows in id order: ties stay in id order)."""
        cols = columns()
        rows = self._rows(cols, query, dataset_ids)
        if query.q and query.sort == "relevance":
            if len(rows) > _RANK_AT_MOST:
                return self._sql.studies(query, dataset_ids, offset=offset, limit=limit)
            return ranked_study_rows([int(i) for i in cols.ids[rows]], query.q, offset, limit), len(rows)
        total = len(rows)
        if query.sort != "relevance":
            key = self._sort_key(cols, query.sort, rows, dataset_ids)
            if key is None:
                return self._sql.studies(query, dataset_ids, offset=offset, limit=limit)
            rows = rows[_first_in_order(key, offset + limit)]
        page = cols.ids[rows[offset:offset + limit]]
        return study_rows([int(i) for i in page]), total

    @staticmethod
    def _sort_key(cols: Columns, sort: str, rows: np.ndarray,
                  dataset_ids: list[int]) -> np.ndarray | None:
        """Ascending key per row for ``sort``; None when the columns cannot give it."""
        if sort in ("price", "-price"):
            prices = np.zeros(max([*dataset_ids, int(cols.dataset.max(initial=0))]) + 1)
            for dataset_id, price in Dataset.objects.filter(id__in=dataset_ids).values_list(
                    "id", "price_per_study"):
                prices[dataset_id] = float(price)
            key = prices[cols.dataset[rows]]
            return -key if sort == "-price" else key
        if cols.study_date is None or cols.instance_count is None:
            return None
        if sort == "newest":  # latest first, studies without a date last
            dates = cols.study_date[rows].astype(np.int64)
            return np.where(dates > 0, -dates, 1)
        if sort == "size":
            return -cols.instance_count[rows].astype(np.int64)
        return None

    def _rows(self, cols: Columns, query: Query, dataset_ids: list[int]) -> np.ndarray:
        masks = list(self._masks(cols, query).values())
        keyword = self._keyword_mask(cols, query)
        if keyword is not None:
            masks.append(keyword)
        return np.flatnonzero(self._combine(masks, cols.size) & self._dataset_mask(cols, dataset_ids))


def _first_in_order(key: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest keys, in the order a stable sort gives them
    (ties in position order). A page needs only those: one partition pass, then a sort of
    the keys up to the count-th smallest (ties with it included), not of every row."""
    if count <= 0:
        return np.zeros(0, dtype=np.intp)
    if count >= len(key):
        return np.argsort(key, kind="stable")
    cutoff = np.partition(key, count - 1)[count - 1]
    candidates = np.flatnonzero(key <= cutoff)
    return candidates[np.argsort(key[candidates], kind="stable")][:count]


__all__ = ["ColumnarSearch", "Columns", "columns"]
