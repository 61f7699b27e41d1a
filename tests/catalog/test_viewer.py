"""The image viewer: server-rendered frames of a preview's series (published datasets) and of a
delivered series (view grant), window/level, sampling, and hostile files."""
from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pydicom
import pytest
from django.urls import reverse

import storage
from catalog.datasets.viewer import MAX_FRAMES, frames_sample
from catalog.models import DatasetPreview, Instance
from demo.synthetic import fake_patients, generate_study_files
from factories.dicom import ct_files
from factories.orders import approve_for_delivery, place_order
from marketplace.grants import grants_remove_all
from marketplace.models import AuditEvent
from workspaces.grants import DELIVERY_DOWNLOAD
from workspaces.services import delivery_run

pytestmark = pytest.mark.django_db


def png_pixels(body: bytes) -> np.ndarray:
    """The gray pixels of one of our 8-bit PNGs (filter 0 on every row)."""
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, colour = struct.unpack(">IIBB", body[16:26])
    assert (depth, colour) == (8, 0)
    raw = zlib.decompress(body[body.index(b"IDAT") + 4:body.index(b"IEND") - 8])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()
    return rows[:, 1:]


def _preview(dataset) -> DatasetPreview:  # noqa: ANN001
    return DatasetPreview.objects.filter(dataset=dataset).select_related("instance__series").first()


def _urls(dataset, preview) -> tuple[str, str]:  # noqa: ANN001
    return (reverse("dataset_preview_viewer", args=[dataset.pk, preview.pk]),
            reverse("dataset_preview_frame", args=[dataset.pk, preview.pk, 0]).removesuffix("0.png"))


def _series_hu(instance: Instance) -> np.ndarray:
    with storage.open_read(instance.storage_key) as fp:
        ds = pydicom.dcmread(fp)
    return ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_the_dataset_page_links_each_preview_to_its_viewer_and_anyone_may_open_it(client, published_dataset):
    preview = _preview(published_dataset)
    page_url, frames = _urls(published_dataset, preview)
    dataset_page = client.get(reverse("dataset_detail", args=[published_dataset.pk])).content.decode()
    assert f'href="{page_url}"' in dataset_page
    response = client.get(page_url)  # anonymous: the previews of a published dataset are public
    page = response.content.decode()
    assert response.status_code == 200 and 'src="/static/js/viewer.js"' in page
    count = preview.instance.series.instances.count()
    assert f'data-frames="{min(count, MAX_FRAMES)}"' in page and f'max="{min(count, MAX_FRAMES) - 1}"' in page
    # CT presets, and the image's own window (the synthetic CT's 40/400) in the inputs
    assert "Lung (-600/1500)" in page and 'id="viewer-center" value="40"' in page and 'value="400"' in page
    assert "<script>" not in page  # the CSP allows no inline script
    first = client.get(f"{frames}0.png")
    assert first.status_code == 200 and first["Content-Type"] == "image/png"
    assert first["Cache-Control"] == "private, max-age=3600"
    last = client.get(f"{frames}{count - 1}.png")
    assert png_pixels(first.content).shape == (64, 64)
    assert not np.array_equal(png_pixels(first.content), png_pixels(last.content))  # the frames are the slices
    assert client.get(f"{frames}{count}.png").status_code == 404
    # One audit event for the viewing, not one per frame.
    assert AuditEvent.objects.filter(action="preview.viewer", object_id=str(published_dataset.pk)).count() == 1


