"""Bob's workspace after a delivered order: signed, expiring, audited download links."""
from __future__ import annotations

import csv
import hashlib
import io
import re

import pytest
from django.urls import reverse

import storage
from factories.orders import approve_for_delivery, place_order
from marketplace.models import AuditEvent
from orders.models import Order
from workspaces.models import Delivery
from workspaces.services import DELIVERY_DOCUMENTS, MANIFEST_NAME, delivery_run, download_token_make

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

LINK = re.compile(r'<a href="(/workspace/download/[^"/]+/)">([^<]+)</a>')


@pytest.fixture
def delivery(published_dataset, bob, admin_user, dua) -> Delivery:
    """Bob's order, approved by an admin and delivered by the worker (in-process)."""
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE
    assert Order.objects.get(pk=order.pk).fulfilment_status == Order.FulfilmentStatus.FULFILLED
    return delivery


def manifest_rows(delivery: Delivery) -> dict[str, dict[str, str]]:
    text = b"".join(storage.iter_chunks(delivery.manifest_key)).decode()
    return {row["path"]: row for row in csv.DictReader(io.StringIO(text))}


def workspace_links(client) -> dict[str, str]:  # noqa: ANN001
    response = client.get(reverse("workspace"))
    assert response.status_code == 200
    return {path: url for url, path in LINK.findall(response.content.decode())}


def body_of(response) -> bytes:  # noqa: ANN001
    return b"".join(response.streaming_content)


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


# ---- the owner ---------------------------------------------------------------------------
def test_it_lists_every_delivered_file_and_the_manifest_in_bobs_workspace(bob_client, delivery):
    links = workspace_links(bob_client)
    expected = set(delivery.files.values_list("path", flat=True))
    assert len(expected) == 6
    assert set(links) == expected | set(DELIVERY_DOCUMENTS)
    assert set(manifest_rows(delivery)) == expected


