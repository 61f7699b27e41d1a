"""The PostgreSQL search backend: facet counts, cohort figures and study pages in SQL.

Each facet is counted with every filter but its own in one pass over the matching
studies (GROUPING SETS with one FILTERed count per facet); keywords use the full-text
index. Exact, and the reference the in-memory backend (memory/columnar.py) is tested against,
but it groups every matching study per request: at a million studies the product counts
with memory/columnar.py and uses this class for study pages only.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection

from catalog.facets import DATASET_LEVEL, STUDY_FACETS, Facet
from catalog.models import Dataset
from catalog.search.query import Query


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    title: str
    provider: str
    provider_id: int
    price_per_study: Decimal
    currency: str
    licence: str
    country: str
    conditions: tuple[str, ...]
    allow_study_browsing: bool
    disclosure_threshold: int | None = None  # the dataset's own, above the marketplace's


# What a study row shows (no pseudonymous patient id: listing is before purchase).
STUDY_COLUMNS = ("id, dataset_id, patient_sex, age_band, modalities, body_part, manufacturer, "
                 "model, ethnicity, study_year, slice_thickness, field_strength, has_report, "
                 "has_annotation, series_count, instance_count, description")


def study_rows(ids: list[int]) -> list[dict[str, Any]]:
    """The rows of these studies, in the order given."""
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {STUDY_COLUMNS} FROM catalog_study WHERE id = ANY(%s)", [ids])
        names = [c[0] for c in cursor.description]
        by_id = {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}
    return [by_id[i] for i in ids if i in by_id]


def ranked_study_rows(ids: list[int], q: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of these studies by keyword relevance (ties in study order)."""
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM catalog_study WHERE id = ANY(%s) ORDER BY "
            "ts_rank(search_vector, websearch_to_tsquery('english', %s)) DESC, id LIMIT %s OFFSET %s",
            [ids, q, limit, offset])
        page = [row[0] for row in cursor.fetchall()]
    return study_rows(page)


def condition_label(code: str) -> str:
    return code.split("|", 1)[1] if "|" in code else code


def dataset_values(info: DatasetInfo, name: str) -> list[str]:
    """A dataset's values of one dataset-level facet."""
    return {
        "condition": list(info.conditions),
        "licence": [info.licence],
        "provider": [info.provider],
        "country": [info.country] if info.country else [],
    }[name]


class _Source:
    """The studies to count (optionally those matching keywords), each weighing 1."""

    def __init__(self, query: Query) -> None:
        self.table = "catalog_study"
        self.weight = "1"
        self.where = "instance_count > 0"
        self.params: list[Any] = []
        if query.q:
            self.where += " AND search_vector @@ websearch_to_tsquery('english', %s)"
            self.params.append(query.q)

    def column(self, facet: Facet) -> str:
        return facet.on_study()


def _condition(source: _Source, facet: Facet, values: list[str], params: list[Any]) -> str:
    column = source.column(facet)
    if facet.array:
        params.append(values)
        return f"({column} && %s::varchar[])"
    if facet.boolean:
        params.append([v == "true" for v in values])
        return f"({column} = ANY(%s::boolean[]))"
    params.append(values)
    return f"({column}::text = ANY(%s::text[]))"


def _matching(query: Query, dataset_ids: list[int]) -> tuple[_Source, str, list[Any]]:
    """WHERE clause (and its parameters) for the studies matching every study-level filter
    and the keywords, in these datasets."""
    source = _Source(query)
    params = list(source.params)
    conditions = [_condition(source, STUDY_FACETS[n], v, params) for n, v in query.study_filters().items()]
    params.append(dataset_ids)
    return source, " AND ".join([source.where, *conditions, "dataset_id = ANY(%s::int[])"]), params


def published_datasets(query: Query) -> dict[int, DatasetInfo]:
    """Published datasets within the price range (and the query's dataset set): every
    backend reads dataset attributes from PostgreSQL through this."""
    qs = Dataset.objects.filter(status=Dataset.Status.PUBLISHED).select_related("provider")
    if query.dataset_ids is not None:
        qs = qs.filter(pk__in=query.dataset_ids)
    if query.price_min is not None:
        qs = qs.filter(price_per_study__gte=query.price_min)
    if query.price_max is not None:
        qs = qs.filter(price_per_study__lte=query.price_max)
    return {d.id: DatasetInfo(d.id, d.title, d.provider.name, d.provider_id, d.price_per_study,
                              d.currency, d.licence_type, d.country, tuple(d.conditions),
                              d.allow_study_browsing, d.disclosure_threshold) for d in qs}


