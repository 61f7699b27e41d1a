"""Catalog writes. Import from here: `from catalog.services import dataset_publish`."""
from catalog.services.datasets import (
    dataset_create,
    dataset_publish,
    dataset_submit_for_review,
    dataset_transition,
    dataset_update,
)
from catalog.services.ingestion import (
    upload_batch_finish,
    upload_batch_ingest,
    upload_file_ingest,
    upload_files_ingest,
)
from catalog.services.stats import dataset_refresh_stats
from catalog.services.upload_batches import (
    upload_batch_fail,
    upload_batch_retry,
    upload_batch_transition,
    upload_batches_recover_stuck,
)
from catalog.services.uploads import upload_batch_create

__all__ = [
    "dataset_create",
    "dataset_publish",
    "dataset_refresh_stats",
    "dataset_submit_for_review",
    "dataset_transition",
    "dataset_update",
    "upload_batch_create",
    "upload_batch_fail",
    "upload_batch_finish",
    "upload_batch_ingest",
    "upload_batch_retry",
    "upload_batch_transition",
    "upload_batches_recover_stuck",
    "upload_file_ingest",
    "upload_files_ingest",
]