def test_a_ct_frame_is_the_slice_windowed_as_asked(client, published_dataset):
    preview = _preview(published_dataset)
    _, frames = _urls(published_dataset, preview)
    instances = list(preview.instance.series.instances.order_by("instance_number", "id"))
    hu = _series_hu(instances[1])
    for center, width in ((40, 400), (-600, 1500), (400, 1800)):
        body = client.get(f"{frames}1.png?c={center}&w={width}").content
        low = center - width / 2
        expected = (np.clip((hu - low) / width, 0, 1) * 255).astype(np.uint8)
        assert np.array_equal(png_pixels(body), expected)
    soft = png_pixels(client.get(f"{frames}1.png?c=40&w=400").content)
    lung = png_pixels(client.get(f"{frames}1.png?c=-600&w=1500").content)
    assert not np.array_equal(soft, lung)
    # Without a window, or with one that cannot be read, the image's own (40/400 here).
    assert np.array_equal(png_pixels(client.get(f"{frames}1.png").content), soft)
    assert np.array_equal(png_pixels(client.get(f"{frames}1.png?c=abc&w=-5").content), soft)
    for odd in ("c=1e400&w=400", "c=nan&w=nan", "c=40&w=-inf"):
        response = client.get(f"{frames}1.png?{odd}")
        assert response.status_code == 200 and np.array_equal(png_pixels(response.content), soft), odd
    assert client.get(f"{frames}1.png?c=%00&w=400").status_code == 400  # NUL: refused by the input guard


def test_an_mr_series_renders_with_its_own_window_and_no_ct_presets(client, dataset, ingest, publish):
    files = generate_study_files(patient=fake_patients(1, seed=5)[0], modality="MR", n_series=1, n_instances=5,
                                 study_index=0, seed=5, rows=96, columns=80, body_part="BRAIN")
    ingest(dataset, files)
    dataset = publish(dataset)
    preview = _preview(dataset)
    page_url, frames = _urls(dataset, preview)
    page = client.get(page_url).content.decode()
    assert 'data-frames="5"' in page and "Lung" not in page and 'id="viewer-center" value="600"' in page
    pictures = [png_pixels(client.get(f"{frames}{i}.png").content) for i in range(5)]
    assert {p.shape for p in pictures} == {(96, 80)}
    assert len({p.tobytes() for p in pictures}) == 5
    narrow = png_pixels(client.get(f"{frames}2.png?c=600&w=100").content)
    assert not np.array_equal(narrow, pictures[2]) and set(np.unique(narrow)) - {0, 255}  # a narrow window clips


def test_drafts_and_unknown_previews_are_404_for_everyone_but_their_provider(client, dataset, ingest, bob, alice):
    ingest(dataset, ct_files())  # still a draft
    preview = _preview(dataset)
    page_url, frames = _urls(dataset, preview)
    for who in (None, bob):
        if who:
            client.force_login(who)
        assert client.get(page_url).status_code == 404
        assert client.get(f"{frames}0.png").status_code == 404
    client.force_login(alice)  # the provider checks its own draft, as with the previews
    assert client.get(page_url).status_code == 200 and client.get(f"{frames}0.png").status_code == 200
    assert client.get(reverse("dataset_preview_viewer", args=[dataset.pk, 999999])).status_code == 404


def test_a_frame_whose_pixel_data_is_truncated_is_a_404_with_a_reason_not_a_500(client, published_dataset):
    preview = _preview(published_dataset)
    page_url, frames = _urls(published_dataset, preview)
    instances = list(preview.instance.series.instances.order_by("instance_number", "id"))
    with storage.open_read(instances[0].storage_key) as fp:
        data = fp.read()
    assert len(instances) == 3
    storage.put(instances[0].storage_key, io.BytesIO(data[:-2000]))  # pixel data cut short
    storage.put(instances[1].storage_key, io.BytesIO(b"not a DICOM file at all"))
    response = client.get(f"{frames}0.png")
    assert response.status_code == 404 and response.content == b"This frame cannot be shown."
    assert client.get(f"{frames}0.png?c=40&w=400").status_code == 404  # cached as unavailable, any window
    assert client.get(f"{frames}1.png").status_code == 404
    assert client.get(f"{frames}2.png").status_code == 200  # the rest of the series still shows
    # When the middle frame itself cannot be shown, the page says so instead of a broken viewer.
    page = client.get(page_url).content.decode()
    assert "no image that can be shown" in page and 'id="viewer"' not in page


