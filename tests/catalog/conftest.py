"""Fixtures for the catalog tests: `catalog`, a small published catalog of studies for the
search tests (three datasets, two providers; test_search.py has its own dataset-level one)."""
from __future__ import annotations

import random
from datetime import date
from decimal import Decimal

import pytest

from catalog.models import Dataset, Study
from catalog.search.memory.snapshots import snapshot_refresh
from marketplace.models import Organization

SEXES, BANDS = ["F", "M", ""], ["18-29", "40-49", "60-69", "unknown"]
MODALITIES, BODY = [["CT"], ["MR"], ["CT", "PT"], ["CR"]], ["CHEST", "HEAD", "KNEE"]
MAKERS = [("GE", "Revolution"), ("SIEMENS", "Force"), ("PHILIPS", "Ingenia")]


def _studies(dataset: Dataset, n: int, rng: random.Random, patients: int) -> None:
    rows = []
    for i in range(n):
        maker, model = rng.choice(MAKERS)
        rows.append(Study(
            dataset=dataset, study_uid=f"2.25.{dataset.pk}.{i}", pseudo_patient_id=f"P-{dataset.pk}-{i % patients}",
            patient_sex=rng.choice(SEXES), age_band=rng.choice(BANDS), modalities=rng.choice(MODALITIES),
            body_part=rng.choice(BODY), manufacturer=maker, model=model,
            ethnicity=rng.choice(["", "ASIAN", "WHITE"]), slice_thickness=rng.choice([None, 0.6, 1.25, 3.0, 7.0]),
            field_strength=rng.choice([None, 1.5, 3.0]), has_report=rng.random() < 0.3,
            has_annotation=rng.random() < 0.2, description="axial chest study",
            # Spread without drawing from rng (the other fields stay as they were).
            instance_count=1 + (i * 37) % 200,
            study_date=None if i % 7 == 0 else date(2015 + i % 9, 1 + i % 12, 1 + i % 28)))
    Study.objects.bulk_create(rows)
    snapshot_refresh(dataset_id=dataset.pk)


@pytest.fixture
def catalog(provider, make_member):
    rng = random.Random(7)
    _, other = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    made = []
    for i, (org, n, price, licence, browse) in enumerate([
        (provider, 400, "2.00", "academic", True), (other, 250, "5.00", "commercial", False),
        (other, 6, "1.00", "free", True),
    ]):
        ds = Dataset.objects.create(provider=org, title=f"Set {i}", status=Dataset.Status.PUBLISHED,
                                    price_per_study=Decimal(price), licence_type=licence,
                                    country=["NZ", "DE", "DE"][i], allow_study_browsing=browse,
                                    conditions=["ICD10:J18.9|Pneumonia"] if i != 1 else [])
        _studies(ds, n, rng, patients=max(1, n // 3))
        made.append(ds)
    draft = Dataset.objects.create(provider=provider, title="Draft", status=Dataset.Status.DRAFT)
    _studies(draft, 50, rng, patients=10)
    return made


