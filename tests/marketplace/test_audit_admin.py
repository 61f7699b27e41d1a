"""The admin leaves a trace: deletions, staff and permission changes, audit exports; and
orders and contracts are cancelled with a reason, never deleted."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import RequestFactory
from django.urls import reverse

from factories.accounts import ready_account
from marketplace.admin import AuditedModelAdmin
from marketplace.models import AuditEvent, Organization, User
from marketplace.services import audit_record
from orders.models import Contract, DuaTemplate, Order

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_every_admin_that_may_delete_audits_its_deletions(admin_user):
    request = RequestFactory().get("/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        if model_admin.has_delete_permission(request):
            assert isinstance(model_admin, AuditedModelAdmin), f"{model.__name__}'s admin deletes unaudited"


def test_it_audits_a_deletion_through_the_delete_page(admin_client, admin_user):
    org = Organization.objects.create(name="Short-lived", kind=Organization.Kind.BUYER)
    url = reverse("admin:marketplace_organization_delete", args=[org.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Organization.objects.filter(pk=org.pk).exists()
    event = AuditEvent.objects.get(action="admin.delete")
    assert (event.actor, event.object_type, event.object_id) == (admin_user, "marketplace.organization", str(org.pk))


def test_it_audits_each_object_of_a_delete_selected_action(admin_client):
    templates = [DuaTemplate.objects.create(version=f"t{i}", title="T", text="x") for i in range(2)]
    response = admin_client.post(reverse("admin:orders_duatemplate_changelist"), {
        "action": "delete_selected", "_selected_action": [t.pk for t in templates], "post": "yes"})
    assert response.status_code == 302
    assert sorted(AuditEvent.objects.filter(action="admin.delete").values_list("object_id", flat=True)) == sorted(
        str(t.pk) for t in templates)


def _user_form(user: User, **changes: object) -> dict[str, object]:
    data = {"username": user.username, "email": user.email, "first_name": "", "last_name": "",
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"), "date_joined_1": "00:00:00",
            "is_active": "on"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_it_audits_making_a_user_staff_with_groups_and_permissions(admin_client, admin_user, bob):
    group = Group.objects.create(name="Reviewers")
    perm = Permission.objects.get(codename="view_dataset")
    url = reverse("admin:marketplace_user_change", args=[bob.pk])
    response = admin_client.post(url, _user_form(bob, is_staff="on", groups=[group.pk], user_permissions=[perm.pk]))
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="user.powers_change")
    assert (event.actor, event.object_id) == (admin_user, str(bob.pk))
    assert event.detail["changed"] == ["is_staff", "groups", "permissions"]
    assert event.detail["before"]["is_staff"] is False and event.detail["after"]["is_staff"] is True
    assert event.detail["after"]["groups"] == [group.pk] and event.detail["after"]["permissions"] == [perm.pk]


def test_it_records_nothing_when_a_save_changes_no_power(admin_client, bob):
    url = reverse("admin:marketplace_user_change", args=[bob.pk])
    assert admin_client.post(url, _user_form(bob, first_name="Bob")).status_code == 302
    assert not AuditEvent.objects.filter(action="user.powers_change").exists()


def test_it_audits_a_groups_permission_change(admin_client, admin_user):
    group = Group.objects.create(name="Support")
    perm = Permission.objects.get(codename="view_dataset")
    url = reverse("admin:auth_group_change", args=[group.pk])
    assert admin_client.post(url, {"name": "Support", "permissions": [perm.pk]}).status_code == 302
    event = AuditEvent.objects.get(action="group.permissions_change")
    assert (event.actor, event.detail) == (admin_user, {"before": [], "after": [perm.pk]})


# ---- export --------------------------------------------------------------------------------
def _export(client, action: str, ids: list[int]):  # noqa: ANN001, ANN202
    return client.post(reverse("admin:marketplace_auditevent_changelist"),
                       {"action": action, "_selected_action": ids})


def test_an_admin_exports_the_selected_events_as_csv_and_json_with_their_hashes(admin_client, bob):
    events = [audit_record(actor=bob, action="test.export", detail={"n": i}) for i in range(3)]
    ids = [e.pk for e in events]
    response = _export(admin_client, "export_csv", ids)
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(r["id"]) for r in rows] == ids
    assert [r["chain_hash"] for r in rows] == [e.chain_hash for e in events]
    assert json.loads(rows[0]["detail"]) == {"n": 0}
    response = _export(admin_client, "export_json", ids)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = json.loads(b"".join(response.streaming_content))
    assert [d["id"] for d in data] == ids and data[2]["prev_hash"] == events[1].chain_hash
    exports = AuditEvent.objects.filter(action="audit.export")
    assert sorted(e.detail["format"] for e in exports) == ["csv", "json"]


def test_a_staff_account_without_permissions_cannot_export(client, make_member):
    staff, _ = make_member("sam", "Staff Org", "buyer")
    User.objects.filter(pk=staff.pk).update(is_staff=True)
    ready_account(staff, two_factor=True)  # staff must have a second factor to get anywhere
    event = audit_record(actor=None, action="test.secret")
    client.force_login(staff)
    response = _export(client, "export_csv", [event.pk])
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export").exists()


# ---- orders: cancelled with a reason, never deleted --------------------------------------
@pytest.fixture
def order(published_dataset, bob, dua, tiny_threshold) -> Order:
    from factories.orders import place_order

    return place_order(bob, published_dataset, dua)


def test_orders_and_contracts_cannot_be_deleted_in_the_admin(admin_client, order):
    for url in (reverse("admin:orders_order_delete", args=[order.pk]),
                reverse("admin:orders_contract_delete", args=[order.contract.pk])):
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Order.objects.filter(pk=order.pk).exists() and Contract.objects.filter(order=order).exists()
    response = admin_client.post(reverse("admin:orders_order_changelist"), {
        "action": "delete_selected", "_selected_action": [order.pk], "post": "yes"})
    assert Order.objects.filter(pk=order.pk).exists(), response.status_code


def test_the_admin_cancels_an_order_only_with_a_reason(admin_client, admin_user, order):
    url = reverse("admin:orders_order_changelist")
    admin_client.post(url, {"action": "cancel", "_selected_action": [order.pk], "reason": " "})
    order.refresh_from_db()
    assert order.status == Order.Status.OPEN
    admin_client.post(url, {"action": "cancel", "_selected_action": [order.pk], "reason": "Buyer withdrew"})
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    change = order.status_changes.get(field="status", new_status="cancelled")
    assert (change.reason, change.acting_user) == ("Buyer withdrew", admin_user)
    assert order.status_changes.get(field="payment_status", new_status="void").reason == "Buyer withdrew"
    event = AuditEvent.objects.get(action="order.cancel")
    assert event.detail == {"from": "open", "reason": "Buyer withdrew"}
    assert order.invoice.status == "void"