def test_it_downloads_the_exact_bytes_listed_in_the_manifest(bob_client, delivery):
    links = workspace_links(bob_client)
    manifest = manifest_rows(delivery)
    for path, row in manifest.items():
        response = bob_client.get(links[path])
        assert response.status_code == 200
        assert response["Content-Type"] == "application/dicom"
        assert f'filename="{path.rsplit("/", 1)[-1]}"' in response["Content-Disposition"]
        data = body_of(response)
        assert len(data) == int(row["bytes"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert data[128:132] == b"DICM"


def test_it_downloads_the_manifest_itself(bob_client, delivery):
    response = bob_client.get(workspace_links(bob_client)[MANIFEST_NAME])
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert body_of(response) == b"".join(storage.iter_chunks(delivery.manifest_key))


def test_it_audits_each_successful_download(bob_client, bob, delivery):
    links = workspace_links(bob_client)
    first, second = sorted(set(links) - set(DELIVERY_DOCUMENTS))[:2]
    body_of(bob_client.get(links[first], REMOTE_ADDR="192.0.2.10"))
    body_of(bob_client.get(links[second]))
    body_of(bob_client.get(links[first]))

    events = list(AuditEvent.objects.filter(action="download").order_by("id"))
    assert [e.detail["path"] for e in events] == [first, second, first]
    assert {(e.actor_id, e.object_type, e.object_id) for e in events} == {
        (bob.pk, "workspaces.delivery", str(delivery.pk))}
    assert events[0].ip_address == "192.0.2.10"


def test_it_reports_delivery_progress_to_the_owner(bob_client, delivery):
    response = bob_client.get(reverse("delivery_progress", args=[delivery.pk]))
    assert response.status_code == 200
    assert response.json() == {"status": "done", "status_label": "Delivered", "done": 6, "total": 6,
                               "percent": 100}


# ---- everybody else ---------------------------------------------------------------------
@pytest.mark.parametrize("who", ["charlie", "alice", "admin_user"])
def test_it_gives_404_to_anyone_else_with_bobs_link(client, bob_client, delivery, who, request):
    links = workspace_links(bob_client)
    client.logout()
    client.force_login(request.getfixturevalue(who))
    for url in (links[MANIFEST_NAME], *list(links.values())[:2]):
        assert client.get(url).status_code == 404
    assert not AuditEvent.objects.filter(action="download").exists()


@pytest.mark.parametrize("who", ["charlie", "alice"])
def test_it_gives_404_to_anyone_else_for_bobs_delivery_progress(client, delivery, who, request):
    client.force_login(request.getfixturevalue(who))
    url = reverse("delivery_progress", args=[delivery.pk])
    missing = reverse("delivery_progress", args=[delivery.pk + 10_000])
    assert client.get(url).status_code == 404
    assert client.get(missing).status_code == 404


def test_it_shows_charlie_an_empty_workspace(client, charlie, delivery):
    client.force_login(charlie)
    assert workspace_links(client) == {}
    assert "No deliveries yet." in client.get(reverse("workspace")).content.decode()


def test_it_gives_anonymous_visitors_404_for_a_link_and_no_progress(client, bob_client, delivery):
    links = workspace_links(bob_client)
    client.logout()
    assert client.get(links[MANIFEST_NAME]).status_code == 404
    progress = client.get(reverse("delivery_progress", args=[delivery.pk]))
    # the progress page sends anonymous visitors to log in, the same for every id: nothing leaks
    assert progress.status_code == 302
    assert progress.url.startswith(reverse("login"))
    missing = client.get(reverse("delivery_progress", args=[delivery.pk + 10_000]))
    assert missing.status_code == 302 and missing.url.startswith(reverse("login"))
    assert b"done" not in progress.content
    assert not AuditEvent.objects.filter(action="download").exists()


# ---- broken, foreign and expired links --------------------------------------------------
def flip_one_char(token: str, index: int) -> str:
    ch = token[index]
    return token[:index] + ("A" if ch != "A" else "B") + token[index + 1:]


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_it_gives_404_for_a_tampered_token(bob_client, delivery, where):
    token = download_token_make(delivery=delivery, path=MANIFEST_NAME)
    payload_end, timestamp_end = token.index(":"), token.rindex(":")
    index = {"payload": payload_end // 2, "timestamp": timestamp_end - 1, "signature": len(token) - 3}[where]
    tampered = flip_one_char(token, index)
    assert tampered != token
    assert bob_client.get(reverse("workspace_download", args=[token])).status_code == 200
    assert bob_client.get(reverse("workspace_download", args=[tampered])).status_code == 404
    assert bob_client.get(reverse("workspace_download", args=["not-a-token"])).status_code == 404


def test_it_gives_404_for_a_signed_link_to_a_path_outside_the_delivery(bob_client, delivery, published_dataset):
    for path in ("../../other/file.dcm", "nope.dcm", ""):
        token = download_token_make(delivery=delivery, path=path)
        assert bob_client.get(reverse("workspace_download", args=[token])).status_code == 404


def test_it_gives_404_for_a_delivery_that_is_not_done(bob_client, delivery):
    token = download_token_make(delivery=delivery, path=MANIFEST_NAME)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.RUNNING)
    assert bob_client.get(reverse("workspace_download", args=[token])).status_code == 404


def test_it_refuses_an_expired_link_with_403_and_says_so(bob_client, delivery, settings):
    links = workspace_links(bob_client)
    settings.DOWNLOAD_LINK_SECONDS = -1
    response = bob_client.get(links[MANIFEST_NAME])
    assert response.status_code == 403
    assert "expired" in response.content.decode()
    assert "Link expired" in response.content.decode()
    assert not AuditEvent.objects.filter(action="download").exists()


def test_it_refuses_a_link_used_after_its_lifetime(bob_client, delivery, settings, monkeypatch):
    import time

    settings.DOWNLOAD_LINK_SECONDS = 300
    url = workspace_links(bob_client)[MANIFEST_NAME]
    now = time.time()
    # the signed timestamp is whole seconds, so stay clear of the exact boundary
    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 295)
    assert bob_client.get(url).status_code == 200
    monkeypatch.setattr("django.core.signing.time.time", lambda: now + 305)
    response = bob_client.get(url)
    assert response.status_code == 403
    assert "expired" in response.content.decode()
    assert AuditEvent.objects.filter(action="download").count() == 1


@pytest.mark.django_db
def test_the_delivery_page_lists_every_file_for_its_owner_only(published_dataset, deliver, bob, charlie,
                                                               monkeypatch):
    from django.test import Client

    from workspaces import views

    monkeypatch.setattr(views, "FILES_PER_PAGE", 4)  # six files: two pages
    delivery = deliver(published_dataset, bob)
    owner, other = Client(), Client()
    owner.force_login(bob)
    other.force_login(charlie)
    pages = owner.get(f"/workspace/deliveries/{delivery.pk}/").content.decode()
    pages += owner.get(f"/workspace/deliveries/{delivery.pk}/?page=2").content.decode()
    listed = set(re.findall(r'/workspace/download/[^"]+/">([^<]+)</a>', pages)) - set(DELIVERY_DOCUMENTS)
    assert listed == set(delivery.files.values_list("path", flat=True))
    assert len(listed) == 6
    assert other.get(f"/workspace/deliveries/{delivery.pk}/").status_code == 404
