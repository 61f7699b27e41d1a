"""Search and cohort latency at a million studies, against DuckDB as a reference floor.

    python benchmarks/search_bench.py [--studies 1000000] [--runs 50] [--keep]

Starts a throwaway embedded PostgreSQL, migrates it, bulk-loads (COPY) 20 providers,
200 datasets with a realistic skew (a few large, many small), ~60,000 patients and the
studies, lets the worker's own services build the search vectors and column snapshots, then
runs a fixed set of queries through the product's search services (what the API calls)
``--runs`` times each and prints p50/p95 per query. The same aggregations run in DuckDB
over the same rows in memory; the last column is our p95 / DuckDB p95. Numbers only: no
timed assertions (not part of `make test`).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEXES = np.array(["F", "M", "O", ""])
SEX_P = [0.49, 0.48, 0.01, 0.02]
BANDS = np.array(["0-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+", "unknown"])
BAND_P = [0.05, 0.08, 0.1, 0.14, 0.18, 0.2, 0.15, 0.08, 0.02]
MODALITIES = np.array(["{CT}", "{MR}", "{CR}", "{DX}", "{US}", "{MG}", "{CT,PT}", "{NM}"])
MOD_P = [0.35, 0.25, 0.12, 0.1, 0.06, 0.06, 0.04, 0.02]
BODY = np.array(["CHEST", "HEAD", "ABDOMEN", "KNEE", "BREAST", "PELVIS", "SPINE", "HEART", "LIVER", ""])
BODY_P = [0.28, 0.2, 0.14, 0.08, 0.07, 0.07, 0.07, 0.04, 0.03, 0.02]
MAKERS = [("GE", "Revolution"), ("GE", "Discovery"), ("SIEMENS", "Force"), ("SIEMENS", "Skyra"),
          ("PHILIPS", "Ingenia"), ("CANON", "Aquilion"), ("FUJIFILM", "FDR"), ("HOLOGIC", "Selenia")]
MAKER_P = [0.14, 0.12, 0.16, 0.12, 0.18, 0.12, 0.09, 0.07]
ETHNIC = np.array(["", "WHITE", "ASIAN", "BLACK", "HISPANIC", "MAORI"])
ETHNIC_P = [0.55, 0.2, 0.1, 0.07, 0.06, 0.02]
WORDS = ["axial", "contrast", "routine", "follow", "up", "screening", "trauma", "pneumonia",
         "nodule", "fracture", "stroke", "tumour", "meniscus", "effusion", "angiography"]
CONDITIONS = ["ICD10:J18.9|Pneumonia", "ICD10:C34.9|Lung cancer", "ICD10:I63.9|Stroke",
              "ICD10:S83.2|Meniscus tear", "ICD10:C50.9|Breast cancer", "SCT:399068003|Prostate cancer"]


def _sizes(n_studies: int, datasets: int, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, datasets + 1) ** 1.1
    sizes = np.maximum(20, (weights / weights.sum() * n_studies).astype(int))
    sizes[0] += n_studies - sizes.sum()
    rng.shuffle(sizes)
    return sizes


def generate(n_studies: int, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = _sizes(n_studies, 200, rng)
    dataset = np.repeat(np.arange(200), sizes)
    patients_per = np.maximum(1, (sizes * 60_000 / n_studies).astype(int))
    offsets = np.concatenate([[0], np.cumsum(patients_per)[:-1]])
    patient = offsets[dataset] + (rng.random(n_studies) * patients_per[dataset]).astype(int)
    makers = rng.choice(len(MAKERS), n_studies, p=MAKER_P)
    modality = rng.choice(len(MODALITIES), n_studies, p=MOD_P)
    is_mr = MODALITIES[modality] == "{MR}"
    slice_t = np.where(rng.random(n_studies) < 0.15, np.nan,
                       rng.choice([0.5, 0.625, 1.0, 1.25, 2.5, 3.0, 5.0, 7.5], n_studies))
    field = np.where(is_mr, rng.choice([1.5, 3.0, 0.35, 7.0], n_studies, p=[0.55, 0.4, 0.03, 0.02]), np.nan)
    words = rng.choice(len(WORDS), (n_studies, 3))
    return {
        "dataset": dataset, "patient": patient,
        "sex": rng.choice(SEXES, n_studies, p=SEX_P), "band": rng.choice(BANDS, n_studies, p=BAND_P),
        "modalities": MODALITIES[modality], "body": rng.choice(BODY, n_studies, p=BODY_P),
        "maker": np.array([MAKERS[i][0] for i in range(len(MAKERS))])[makers],
        "model": np.array([MAKERS[i][1] for i in range(len(MAKERS))])[makers],
        "ethnicity": rng.choice(ETHNIC, n_studies, p=ETHNIC_P),
        "year": rng.integers(2005, 2025, n_studies), "slice": slice_t, "field": field,
        "report": rng.random(n_studies) < 0.3, "annotation": rng.random(n_studies) < 0.12,
        "description": np.array([" ".join(WORDS[j] for j in row) for row in words]),
        # Day of the year 1..365 (no date for 5%) and instances per study, for the sorts.
        "day": np.where(rng.random(n_studies) < 0.05, 0, rng.integers(1, 366, n_studies)),
        "instances": rng.integers(1, 1200, n_studies),
        "sizes": sizes,
    }


def _copy_studies(cursor, data: dict[str, np.ndarray], dataset_ids: list[int]) -> None:
    n = len(data["dataset"])
    chunk = 100_000
    columns = ("dataset_id, study_uid, pseudo_patient_id, patient_sex, age_band, description, "
               "modalities, body_part, manufacturer, model, ethnicity, study_year, slice_thickness, "
               "field_strength, has_report, has_annotation, series_count, instance_count, total_bytes, "
               "study_date")
    for start in range(0, n, chunk):
        buffer = io.StringIO()
        for i in range(start, min(n, start + chunk)):
            slice_t = "" if np.isnan(data["slice"][i]) else repr(float(data["slice"][i]))
            field = "" if np.isnan(data["field"][i]) else repr(float(data["field"][i]))
            day = int(data["day"][i])
            study_date = (date(int(data["year"][i]), 1, 1) + timedelta(days=day - 1)).isoformat() if day else "\\N"
            buffer.write(
                f"{dataset_ids[data['dataset'][i]]}\t2.25.{i}\tP-{data['patient'][i]:08d}\t{data['sex'][i]}\t"
                f"{data['band'][i]}\t{data['description'][i]}\t{data['modalities'][i]}\t{data['body'][i]}\t"
                f"{data['maker'][i]}\t{data['model'][i]}\t{data['ethnicity'][i]}\t{data['year'][i]}\t"
                f"{slice_t or chr(92) + 'N'}\t{field or chr(92) + 'N'}\t{'t' if data['report'][i] else 'f'}\t"
                f"{'t' if data['annotation'][i] else 'f'}\t3\t{data['instances'][i]}\t150000000\t{study_date}\n")
        buffer.seek(0)
        cursor.copy_expert(f"COPY catalog_study ({columns}) FROM STDIN", buffer)


def load(data: dict[str, np.ndarray]) -> tuple[list[int], dict[str, np.ndarray]]:
    from django.db import connection

    from catalog.models import Dataset, LicenceType
    from marketplace.models import Organization

    rng = np.random.default_rng(5)
    providers = [Organization.objects.create(name=f"Provider {i:02d}", kind="provider") for i in range(20)]
    datasets = []
    for i in range(200):
        datasets.append(Dataset(
            provider=providers[i % 20], title=f"Dataset {i:03d} {CONDITIONS[i % 6].split('|')[1]}",
            description="Synthetic benchmark dataset", status=Dataset.Status.PUBLISHED,
            price_per_study=Decimal(int(rng.integers(0, 200))), licence_type=list(LicenceType.values)[i % 3],
            country=["NZ", "DE", "US", "JP", "BR"][i % 5], conditions=[CONDITIONS[i % 6]],
            allow_study_browsing=i % 2 == 0))
    Dataset.objects.bulk_create(datasets)
    ids = [d.pk for d in datasets]
    with connection.cursor() as cursor:
        _copy_studies(cursor, data, ids)
    # The same dataset attributes for DuckDB (its "dataset" column is the index 0..199).
    attributes = {
        "id": np.arange(200), "price": np.array([float(d.price_per_study) for d in datasets]),
        "licence": np.array([d.licence_type for d in datasets]), "country": np.array([d.country for d in datasets]),
        "condition": np.array([d.conditions[0] for d in datasets]),
        "provider": np.array([providers[i % 20].name for i in range(200)]),
        "browse": np.array([d.allow_study_browsing for d in datasets]),
    }
    return ids, attributes


COHORT = {"sex": ["F"], "age_band": ["40-49", "50-59", "60-69"], "modality": ["CT"],
          "body_part": ["CHEST"], "manufacturer": ["GE", "SIEMENS"], "has_report": ["true"]}
# (label, key, kind, Query arguments): the product and DuckDB run the same specs.
SPECS = [
    ("facets, no filter", "facets", "facets", {}),
    ("keyword only", "kw", "facets", {"q": "pneumonia"}),
    ("keyword + 3 facets", "kw3", "facets",
     {"q": "nodule", "filters": {"sex": ["F"], "modality": ["CT"], "body_part": ["CHEST"]}}),
    ("keyword, broad + facet", "kwbroad", "facets", {"q": "axial", "filters": {"manufacturer": ["GE"]}}),
    ("sex", "sex", "facets", {"filters": {"sex": ["F"]}}),
    ("MR 3T", "mr3t", "facets", {"filters": {"modality": ["MR"], "field_strength": ["3T"]}}),
    ("age bands + maker", "agemaker", "facets", {"filters": {"age_band": ["40-49", "50-59"], "manufacturer": ["SIEMENS"]}}),
    ("chest with reports", "chestrep", "facets", {"filters": {"body_part": ["CHEST"], "has_report": ["true"]}}),
    ("ethnicity", "ethnic", "facets", {"filters": {"ethnicity": ["ASIAN", "MAORI"]}}),
    ("licence", "licence", "facets", {"filters": {"licence": ["commercial"]}}),
    ("condition", "condition", "facets", {"filters": {"condition": [CONDITIONS[0]]}}),
    ("price range", "price", "facets", {"price_min": Decimal(20), "price_max": Decimal(80)}),
    ("provider", "provider", "facets", {"filters": {"provider": ["Provider 03"]}}),
    ("thin slices", "slice", "facets", {"filters": {"slice_thickness": ["<1mm"]}}),
    ("country + annotations", "country", "facets", {"filters": {"country": ["DE"], "has_annotation": ["true"]}}),
    ("all makers (OR)", "allmakers", "facets", {"filters": {"manufacturer": [m for m, _ in MAKERS]}}),
    ("cohort + breakdown", "cohort", "cohort", {"filters": COHORT}),
    ("cohort of 3 + fill the gap", "cohort3", "cohort", {"filters": COHORT, "three": True}),
    ("studies page 1", "page1", "page", {"filters": {"sex": ["F"], "modality": ["CT"]}, "page": 1}),
    ("studies page 400 (deep)", "page400", "page", {"filters": {"modality": ["CT"]}, "page": 400}),
    ("studies keyword page 1", "kwpage", "page", {"q": "fracture", "filters": {"body_part": ["KNEE"]}, "page": 1}),
    ("studies newest first", "newest", "page", {"filters": {"modality": ["CT"]}, "sort": "newest", "page": 1}),
    ("studies by price, page 40", "byprice", "page", {"filters": {"sex": ["F"]}, "sort": "price", "page": 40}),
    ("studies largest first", "bysize", "page", {"sort": "size", "page": 1}),
]


def product_runner(spec: tuple, dataset_ids: list[int], backend):  # noqa: ANN001, ANN201
    from catalog.search.query import Query
    from catalog.search.service import cohort_summary, facets_and_total

    _, _, kind, args = spec
    args = dict(args)
    page = args.pop("page", 1)
    if args.pop("three", False):
        args["dataset_ids"] = dataset_ids[:3]
    query = Query(**args)
    if kind == "facets":
        return lambda: facets_and_total(query=query, user=None, backend=backend)
    if kind == "cohort":
        return lambda: cohort_summary(query=query, user=None, backend=backend)

    def run():  # noqa: ANN202
        ids = [i for i, info in backend.datasets(query).items()
               if info.allow_study_browsing and backend.passes(info, query)]
        return backend.studies(query, ids, offset=(page - 1) * 25, limit=25)
    return run


# DuckDB columns for each facet, and the same facet contract (all filters but its own).
DUCK_COLUMNS = {"modality": "modalities", "body_part": "body", "sex": "sex", "age_band": "band",
                "ethnicity": "ethnicity", "manufacturer": "maker", "model": "model",
                "slice_thickness": "slice_band", "field_strength": "field_band",
                "has_report": "report", "has_annotation": "annotation"}


def _list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


DATASET_PREDICATES = {
    "licence": lambda v: f"d.licence IN ({_list(v)})", "condition": lambda v: f"d.condition IN ({_list(v)})",
    "provider": lambda v: f"d.provider IN ({_list(v)})", "country": lambda v: f"d.country IN ({_list(v)})",
}


def _duck_condition(name: str, values: list[str]) -> str:
    column = DUCK_COLUMNS[name]
    if name == "modality":
        return "(" + " OR ".join(f"modalities LIKE '%{v}%'" for v in values) + ")"
    if name in ("has_report", "has_annotation"):
        return f"{column} IN ({', '.join('true' if v == 'true' else 'false' for v in values)})"
    return f"{column} IN ({_list(values)})"


def duck_sql(spec: tuple) -> list[str]:
    """The DuckDB statements computing what the product computes for this spec."""
    _, _, kind, args = spec
    filters = args.get("filters", {})
    study = {k: v for k, v in filters.items() if k in DUCK_COLUMNS}
    where_ds = [DATASET_PREDICATES[k](v) for k, v in filters.items() if k in DATASET_PREDICATES]
    if "price_min" in args:
        where_ds.append(f"d.price BETWEEN {args['price_min']} AND {args['price_max']}")
    base = [f"description LIKE '%{args['q']}%'"] if args.get("q") else []
    join = "FROM s JOIN d ON s.dataset = d.id"

    def where(skip: str | None = None, three: bool = bool(args.get("three"))) -> str:
        parts = base + where_ds + [_duck_condition(k, v) for k, v in study.items() if k != skip]
        parts += ["s.dataset < 3"] if three else []
        return " AND ".join(parts) or "TRUE"

    if kind == "page":
        offset = (args.get("page", 1) - 1) * 25
        order = {"newest": "s.study_day DESC, s.id", "price": "d.price, s.id",
                 "size": "s.instances DESC, s.id"}.get(args.get("sort", ""), "s.id")
        return [f"SELECT count(*) {join} WHERE {where()} AND d.browse",
                f"SELECT s.* {join} WHERE {where()} AND d.browse ORDER BY {order} LIMIT 25 OFFSET {offset}"]
    mix = ("age_band", "sex", "ethnicity", "manufacturer")
    if kind == "cohort":
        sql = [f"SELECT dataset, count(*), count(DISTINCT patient) {join} WHERE {where()} GROUP BY 1"]
        sql += [f"SELECT {DUCK_COLUMNS[n]}, count(*) {join} WHERE {where()} GROUP BY 1" for n in mix]
        if args.get("three"):  # fill the gap: the catalog's mix, and what other datasets add
            sql += [f"SELECT dataset, {DUCK_COLUMNS[n]}, count(*) {join} WHERE {where(n, three=False)} GROUP BY 1, 2"
                    for n in mix]
        return sql
    sql = [f"SELECT dataset, count(*) {join} WHERE {where()} GROUP BY 1"]
    for name, column in DUCK_COLUMNS.items():
        if name == "modality":
            sql.append(f"SELECT m, count(*) FROM (SELECT unnest(string_split(trim(modalities, '{{}}'), ',')) AS m "
                       f"{join} WHERE {where(name)}) GROUP BY 1")
        else:
            sql.append(f"SELECT {column}, count(*) {join} WHERE {where(name)} GROUP BY 1")
    return sql


def _bands(values: np.ndarray, bands: list[tuple[str, float, float]]) -> np.ndarray:
    out = np.full(len(values), "unknown", dtype=object)
    for label, low, high in bands:
        out[(values >= low) & (values < high)] = label
    return out


def duck_times(data: dict[str, np.ndarray], datasets: dict[str, np.ndarray], runs: int) -> dict[str, list[float]]:
    import duckdb

    from catalog.facets import FIELD_BANDS, SLICE_BANDS

    frame = {k: v for k, v in data.items() if k not in ("sizes", "slice", "field", "day")}
    frame["id"] = np.arange(len(data["dataset"]))
    # The study's day as a number, 0 without a date: last when newest come first, as the
    # product orders them (NULLS LAST).
    frame["study_day"] = np.where(data["day"] > 0, data["year"] * 1000 + data["day"], 0)
    frame["slice_band"] = _bands(np.nan_to_num(data["slice"], nan=-1), SLICE_BANDS).astype(str)
    frame["field_band"] = _bands(np.nan_to_num(data["field"], nan=-1), FIELD_BANDS).astype(str)
    con = duckdb.connect()
    con.register("frame_view", frame)
    con.register("datasets_view", datasets)
    con.execute("CREATE TABLE s AS SELECT * FROM frame_view")
    con.execute("CREATE TABLE d AS SELECT * FROM datasets_view")
    out = {}
    for spec in SPECS:
        statements = duck_sql(spec)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for sql in statements:
                con.execute(sql).fetchall()
            times.append(time.perf_counter() - t0)
        out[spec[1]] = times
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the database directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    from config.embedded import ensure_postgres, stop_postgres

    url = ensure_postgres(work / "postgres", durable=False)
    try:
        return _run(args, work, url)
    finally:  # also on Ctrl-C: no PostgreSQL left running
        if not args.keep:
            stop_postgres(work / "postgres")


def _run(args: argparse.Namespace, work: Path, url: str) -> int:
    # No broker is used here: a Redis URL that is never connected to.
    os.environ.update(DATABASE_URL=url, VAR_DIR=str(work), DJANGO_SETTINGS_MODULE="config.settings",
                      DEBUG="false", REDIS_URL="redis://127.0.0.1:9/0")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    print(f"# {args.studies:,} studies, 200 datasets, 20 providers; runs per query {args.runs}; 2 cores")
    t0 = time.perf_counter()
    data = generate(args.studies)
    print(f"# generated in {time.perf_counter() - t0:.1f} s; largest datasets "
          f"{sorted(data['sizes'])[-3:]}, smallest {sorted(data['sizes'])[:3]}")
    t0 = time.perf_counter()
    ids, dataset_attributes = load(data)
    print(f"# COPY into PostgreSQL {time.perf_counter() - t0:.1f} s")
    from catalog.models import Dataset
    from catalog.search import PostgresSearch, search_backend
    from catalog.search.memory.snapshots import snapshot_refresh
    from catalog.search.vectors import studies_refresh_search_vector

    t0 = time.perf_counter()
    for dataset in Dataset.objects.all():
        studies_refresh_search_vector(dataset=dataset)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sum(snapshot_refresh(dataset_id=i) for i in ids)
    t_snap = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE catalog_study")
        cursor.execute("SELECT sum(length(blob)) FROM catalog_studycolumns")
        snapshot_bytes = cursor.fetchone()[0]
    print(f"# worker: search vectors {t_vec:.1f} s, column snapshots {t_snap:.1f} s "
          f"({rows:,} studies, {snapshot_bytes / 1e6:.1f} MB compressed)")

    ours: dict[str, tuple[str, list[float]]] = {}
    cold: dict[str, float] = {}
    t0 = time.perf_counter()
    from catalog.search.memory.columnar import columns, forget_masks

    columns()
    print(f"# web process: search columns loaded in {time.perf_counter() - t0:.1f} s (once per data version)")
    # The same queries on the SQL-only backend, once each: why the counts run in memory.
    sql_ms = {}
    for spec in SPECS:
        run = product_runner(spec, ids, PostgresSearch())
        t0 = time.perf_counter()
        run()
        sql_ms[spec[1]] = (time.perf_counter() - t0) * 1000
    for spec in SPECS:
        label, key = spec[0], spec[1]
        run = product_runner(spec, ids, search_backend())
        t0 = time.perf_counter()
        run()  # first run: keyword rows are fetched once per keyword and data version
        cold[key] = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(args.runs):
            forget_masks()  # each run builds its filter masks anew (repeats within it count)
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        ours[key] = (label, times)
    duck = duck_times(data, dataset_attributes, args.runs)

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000

    print(f"\n{'query':32s} {'SQL only':>9s} {'first ms':>9s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'duckdb p95':>10s} {'ratio':>6s}")
    print("-" * 90)
    for key, (label, times) in ours.items():
        d95 = p(duck[key], 95)
        print(f"{label:32s} {sql_ms[key]:9.1f} {cold[key]:9.1f} {p(times, 50):8.1f} {p(times, 95):8.1f} "
              f"{d95:10.1f} {p(times, 95) / d95:6.1f}")
    print("\nours: the product's search services in-process (what /api/studies/ and /api/cohorts/ call), "
          "facet counts included, filter masks built anew each run (only repeats within a request "
          "reuse them); first: the first run (keyword rows fetched); SQL only: one run on "
          "the PostgreSQL-only backend; duckdb: the same aggregations over the same rows in memory.")
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
