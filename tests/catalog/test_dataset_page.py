"""The dataset page: worker-computed statistics, completeness, previews, suppression."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pydicom
import pytest

from catalog.datasets.previews import png_gray, render_preview
from catalog.models import Dataset, DatasetPreview, Series, Study
from factories.dicom import ct_files

pytestmark = pytest.mark.django_db


def test_ingestion_computes_the_statistics_the_page_shows(client, published_dataset, bob) -> None:
    dataset = Dataset.objects.get(pk=published_dataset.pk)
    stats = dataset.statistics
    studies = Study.objects.filter(dataset=dataset)
    assert stats["studies"] == studies.count() > 0
    sexes = {row["value"]: row["count"] for row in next(c for c in stats["charts"] if c["key"] == "patient_sex")["rows"]}
    assert sexes == {s: studies.filter(patient_sex=s).count() for s in sexes}
    completeness = {c["key"]: c["percent"] for c in stats["completeness"]}
    assert completeness["body_part"] == round(100 * studies.exclude(body_part="").count() / studies.count(), 1)
    assert stats["verified_instances"] == dataset.instance_count
    client.force_login(bob)
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert 'id="dataset-charts"' in page and "Metadata completeness" in page and "verified by an independent" in page


def test_small_counts_on_the_page_are_suppressed_for_outsiders_only(client, published_dataset, bob, alice) -> None:
    client.force_login(bob)
    outsider = client.get(f"/datasets/{published_dataset.pk}/").content.decode()
    client.force_login(alice)
    owner = client.get(f"/datasets/{published_dataset.pk}/").content.decode()
    # The fixture's studies number fewer than eleven: hidden from bob, shown to the provider.
    assert '<span class="count"><span class="suppressed"' in outsider
    assert 'class="suppressed"' not in owner


def test_the_worker_renders_previews_and_the_page_serves_them(client, published_dataset, bob) -> None:
    previews = DatasetPreview.objects.filter(dataset=published_dataset)
    # One per series (every CT series here can have one), at most 12.
    series = Series.objects.filter(study__dataset=published_dataset).count()
    assert previews.count() == min(series, 12) > 0
    assert len({p.instance.series_id for p in previews}) == previews.count()
    client.force_login(bob)
    preview = previews.first()
    response = client.get(f"/datasets/{published_dataset.pk}/previews/{preview.pk}.png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", body[16:24])
    assert (width, height) == (preview.width, preview.height) and max(width, height) <= 256
    assert client.get(f"/datasets/{published_dataset.pk}/previews/999999.png").status_code == 404


def test_previews_of_other_providers_drafts_are_not_served(client, dataset, ingest, bob) -> None:
    ingest(dataset, ct_files())  # still a draft
    preview = DatasetPreview.objects.filter(dataset=dataset).first()
    assert preview is not None
    client.force_login(bob)
    assert client.get(f"/datasets/{dataset.pk}/previews/{preview.pk}.png").status_code == 404


def test_png_encoder_round_trips_pixels() -> None:
    image = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12)
    png = png_gray(image)
    raw = zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8])
    rows = [raw[i * 13 + 1:(i + 1) * 13] for i in range(7)]
    assert b"".join(rows) == image.tobytes()


def test_no_previews_for_images_at_risk_of_burned_in_text() -> None:
    name, data = ct_files()[0]
    ds = pydicom.dcmread(io.BytesIO(data))
    assert render_preview(io.BytesIO(data)) is not None
    ds.Modality = "US"
    out = io.BytesIO()
    ds.save_as(out)
    assert render_preview(io.BytesIO(out.getvalue())) is None
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "YES"
    out = io.BytesIO()
    ds.save_as(out)
    assert render_preview(io.BytesIO(out.getvalue())) is None


def test_no_previews_for_screen_saves_and_secondary_captures() -> None:
    name, data = ct_files()[0]
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    out = io.BytesIO()
    ds.save_as(out)
    assert render_preview(io.BytesIO(out.getvalue())) is None
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture, modality still CT
    out = io.BytesIO()
    ds.save_as(out)
    assert render_preview(io.BytesIO(out.getvalue())) is None


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_images_get_the_same_preview_as_uncompressed_ones(name) -> None:
    """Lossless JPEG 2000, RLE and JPEG-LS copies of pydicom's MR_small: decoded (in a
    child process under the time limit) to the very pixels of the uncompressed file."""
    from pydicom.data import get_testdata_file

    plain = render_preview(open(get_testdata_file("MR_small.dcm"), "rb"))
    compressed = render_preview(open(get_testdata_file(name), "rb"))
    assert plain is not None and compressed == plain


def test_a_compressed_image_no_decoder_can_read_gets_no_preview() -> None:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.PixelData = ds.PixelData[:40] + b"\x00" * 200  # broken codestream
    out = io.BytesIO()
    ds.save_as(out)
    assert render_preview(io.BytesIO(out.getvalue())) is None
