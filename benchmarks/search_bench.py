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
        "sizes": sizes,
    }


def _copy_studies(cursor, data: dict[str, np.ndarray], dataset_ids: list[int]) -> None:
    n = len(data["dataset"])
    chunk = 100_000
    columns = ("dataset_id, study_uid, pseudo_patient_id, patient_sex, age_band, description, "
               "modalities, body_part, manufacturer, model, ethnicity, study_year, slice_thickness, "
               "field_strength, has_report, has_annotation, series_count, instance_count, total_bytes")
    for start in range(0, n, chunk):
        buffer = io.StringIO()
        for i in range(start, min(n, start + chunk)):
            slice_t = "" if np.isnan(data["slice"][i]) else repr(float(data["slice"][i]))
            field = "" if np.isnan(data["field"][i]) else repr(float(data["field"][i]))
            buffer.write(
                f"{dataset_ids[data['dataset'][i]]}\t2.25.{i}\tP-{data['patient'][i]:08d}\t{data['sex'][i]}\t"
                f"{data['band'][i]}\t{data['description'][i]}\t{data['modalities'][i]}\t{data['body'][i]}\t"
                f"{data['maker'][i]}\t{data['model'][i]}\t{data['ethnicity'][i]}\t{data['year'][i]}\t"
                f"{slice_t or chr(92) + 'N'}\t{field or chr(92) + 'N'}\t{'t' if data['report'][i] else 'f'}\t"
                f"{'t' if data['annotation'][i] else 'f'}\t3\t300\t150000000\n")
        buffer.seek(0)
        cursor.copy_expert(f"COPY catalog_study ({columns}) FROM STDIN", buffer)


def load(data: dict[str, np.ndarray]) -> list[int]:
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
    return ids


def queries(dataset_ids: list[int], backend):  # noqa: ANN001, ANN201
    from catalog.search.dimensions import StudyQuery
    from catalog.search.service import cohort_summary, facets_and_total

    three = dataset_ids[:3]
    cohort = {"sex": ["F"], "age_band": ["40-49", "50-59", "60-69"], "modality": ["CT"],
              "body_part": ["CHEST"], "manufacturer": ["GE", "SIEMENS"], "has_report": ["true"]}

    def facets(**kw):  # noqa: ANN003, ANN202
        return lambda: facets_and_total(query=StudyQuery(**kw), user=None, backend=backend)

    def studies(page: int, **kw):  # noqa: ANN003, ANN202
        def run():  # noqa: ANN202
            query = StudyQuery(**kw)
            ids = [i for i, info in backend.datasets(query).items() if info.allow_study_browsing]
            return backend.studies(query, ids, offset=(page - 1) * 25, limit=25)
        return run

    return [
        ("facets, no filter", facets(), "facets"),
        ("keyword only", facets(q="pneumonia"), "kw"),
        ("keyword + 3 facets", facets(q="nodule", filters={"sex": ["F"], "modality": ["CT"], "body_part": ["CHEST"]}), "kw3"),
        ("keyword, broad + facet", facets(q="axial", filters={"manufacturer": ["GE"]}), "kwbroad"),
        ("sex", facets(filters={"sex": ["F"]}), "sex"),
        ("MR 3T", facets(filters={"modality": ["MR"], "field_strength": ["3T"]}), "mr3t"),
        ("age bands + maker", facets(filters={"age_band": ["40-49", "50-59"], "manufacturer": ["SIEMENS"]}), "agemaker"),
        ("chest with reports", facets(filters={"body_part": ["CHEST"], "has_report": ["true"]}), "chestrep"),
        ("ethnicity", facets(filters={"ethnicity": ["ASIAN", "MAORI"]}), "ethnic"),
        ("licence", facets(filters={"licence": ["commercial"]}), "licence"),
        ("condition", facets(filters={"condition": [CONDITIONS[0]]}), "condition"),
        ("price range", facets(price_min=Decimal(20), price_max=Decimal(80)), "price"),
        ("provider", facets(filters={"provider": ["Provider 03"]}), "provider"),
        ("thin slices", facets(filters={"slice_thickness": ["<1mm"]}), "slice"),
        ("country + annotations", facets(filters={"country": ["DE"], "has_annotation": ["true"]}), "country"),
        ("all makers (OR)", facets(filters={"manufacturer": [m for m, _ in MAKERS]}), "allmakers"),
        ("cohort + breakdown", lambda: cohort_summary(query=StudyQuery(filters=cohort), user=None, backend=backend), "cohort"),
        ("cohort of 3 + fill the gap", lambda: cohort_summary(
            query=StudyQuery(filters=cohort, dataset_ids=three), user=None, backend=backend), "cohort3"),
        ("studies page 1", studies(1, filters={"sex": ["F"], "modality": ["CT"]}), "page1"),
        ("studies page 400 (deep)", studies(400, filters={"modality": ["CT"]}), "page400"),
        ("studies keyword page 1", studies(1, q="fracture", filters={"body_part": ["KNEE"]}), "kwpage"),
    ]


