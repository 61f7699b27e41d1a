"""Grants on datasets: every member of the provider organization manages its datasets
(edit, upload, price, see drafts), through the organization's group."""
from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import Dataset
from marketplace.grants import grant, objects_granted, organization_group
from marketplace.models import User

DATASET_MANAGE = "catalog.change_dataset"
DATASET_VIEW = "catalog.view_dataset"
PROVIDER_PERMS = [DATASET_MANAGE, DATASET_VIEW]


def dataset_grant_provider(dataset: Dataset, *, acting_user: User | None = None) -> None:
    grant(PROVIDER_PERMS, dataset, to=organization_group(dataset.provider_id), acting_user=acting_user)


def datasets_managed_by(user: User) -> QuerySet[Dataset]:
    return objects_granted(user, DATASET_MANAGE, Dataset.objects.all())
