"""Every model's plural reads as English in the admin ("Studies", not "Studys")."""
from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.urls import reverse

OUR_APPS = {"marketplace", "catalog", "orders", "ledger", "workspaces", "demo"}
# Names that are plural already (a model of several columns or postings) or the same in both.
UNCHANGED = {"series", "columns", "postings"}


def english_plural(name: str) -> str:
    if name.split()[-1] in UNCHANGED:
        return name
    if re.search(r"[^aeiou]y$", name):
        return name[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", name):
        return name + "es"
    return name + "s"


def test_english_plural_itself():
    assert [english_plural(w) for w in ("study", "saved search", "delivery", "box", "day", "series", "order")] == [
        "studies", "saved searches", "deliveries", "boxes", "days", "series", "orders"]


@pytest.mark.parametrize("model", [m for m in apps.get_models() if m._meta.app_label in OUR_APPS],
                         ids=lambda m: m._meta.label)
def test_the_plural_is_english(model):
    opts = model._meta
    assert str(opts.verbose_name_plural) == english_plural(str(opts.verbose_name))


@pytest.mark.django_db
def test_the_admin_index_says_studies(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert ">Studies<" in page and "Studys" not in page and "Saved searchs" not in page
