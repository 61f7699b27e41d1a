"""Keep catalog_studyrollup current: one dataset's rows rebuilt in one statement."""
from __future__ import annotations

from django.db import connection, transaction

from catalog.search.dimensions import FIELD_SQL, SLICE_SQL

_DIMENSIONS = ("patient_sex", "age_band", "modalities", "body_part", "manufacturer", "model",
               "ethnicity", "slice_band", "field_band", "has_report", "has_annotation")
_SELECT = (
    "patient_sex, age_band, ARRAY(SELECT DISTINCT m FROM unnest(modalities) m ORDER BY m), "
    f"body_part, manufacturer, model, ethnicity, {SLICE_SQL}, {FIELD_SQL}, has_report, has_annotation"
)


def rollup_refresh(*, dataset_id: int) -> int:
    """Rebuild the dataset's rollup rows from its studies; returns the number of rows."""
    columns = ", ".join(_DIMENSIONS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM catalog_studyrollup WHERE dataset_id = %s", [dataset_id])
        cursor.execute(
            f"INSERT INTO catalog_studyrollup (dataset_id, {columns}, studies, patients) "
            f"SELECT dataset_id, {_SELECT}, count(*), count(DISTINCT pseudo_patient_id) "
            "FROM catalog_study WHERE dataset_id = %s AND instance_count > 0 "
            f"GROUP BY dataset_id, {', '.join(str(i) for i in range(2, len(_DIMENSIONS) + 2))}",
            [dataset_id],
        )
        rows = cursor.rowcount
    from catalog.search.columnar import bump_version

    bump_version()
    return rows


def rollup_refresh_all() -> int:
    """Every dataset's rows (after a bulk load; the worker refreshes per dataset)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM catalog_dataset")
        ids = [row[0] for row in cursor.fetchall()]
    return sum(rollup_refresh(dataset_id=i) for i in ids)
