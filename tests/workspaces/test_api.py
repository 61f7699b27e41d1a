"""The deliveries API, reached with personal access tokens: Bob's delivered order, its
files, manifest and download URLs; Charlie sees none of it; downloads resume with Range."""
from __future__ import annotations

import csv
import hashlib
import io

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

import storage
from marketplace.grants import grants_remove_all
from marketplace.models import AuditEvent
from marketplace.tokens import api_token_create
from workspaces.grants import DELIVERY_DOWNLOAD
from workspaces.models import Delivery
from workspaces.services import DELIVERY_DOCUMENTS, MANIFEST_NAME
from workspaces.views import byte_range

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def token_client(user, scopes=("read", "download")) -> APIClient:  # noqa: ANN001
    _, secret = api_token_create(user=user, name="test", scopes=list(scopes), expires=None)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api


@pytest.fixture
def delivery(published_dataset, bob, deliver) -> Delivery:
    delivery = deliver(published_dataset, bob)
    assert delivery.status == Delivery.Status.DONE
    return delivery


@pytest.fixture
def bob_api(bob) -> APIClient:
    return token_client(bob)


def url(delivery: Delivery, what: str = "") -> str:
    return f"/api/orders/{delivery.order_id}/delivery/{what}"


def body_of(response) -> bytes:  # noqa: ANN001
    return b"".join(response.streaming_content)