def dataset_passes(info: DatasetInfo, query: Query, skip: str | None = None) -> bool:
    """Whether a dataset meets the query's dataset-level filters (all but ``skip``)."""
    for name in DATASET_LEVEL:
        wanted = query.filters.get(name)
        if wanted and name != skip and not set(wanted) & set(dataset_values(info, name)):
            return False
    return True


class PostgresSearch:
    """The SQL implementation of catalog.search.backend.SearchBackend."""

    name = "postgres"

    # -- datasets ------------------------------------------------------------------------

    def datasets(self, query: Query) -> dict[int, DatasetInfo]:
        return published_datasets(query)

    @staticmethod
    def passes(info: DatasetInfo, query: Query, skip: str | None = None) -> bool:
        return dataset_passes(info, query, skip)

    # -- counting ------------------------------------------------------------------------

    def counts(self, query: Query, datasets: dict[int, DatasetInfo], *,
               facets: bool = True) -> dict[str, dict[str, int]]:
        """{"dataset": {id: studies with every filter}, facet: {value: studies with every
        filter but the facet's own}} for the study-level facets (when ``facets``)."""
        if not datasets:
            return {"dataset": {}, **({name: {} for name in STUDY_FACETS} if facets else {})}
        source = _Source(query)
        params: list[Any] = []  # in the order of the placeholders: flags, then WHERE
        chosen = [i for i, info in datasets.items() if self.passes(info, query)]
        flags: dict[str, str] = {}
        for name, values in query.study_filters().items():
            flags[name] = _condition(source, STUDY_FACETS[name], values, params)
        params.append(chosen)
        flags["_dataset"] = "(dataset_id = ANY(%s::int[]))"
        params += source.params
        params.append(list(datasets))
        where = f"{source.where} AND dataset_id = ANY(%s::int[])"

        flag_columns = ", ".join(f"{cond} AS f_{name.strip('_')}" for name, cond in flags.items())
        plain = [f for f in STUDY_FACETS.values() if not f.array] if facets else []
        select_dims = ", ".join(f"{source.column(f)} AS {f.name}" for f in STUDY_FACETS.values())
        failures = " + ".join(f"(NOT f_{name.strip('_')})::int" for name in flags)
        base = (f"SELECT dataset_id, {source.weight} AS w, {select_dims}, {flag_columns} "
                f"FROM {source.table} WHERE {where}")

        def flag_all_but(skip: str | None) -> str:
            parts = [f"f_{name.strip('_')}" for name in flags if name != skip]
            return " AND ".join(parts) if parts else "TRUE"

        sums = [f"sum(w) FILTER (WHERE {flag_all_but('_dataset')}) AS c_dataset"]
        sums += [f"sum(w) FILTER (WHERE {flag_all_but(f.name)}) AS c_{f.name}" for f in plain]
        sets = ", ".join(["(dataset_id)", *[f"({f.name})" for f in plain]])
        groupings = ", ".join(f"GROUPING({c})" for c in ["dataset_id", *[f.name for f in plain]])
        values_sql = "".join(f"{f.name}::text, " for f in plain)
        sql = (f"SELECT dataset_id, {values_sql}{groupings}, {', '.join(sums)} "
               f"FROM ({base}) AS rows WHERE ({failures}) <= 1 GROUP BY GROUPING SETS ({sets})")
        out: dict[str, dict[str, int]] = {"dataset": {}}
        out.update({f.name: {} for f in plain})
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            width = len(plain)
            for row in cursor.fetchall():
                dataset_id, values = row[0], row[1:1 + width]
                grouping = row[1 + width:2 + 2 * width]
                totals = row[2 + 2 * width:]
                if grouping[0] == 0:
                    if totals[0]:
                        out["dataset"][str(dataset_id)] = int(totals[0])
                    continue
                index = list(grouping[1:]).index(0)
                if totals[1 + index]:
                    out[plain[index].name][values[index] or ""] = int(totals[1 + index])
            if facets:
                for facet in STUDY_FACETS.values():
                    if facet.array:
                        out[facet.name] = self._array_facet(cursor, facet, source, flags, params, base)
        return out

    def _array_facet(self, cursor: Any, facet: Facet, source: _Source, flags: dict[str, str],
                     params: list[Any], base: str) -> dict[str, int]:
        parts = [f"f_{name.strip('_')}" for name in flags if name != facet.name]
        cursor.execute(
            f"SELECT value, sum(w) FROM ({base}) AS rows, unnest({facet.name}) AS value "
            f"WHERE {' AND '.join(parts) or 'TRUE'} GROUP BY value", params)
        return {value: int(n) for value, n in cursor.fetchall() if n}

    def breakdown(self, query: Query, dataset_ids: list[int],
                  dimensions: list[str]) -> dict[str, dict[str, int]]:
        """Studies per value of each dimension with every filter applied (a cohort's mix)."""
        if not dataset_ids:
            return {name: {} for name in dimensions}
        source, where, params = _matching(query, dataset_ids)
        arrays = [name for name in dimensions if STUDY_FACETS[name].array]
        if arrays:  # a study with CT and PT counts once in each (as in the facets)
            out = self.breakdown(query, dataset_ids, [n for n in dimensions if n not in arrays]) \
                if len(arrays) < len(dimensions) else {}
            with connection.cursor() as cursor:
                for name in arrays:
                    cursor.execute(f"SELECT value, sum({source.weight}) FROM {source.table}, "
                                   f"unnest({source.column(STUDY_FACETS[name])}) AS value "
                                   f"WHERE {where} GROUP BY value", params)
                    out[name] = {value: int(n) for value, n in cursor.fetchall()}
            return {name: out[name] for name in dimensions}
        columns = [source.column(STUDY_FACETS[name]) for name in dimensions]
        sets = ", ".join(f"({c})" for c in columns)
        groupings = ", ".join(f"GROUPING({c})" for c in columns)
        sql = (f"SELECT {', '.join(c + '::text' for c in columns)}, {groupings}, sum({source.weight}) "
               f"FROM {source.table} WHERE {where} GROUP BY GROUPING SETS ({sets})")
        out: dict[str, dict[str, int]] = {name: {} for name in dimensions}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for row in cursor.fetchall():
                values, grouping, total = row[:len(columns)], row[len(columns):-1], row[-1]
                index = list(grouping).index(0)
                out[dimensions[index]][values[index] or ""] = int(total)
        return out

    def by_dataset(self, query: Query, dataset_ids: list[int],
                   dimension: str) -> dict[int, dict[str, int]]:
        """Studies per dataset and value of one dimension, every filter applied."""
        if not dataset_ids:
            return {}
        source, where, params = _matching(query, dataset_ids)
        column = source.column(STUDY_FACETS[dimension])
        table = source.table
        if STUDY_FACETS[dimension].array:  # one count per value of the list
            table, column = f"{source.table}, unnest({column}) AS value", "value"
        out: dict[int, dict[str, int]] = {}
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT dataset_id, {column}::text, sum({source.weight}) "
                           f"FROM {table} WHERE {where} GROUP BY 1, 2", params)
            for dataset_id, value, n in cursor.fetchall():
                out.setdefault(dataset_id, {})[value or ""] = int(n)
        return out

    def patients(self, query: Query, dataset_ids: list[int]) -> dict[int, int]:
        """Exact distinct patients per dataset among the matching studies."""
        if not dataset_ids:
            return {}
        _, where, params = _matching(query, dataset_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT dataset_id, count(DISTINCT pseudo_patient_id) FROM catalog_study "
                f"WHERE {where} GROUP BY dataset_id", params)
            return {dataset_id: int(n) for dataset_id, n in cursor.fetchall()}

    def study_ids(self, query: Query, dataset_ids: list[int]) -> list[int]:
        """Every matching study of these datasets (what an order of the cohort takes), by id.
        The dataset-level filters and price range are the caller's: pass only datasets
        that meet them."""
        if not dataset_ids:
            return []
        _, where, params = _matching(query, dataset_ids)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM catalog_study WHERE {where} ORDER BY id", params)
            return [row[0] for row in cursor.fetchall()]

    def studies(self, query: Query, dataset_ids: list[int], *, offset: int,
                limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of matching studies (of browsable datasets) and how many there are."""
        if not dataset_ids:
            return [], 0
        _, where, params = _matching(query, dataset_ids)
        rank = "0"
        price = "(SELECT d.price_per_study FROM catalog_dataset d WHERE d.id = catalog_study.dataset_id)"
        order = {"newest": "study_date DESC NULLS LAST, id", "size": "instance_count DESC, id",
                 "price": f"{price}, id", "-price": f"{price} DESC, id"}.get(query.sort, "id")
        if query.q and query.sort == "relevance":
            rank = "ts_rank(search_vector, websearch_to_tsquery('english', %s))"
            order = "rank DESC, id"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM catalog_study WHERE {where}", params)
            total = int(cursor.fetchone()[0])
            page_params = ([query.q] if rank != "0" else []) + params + [limit, offset]
            cursor.execute(
                f"SELECT {STUDY_COLUMNS}, {rank} AS rank FROM catalog_study WHERE {where} "
                f"ORDER BY {order} LIMIT %s OFFSET %s", page_params)
            names = [c[0] for c in cursor.description]
            rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        for row in rows:
            row.pop("rank", None)
        return rows, total