def test_frames_of_images_at_risk_of_burned_in_text_are_never_rendered(client, published_dataset):
    preview = _preview(published_dataset)
    _, frames = _urls(published_dataset, preview)
    instance = preview.instance.series.instances.order_by("instance_number", "id").first()
    with storage.open_read(instance.storage_key) as fp:
        ds = pydicom.dcmread(fp)
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    out = io.BytesIO()
    ds.save_as(out)
    storage.put(instance.storage_key, io.BytesIO(out.getvalue()))
    assert client.get(f"{frames}0.png").status_code == 404


def test_a_long_series_is_sampled_evenly_keeping_its_ends():
    keys = [f"k{i}" for i in range(300)]
    sample = frames_sample(keys)
    assert len(sample) == MAX_FRAMES and sample[0] == "k0" and sample[-1] == "k299"
    steps = np.diff([int(k[1:]) for k in sample])
    assert steps.min() >= 4 and steps.max() <= 5
    assert frames_sample(keys[:10]) == keys[:10]


# ---- delivered series: the view grant, checked on every request -------------------------------
@pytest.fixture
def delivered(tiny_threshold, published_dataset, bob, admin_user, dua):  # noqa: ARG001
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery_run(delivery_id=order.delivery.pk)
    order.delivery.refresh_from_db()
    return order.delivery


def test_a_view_only_buyer_opens_each_delivered_series_in_the_viewer(client, delivered, bob, charlie):
    grants_remove_all(delivered, [DELIVERY_DOWNLOAD])
    client.force_login(bob)
    page = client.get(reverse("delivery_files", args=[delivered.pk])).content.decode()
    links = re.findall(r'href="(/workspace/deliveries/\d+/series/(\d+)/viewer/)"', page)
    series_ids = set(delivered.files.filter(instance__isnull=False).values_list("instance__series_id", flat=True))
    assert {int(s) for _, s in links} == series_ids and len(links) == len(series_ids) > 0
    viewer_url, series_id = links[0]
    viewer_page = client.get(viewer_url).content.decode()
    assert 'id="viewer"' in viewer_page and "Lung" in viewer_page
    frames = reverse("delivery_series_frame", args=[delivered.pk, int(series_id), 0]).removesuffix("0.png")
    response = client.get(f"{frames}0.png?c=-600&w=1500")
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"
    # Rendered from the buyer's delivered copy, not from the catalog object or the upload.
    delivered_file = delivered.files.filter(instance__series_id=int(series_id)).order_by(
        "instance__instance_number", "instance_id").first()
    with storage.open_read(delivered_file.storage_key) as fp:
        ds = pydicom.dcmread(fp)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(png_pixels(response.content), (np.clip((hu + 1350) / 1500, 0, 1) * 255).astype(np.uint8))
    assert AuditEvent.objects.filter(action="delivery.viewer", object_id=str(delivered.pk)).count() == 1
    assert client.get(reverse("delivery_series_viewer", args=[delivered.pk, 999999])).status_code == 404
    client.force_login(charlie)  # another buyer: the same 404 as for a missing delivery
    assert client.get(viewer_url).status_code == 404 and client.get(f"{frames}0.png").status_code == 404
    client.logout()
    assert client.get(f"{frames}0.png").status_code == 302  # to the sign-in page, like the rest of the workspace
    client.force_login(bob)
    grants_remove_all(delivered, ["workspaces.view_delivery"])  # access ended: the next frame is refused
    assert client.get(f"{frames}1.png").status_code == 404 and client.get(viewer_url).status_code == 404


def test_a_downloader_may_view_a_series_too(client, delivered, bob):
    series_id = delivered.files.filter(instance__isnull=False).values_list("instance__series_id", flat=True).first()
    client.force_login(bob)
    assert client.get(reverse("delivery_series_viewer", args=[delivered.pk, series_id])).status_code == 200
    frame = client.get(reverse("delivery_series_frame", args=[delivered.pk, series_id, 0]))
    assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