def download_urls(api: APIClient, delivery: Delivery, paths: list[str]) -> dict[str, str]:
    response = api.post(url(delivery, "download-urls/"), {"paths": paths}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["urls"]


# ---- the owner -----------------------------------------------------------------------------
def test_it_lists_bobs_orders_and_his_delivery_with_progress(bob_api, delivery):
    assert [order["id"] for order in bob_api.get("/api/orders/").json()] == [delivery.order_id]
    body = bob_api.get(url(delivery)).json()
    assert (body["id"], body["order_id"], body["status"]) == (delivery.pk, delivery.order_id, "done")
    assert (body["total_files"], body["done_files"], body["percent"], body["downloadable"]) == (6, 6, 100, True)
    assert body["total_bytes"] == sum(delivery.files.values_list("size_bytes", flat=True)) > 0


def test_it_pages_through_the_files_with_their_size_and_sha256(bob_api, delivery):
    first = bob_api.get(url(delivery, "files/"), {"page_size": 4}).json()
    assert first["count"] == 6 and len(first["results"]) == 4 and first["previous"] is None
    second = bob_api.get(first["next"]).json()
    assert len(second["results"]) == 2 and second["next"] is None
    rows = first["results"] + second["results"]
    assert rows == [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in delivery.files.all()]


def test_it_gives_the_delivered_manifest_as_json(bob_api, delivery):
    body = bob_api.get(url(delivery, "manifest/")).json()
    text = b"".join(storage.iter_chunks(delivery.manifest_key))
    rows = list(csv.DictReader(io.StringIO(text.decode())))
    assert body["columns"] == list(rows[0])
    assert body["files"] == [{**row, "bytes": int(row["bytes"])} for row in rows]
    documents = {d["name"]: d for d in body["documents"]}
    assert set(documents) == set(DELIVERY_DOCUMENTS)
    assert documents[MANIFEST_NAME] == {"name": MANIFEST_NAME, "bytes": len(text),
                                        "sha256": hashlib.sha256(text).hexdigest()}


def test_it_hands_out_download_urls_that_serve_the_manifests_bytes(bob_api, bob, delivery):
    manifest = bob_api.get(url(delivery, "manifest/")).json()
    paths = [row["path"] for row in manifest["files"]] + [MANIFEST_NAME]
    urls = download_urls(bob_api, delivery, paths)
    assert set(urls) == set(paths) and all(u.startswith("http://testserver/workspace/download/") for u in urls.values())
    for row in manifest["files"]:
        response = bob_api.get(urls[row["path"]])
        assert response.status_code == 200 and response["Accept-Ranges"] == "bytes"
        data = body_of(response)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (row["bytes"], row["sha256"])
    assert AuditEvent.objects.filter(action="download", actor=bob).count() == len(manifest["files"])
    single = bob_api.get(url(delivery, "download-url/"), {"path": MANIFEST_NAME}).json()
    assert single["path"] == MANIFEST_NAME and single["expires_in"] == 300
    assert body_of(bob_api.get(single["url"])) == b"".join(storage.iter_chunks(delivery.manifest_key))


def test_the_session_of_the_browser_works_too(client, bob, delivery):
    client.force_login(bob)
    assert client.get(url(delivery)).json()["status"] == "done"


def test_it_names_paths_that_are_not_in_the_delivery(bob_api, delivery):
    response = bob_api.post(url(delivery, "download-urls/"), {"paths": ["../../etc/passwd", MANIFEST_NAME]},
                            format="json")
    assert response.status_code == 404
    assert response.json()["extra"]["paths"] == ["../../etc/passwd"]


def test_a_read_token_lists_but_gets_no_download_url(bob, delivery):
    api = token_client(bob, scopes=("read",))
    assert api.get(url(delivery, "files/")).status_code == 200
    path = delivery.files.first().path
    for response in (api.post(url(delivery, "download-urls/"), {"paths": [path]}, format="json"),
                     api.get(url(delivery, "download-url/"), {"path": path})):
        assert response.status_code == 403
        assert response.json()["code"] == "token_scope" and "'download' scope" in response.json()["message"]
    link = download_urls(token_client(bob), delivery, [path])[path]
    response = api.get(link)
    assert response.status_code == 403 and response.json()["code"] == "token_scope"


def test_a_view_only_delivery_is_listed_but_refuses_download_urls(bob_api, delivery):
    grants_remove_all(delivery, [DELIVERY_DOWNLOAD], reason="test")
    assert bob_api.get(url(delivery)).json()["downloadable"] is False
    response = bob_api.post(url(delivery, "download-urls/"), {"paths": [MANIFEST_NAME]}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "view_only" and "view-only" in response.json()["message"]


def test_it_says_a_running_delivery_is_not_finished(bob_api, delivery):
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.RUNNING)
    for response in (bob_api.get(url(delivery, "manifest/")),
                     bob_api.post(url(delivery, "download-urls/"), {"paths": [MANIFEST_NAME]}, format="json")):
        assert response.status_code == 409 and response.json()["code"] == "delivery_not_ready"


# ---- everybody else ------------------------------------------------------------------------
def test_charlie_gets_404_for_everything_of_bobs_order(charlie, bob_api, delivery):
    charlie_api = token_client(charlie)
    for what in ("", "files/", "manifest/"):
        response = charlie_api.get(url(delivery, what))
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = charlie_api.post(url(delivery, "download-urls/"), {"paths": [MANIFEST_NAME]}, format="json")
    assert response.status_code == 404
    assert charlie_api.get(f"/api/orders/{delivery.order_id}/").status_code == 404
    link = download_urls(bob_api, delivery, [MANIFEST_NAME])[MANIFEST_NAME]
    assert charlie_api.get(link).status_code == 404
    assert APIClient().get(link).status_code == 404
    assert not AuditEvent.objects.filter(action="download").exists()


def test_a_revoked_token_is_refused_at_the_download_too(bob, delivery):
    from marketplace.models import ApiToken

    api = token_client(bob)
    link = download_urls(api, delivery, [MANIFEST_NAME])[MANIFEST_NAME]
    ApiToken.objects.update(revoked_at=timezone.now())
    response = api.get(link)
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"
    assert "token revoked" in response.json()["message"]


def test_a_bearer_download_is_audited_with_the_tokens_id_and_prefix(bob, client, delivery):
    from marketplace.models import ApiToken

    api = token_client(bob)
    token = ApiToken.objects.get(user=bob)
    link = download_urls(api, delivery, [MANIFEST_NAME])[MANIFEST_NAME]
    assert api.get(link).status_code == 200
    event = AuditEvent.objects.get(action="download")
    assert event.detail == {"path": MANIFEST_NAME, "api_token_id": token.pk, "api_token_prefix": token.prefix}
    assert token.token_hash not in str(event.detail)
    # The browser's session names no token.
    client.force_login(bob)
    assert client.get(link).status_code == 200
    assert AuditEvent.objects.filter(action="download").latest("id").detail == {"path": MANIFEST_NAME}


def test_the_schema_documents_the_delivery_operations(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in ("delivery/", "delivery/files/", "delivery/manifest/", "delivery/download-urls/",
                 "delivery/download-url/"):
        assert f"/api/orders/{{order_id}}/{path}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["tokenAuth"]["scheme"] == "bearer"


# ---- Range ---------------------------------------------------------------------------------
def test_a_download_resumes_with_a_range(bob_api, delivery):
    item = delivery.files.first()
    full = b"".join(storage.iter_chunks(item.storage_key))
    link = download_urls(bob_api, delivery, [item.path])[item.path]
    size = len(full)
    for header, start, end in [(f"bytes={size // 2}-", size // 2, size - 1), ("bytes=10-19", 10, 19),
                               ("bytes=-5", size - 5, size - 1), (f"bytes=0-{size + 100}", 0, size - 1)]:
        response = bob_api.get(link, HTTP_RANGE=header)
        assert response.status_code == 206, header
        assert response["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert response["Content-Length"] == str(end - start + 1)
        assert body_of(response) == full[start:end + 1]
        assert f'filename="{item.path.rsplit("/", 1)[-1]}"' in response["Content-Disposition"]


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=-",
                                    "bytes=abc-"])
def test_it_refuses_a_range_it_cannot_serve_with_416(bob_api, delivery, header):
    item = delivery.files.first()
    link = download_urls(bob_api, delivery, [item.path])[item.path]
    response = bob_api.get(link, HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{item.size_bytes}"


def test_byte_range_reads_the_forms_a_client_sends():
    assert byte_range("", 100) is None
    assert byte_range("bytes=0-", 100) == (0, 99)
    assert byte_range("bytes=99-", 100) == (99, 99)
    assert byte_range("bytes=-200", 100) == (0, 99)
    for bad in ("bytes=100-", "bytes=-0", "bytes=1-2-3", "bytes= 1-2"):
        with pytest.raises(ValueError):
            byte_range(bad, 100)
