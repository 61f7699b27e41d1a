"""Descriptions in the catalogue: cut on a word boundary, no connector left dangling where
the cleaning took a name out, and nothing the cleaning removed comes back."""
from __future__ import annotations

import pytest

from catalog.ingestion.descriptions import LIMIT, display_description
from catalog.models import Series, Study
from demo.synthetic import fake_patients, make_instance, make_uid, to_bytes


@pytest.mark.parametrize(("cleaned", "shown"), [
    ("CT CHEST W/O CONTRAST for", "CT CHEST W/O CONTRAST"),
    ("CT CHEST W/O CONTRAST for , ", "CT CHEST W/O CONTRAST"),
    ("CT HEAD W/O", "CT HEAD W/O"),  # "without": part of the protocol, not a connector
    ("MRI BRAIN (ref. by", "MRI BRAIN"),
    ("US ABDOMEN w/ and", "US ABDOMEN"),
    ("XR KNEE (left) of", "XR KNEE (left)"),
    ("PET-CT -", "PET-CT"),
    ("  CT   CHEST  ", "CT CHEST"),
    ("", ""), (None, ""), ("for", ""),
])
def test_it_drops_the_dangling_end_the_cleaning_left(cleaned, shown):
    assert display_description(cleaned) == shown


def test_a_long_description_is_cut_between_words_with_an_ellipsis():
    text = " ".join(["ABDOMEN", "PELVIS", "WITH", "CONTRAST", "for"] * 12)
    shown = display_description(text)
    assert len(shown) <= LIMIT and shown.endswith("…")
    body = shown[:-1]
    assert text.startswith(body) and text[len(body)] == " "  # ends where a word ended
    assert body.split()[-1].lower() not in {"for", "with"}


def test_one_word_longer_than_the_column_is_cut_inside_it():
    shown = display_description("X" * 300)
    assert shown == "X" * (LIMIT - 1) + "…"


def test_it_only_removes_characters():
    text = "CT THORAX for follow-up of nodule seen on prior for"
    shown = display_description(text, limit=30)
    assert set(shown.replace("…", "").split()) <= set(text.split())


@pytest.mark.django_db
def test_an_ingested_study_reads_cleanly_and_keeps_the_name_out(dataset, ingest):
    patient = fake_patients(1, seed=5)[0]
    ds = make_instance(patient=patient, modality="CT", study_uid=make_uid("desc-study", 5),
                       series_uid=make_uid("desc-series", 5), sop_uid=make_uid("desc-sop", 5),
                       StudyDescription="CT CHEST W/O CONTRAST for Dr. Avery Quinn",
                       SeriesDescription=(long := "AXIAL 1.25mm " + "LUNG WINDOW " * 30 + "for"))
    ingest(dataset, [("a.dcm", to_bytes(ds))])
    study = Study.objects.get(dataset=dataset)
    series = Series.objects.get(study=study)
    assert study.description == "CT CHEST W/O CONTRAST"
    assert "Quinn" not in study.description and "Avery" not in study.description
    body = series.description.removesuffix("…")
    assert series.description.endswith("…") and len(series.description) <= 200
    assert long.startswith(body + " ") and body.endswith(("LUNG", "WINDOW"))
