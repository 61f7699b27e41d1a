"""Agreement templates are versioned: a version a contract uses keeps its text (a change in
the admin becomes the next version), one version is active at a time, and each contract
stores the SHA-256 of the exact text signed."""
from __future__ import annotations

import hashlib

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from factories.orders import place_order
from marketplace.models import AuditEvent
from orders.agreements import (
    AgreementTemplateError,
    dua_template_activate,
    dua_template_change,
    dua_template_create,
    next_version,
)
from orders.models import Contract, DuaTemplate
from orders.selectors import active_dua_template

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def change_url(template: DuaTemplate) -> str:
    return reverse("admin:orders_duatemplate_change", args=[template.pk])


def test_editing_a_used_template_in_the_admin_makes_the_next_version(admin_client, published_dataset, bob,
                                                                     dua) -> None:
    order = place_order(bob, published_dataset, dua)
    signed_text = order.contract.text
    page = admin_client.get(change_url(dua)).content.decode()
    assert 'name="version"' not in page  # a used version's number is fixed
    response = admin_client.post(change_url(dua), {"title": dua.title, "text": dua.text + "\n8. Governing law.\n",
                                                   "is_active": "on"}, follow=True)
    assert response.status_code == 200
    assert "is part of signed contracts and was kept" in response.content.decode()
    old = DuaTemplate.objects.get(pk=dua.pk)
    new = DuaTemplate.objects.exclude(pk=dua.pk).get()
    assert (old.version, old.text, old.is_active) == ("1.0", dua.text, False)
    assert (new.version, new.is_active) == ("1.1", True) and new.text.endswith("8. Governing law.\n")
    assert active_dua_template() == new
    contract = Contract.objects.get(pk=order.contract.pk)
    assert (contract.template_id, contract.template_version, contract.text) == (dua.pk, "1.0", signed_text)
    assert AuditEvent.objects.filter(action="dua_template.new_version", object_id=str(new.pk)).exists()
    # The next order signs the new version.
    second = place_order(bob, published_dataset, new)
    assert second.contract.template_version == "1.1" and "8. Governing law." in second.contract.text


def test_saving_a_used_template_unchanged_makes_no_version(admin_client, published_dataset, bob, dua) -> None:
    place_order(bob, published_dataset, dua)
    # As a browser sends a textarea: CRLF line ends.
    response = admin_client.post(change_url(dua), {"title": dua.title, "text": dua.text.replace("\n", "\r\n"),
                                                   "is_active": "on"})
    assert response.status_code == 302
    assert list(DuaTemplate.objects.values_list("version", "is_active")) == [("1.0", True)]


def test_an_unused_template_is_edited_in_place(admin_client, dua) -> None:
    draft = dua_template_create(version="2", title="Draft", text="first", is_active=False, acting_user=None)
    response = admin_client.post(change_url(draft), {"version": "2", "title": "Draft", "text": "second"})
    assert response.status_code == 302
    assert DuaTemplate.objects.count() == 2
    draft.refresh_from_db()
    assert (draft.text, draft.is_active) == ("second", False)
    assert active_dua_template() == dua


def test_activating_one_template_deactivates_the_others(admin_client, dua) -> None:
    response = admin_client.post(reverse("admin:orders_duatemplate_add"),
                                 {"version": "2", "title": "Second", "text": "two", "is_active": "on"})
    assert response.status_code == 302
    second = DuaTemplate.objects.get(version="2")
    assert list(DuaTemplate.objects.filter(is_active=True)) == [second]
    dua_template_activate(template=dua, acting_user=None)
    assert list(DuaTemplate.objects.filter(is_active=True)) == [dua]


def test_the_database_allows_one_active_template(dua) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        DuaTemplate.objects.create(version="x", title="x", text="x", is_active=True)


def test_the_active_template_is_not_switched_off_alone(admin_client, dua) -> None:
    response = admin_client.post(change_url(dua), {"version": dua.version, "title": dua.title, "text": dua.text})
    assert response.status_code == 200
    assert "activate another version instead" in response.content.decode()
    assert DuaTemplate.objects.get(pk=dua.pk).is_active
    with pytest.raises(AgreementTemplateError, match="activate another version"):
        dua_template_change(template=dua, title=dua.title, text=dua.text, is_active=False, acting_user=None)


def test_a_used_or_active_template_cannot_be_deleted(admin_client, published_dataset, bob, dua) -> None:
    place_order(bob, published_dataset, dua)
    assert admin_client.post(reverse("admin:orders_duatemplate_delete", args=[dua.pk]),
                             {"post": "yes"}).status_code == 403
    assert DuaTemplate.objects.filter(pk=dua.pk).exists()


def test_a_contract_stores_the_hash_of_its_text(published_dataset, bob, dua, client) -> None:
    order = place_order(bob, published_dataset, dua)
    contract = order.contract
    assert len(contract.text_sha256) == 64
    assert contract.text_sha256 == hashlib.sha256(contract.text.encode("utf-8")).hexdigest()
    assert contract.text.startswith(f"{dua.title} (version {dua.version})")
    client.force_login(bob)
    page = client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert f'id="contract-sha256">{contract.text_sha256}<' in page


@pytest.mark.parametrize(("version", "taken", "expected"), [
    ("2", [], "3"), ("1.0", [], "1.1"), ("1.9", ["1.10"], "1.11"), ("v2-draft", [], "v3-draft"), ("final", [], "final.1"),
])
def test_next_version_counts_on_from_the_last_number(db, version, taken, expected) -> None:
    for name in taken:
        DuaTemplate.objects.create(version=name, title="t", text="t")
    assert next_version(version) == expected


def test_the_data_migration_fills_hashes_and_line_terms(published_dataset, bob, dua) -> None:
    import importlib

    from django.apps import apps
    from django.db import connection

    from orders.models import OrderLine

    migration = importlib.import_module("orders.migrations.0007_fill_contract_hashes_line_terms")
    order = place_order(bob, published_dataset, dua)
    Contract.objects.filter(pk=order.contract.pk).update(text_sha256="", text="as signed before")
    OrderLine.objects.filter(order=order).update(licence_terms={}, licence_type="commercial")
    with connection.schema_editor() as schema_editor:
        migration.fill(apps, schema_editor)
    assert Contract.objects.get(pk=order.contract.pk).text_sha256 == hashlib.sha256(b"as signed before").hexdigest()
    terms = OrderLine.objects.get(order=order).licence_terms
    assert (terms["use"], terms["term_months"], terms["seats"]) == ("commercial", None, None)
    assert active_dua_template() == dua
