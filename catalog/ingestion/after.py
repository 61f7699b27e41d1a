"""What runs after an ingestion, in order: everything the catalog derives from a dataset's
rows. One place: upload_batch_finish (catalog/ingestion/ingest.py) calls it before the batch
shows "done", and tests and the demo data call it to bring a dataset up to date.

  1. counts        studies/series/instances and the facet summaries (modalities, body parts...):
                   every step below reads them   (catalog/datasets/derived.py)
  2. list price    the price per study search sorts by: per image, flat and yearly plans follow
                   the counts                    (catalog/datasets/pricing.py)
  3. statistics    the dataset page's charts, completeness and warnings (catalog/datasets/derived.py)
  4. previews      a preview image for each series without one, up to 12 (catalog/datasets/derived.py)
  5. search vectors the studies' and the dataset's PostgreSQL search vectors: what keywords match
                   (catalog/search/vectors.py)
  6. keyword postings read from the study vectors, in the same transaction (catalog/search/memory/keywords.py,
                   called by step 5)
  7. search index  the Elasticsearch documents, only when ELASTICSEARCH_URL is set
                   (catalog/search/elastic.py, called by step 5)
  8. snapshots     the in-memory column snapshot the columnar search counts (catalog/search/memory/snapshots.py)

A dataset's title or conditions changing (no new rows) needs only steps 5-7:
catalog.tasks.dataset_search_refresh_task.
"""
from __future__ import annotations

from catalog.datasets.derived import dataset_refresh_counts, dataset_refresh_previews, dataset_statistics
from catalog.datasets.pricing import dataset_refresh_list_price
from catalog.models import Dataset
from catalog.search.vectors import dataset_refresh_search


def dataset_refresh_stats(*, dataset_id: int) -> Dataset:
    """Bring everything derived from one dataset's rows up to date, in the order above;
    returns the refreshed dataset."""
    dataset_refresh_counts(dataset_id=dataset_id)  # 1. the counts every later step reads
    dataset_refresh_list_price(dataset_id=dataset_id)  # 2. per image, flat and yearly plans follow the counts
    dataset_statistics(dataset_id=dataset_id)  # 3. the dataset page's charts
    dataset_refresh_previews(dataset_id=dataset_id)  # 4. the dataset page's preview images
    dataset = dataset_refresh_search(dataset_id=dataset_id)  # 5-7. search vectors, keyword postings, search index
    # imported when used: the snapshot is numpy columns (about 16 MB), refreshed by the worker
    from catalog.search.memory.snapshots import snapshot_refresh

    snapshot_refresh(dataset_id=dataset_id)  # 8. what the in-memory search counts
    return dataset


__all__ = ["dataset_refresh_stats"]
