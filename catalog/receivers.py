"""A new dataset, however it is created (form, API, admin, demo data), is granted to its
provider's members at once: the grant is what the write checks read. A deleted one leaves
the search index (when there is one) once the deletion commits."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from catalog.datasets.grants import dataset_grant_provider
from catalog.models import Dataset


@receiver(post_save, sender=Dataset, dispatch_uid="catalog.dataset_grant_provider")
def dataset_created_grant(sender: Any, instance: Dataset, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        dataset_grant_provider(instance, acting_user=instance.created_by)


@receiver(post_delete, sender=Dataset, dispatch_uid="catalog.dataset_deleted_unindex")
def dataset_deleted_unindex(sender: Any, instance: Dataset, **kwargs: Any) -> None:
    if settings.ELASTICSEARCH_URL:
        from catalog.tasks import dataset_search_remove_task

        dataset_id = instance.pk
        transaction.on_commit(lambda: dataset_search_remove_task.delay(dataset_id=dataset_id))