DUCK = {
    "facets": ["SELECT sex, count(*) FROM s GROUP BY 1", "SELECT band, count(*) FROM s GROUP BY 1",
               "SELECT body, count(*) FROM s GROUP BY 1", "SELECT maker, count(*) FROM s GROUP BY 1",
               "SELECT dataset, count(*) FROM s GROUP BY 1"],
    "kw": ["SELECT body, count(*) FROM s WHERE description LIKE '%pneumonia%' GROUP BY 1",
           "SELECT dataset, count(*) FROM s WHERE description LIKE '%pneumonia%' GROUP BY 1"],
    "kw3": ["SELECT band, count(*) FROM s WHERE description LIKE '%nodule%' AND sex='F' AND modalities LIKE '%CT%' AND body='CHEST' GROUP BY 1"],
    "kwbroad": ["SELECT body, count(*) FROM s WHERE description LIKE '%axial%' AND maker='GE' GROUP BY 1"],
    "sex": ["SELECT band, count(*) FROM s WHERE sex='F' GROUP BY 1", "SELECT sex, count(*) FROM s GROUP BY 1"],
    "mr3t": ["SELECT body, count(*) FROM s WHERE modalities='{MR}' AND field BETWEEN 2.9 AND 3.1 GROUP BY 1"],
    "agemaker": ["SELECT sex, count(*) FROM s WHERE band IN ('40-49','50-59') AND maker='SIEMENS' GROUP BY 1"],
    "chestrep": ["SELECT maker, count(*) FROM s WHERE body='CHEST' AND report GROUP BY 1"],
    "ethnic": ["SELECT sex, count(*) FROM s WHERE ethnicity IN ('ASIAN','MAORI') GROUP BY 1"],
    "licence": ["SELECT sex, count(*) FROM s WHERE dataset % 3 = 0 GROUP BY 1"],
    "condition": ["SELECT sex, count(*) FROM s WHERE dataset % 6 = 0 GROUP BY 1"],
    "price": ["SELECT sex, count(*) FROM s WHERE dataset < 60 GROUP BY 1"],
    "provider": ["SELECT sex, count(*) FROM s WHERE dataset % 20 = 3 GROUP BY 1"],
    "slice": ["SELECT sex, count(*) FROM s WHERE slice < 1 GROUP BY 1"],
    "country": ["SELECT sex, count(*) FROM s WHERE dataset % 5 = 1 AND annotation GROUP BY 1"],
    "allmakers": ["SELECT sex, count(*) FROM s WHERE maker IN ('GE','SIEMENS','PHILIPS','CANON','FUJIFILM','HOLOGIC') GROUP BY 1"],
    "cohort": ["SELECT dataset, count(*), count(DISTINCT patient) FROM s WHERE sex='F' AND band IN ('40-49','50-59','60-69') AND modalities LIKE '%CT%' AND body='CHEST' AND maker IN ('GE','SIEMENS') AND report GROUP BY 1",
               "SELECT band, count(*) FROM s WHERE sex='F' AND band IN ('40-49','50-59','60-69') AND modalities LIKE '%CT%' AND body='CHEST' AND maker IN ('GE','SIEMENS') AND report GROUP BY 1"],
    "cohort3": ["SELECT dataset, count(*), count(DISTINCT patient) FROM s WHERE dataset < 3 AND sex='F' AND modalities LIKE '%CT%' AND body='CHEST' AND report GROUP BY 1",
                "SELECT dataset, band, count(*) FROM s WHERE modalities LIKE '%CT%' AND body='CHEST' AND report GROUP BY 1, 2"],
    "page1": ["SELECT * FROM s WHERE sex='F' AND modalities LIKE '%CT%' AND dataset % 2 = 0 ORDER BY id LIMIT 25"],
    "page400": ["SELECT * FROM s WHERE modalities LIKE '%CT%' AND dataset % 2 = 0 ORDER BY id LIMIT 25 OFFSET 9975"],
    "kwpage": ["SELECT * FROM s WHERE description LIKE '%fracture%' AND body='KNEE' AND dataset % 2 = 0 ORDER BY id LIMIT 25"],
}


def duck_times(data: dict[str, np.ndarray], runs: int) -> dict[str, list[float]]:
    import duckdb

    frame = {k: v for k, v in data.items() if k != "sizes"}  # noqa: F841 - read by duckdb by name
    frame["id"] = np.arange(len(data["dataset"]))
    con = duckdb.connect()
    con.execute("CREATE TABLE s AS SELECT * FROM frame")
    out = {}
    for key, sqls in DUCK.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for sql in sqls:
                con.execute(sql).fetchall()
            times.append(time.perf_counter() - t0)
        out[key] = times
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
    ids = load(data)
    print(f"# COPY into PostgreSQL {time.perf_counter() - t0:.1f} s")
    from catalog.models import Dataset
    from catalog.search import PostgresSearch, search_backend
    from catalog.search.snapshots import snapshot_refresh
    from catalog.services.stats import studies_refresh_search_vector

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
    from catalog.search.columnar import columns

    columns()
    print(f"# web process: search columns loaded in {time.perf_counter() - t0:.1f} s (once per data version)")
    # The same queries on the SQL-only backend, once each: why the counts run in memory.
    sql_ms = {}
    for label, run, key in queries(ids, PostgresSearch()):
        t0 = time.perf_counter()
        run()
        sql_ms[key] = (time.perf_counter() - t0) * 1000
    for label, run, key in queries(ids, search_backend()):
        t0 = time.perf_counter()
        run()  # first run: keyword rows are fetched once per keyword and data version
        cold[key] = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        ours[key] = (label, times)
    duck = duck_times(data, args.runs)

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
          "facet counts included; first: the first run (keyword rows fetched); SQL only: one run on "
          "the PostgreSQL-only backend; duckdb: the same aggregations over the same rows in memory.")
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
