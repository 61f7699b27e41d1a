"""Synthetic DICOM for tests (fake PHI, generated with pydicom; no real patient data)."""
from __future__ import annotations

from demo.synthetic import fake_patients, generate_study_files


def ct_files(n_patients: int = 2, n_instances: int = 3, seed: int = 7) -> list[tuple[str, bytes]]:
    """Synthetic CT studies with fake PHI: one study per patient, one series each."""
    files: list[tuple[str, bytes]] = []
    for index, patient in enumerate(fake_patients(n_patients, seed=seed)):
        files += generate_study_files(patient=patient, modality="CT", n_series=1, n_instances=n_instances,
                                      study_index=index, seed=seed, body_part="CHEST",
                                      manufacturer="SIEMENS", model="SOMATOM Force")
    return files
