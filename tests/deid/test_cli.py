from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from deid_factory import make_dataset, to_bytes

from deid.cli import _shared, _start_method, main, read_key
from deid.profile import Options

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "study1").mkdir(parents=True)
    (src / "study1" / "a.dcm").write_bytes(to_bytes(make_dataset()))
    (src / "study1" / "b.dcm").write_bytes(to_bytes(make_dataset(SOPInstanceUID="1.2.3.4.99")))
    (src / "DOE_JANE_notes.txt").write_text("not dicom")
    (src / "cut.dcm").write_bytes(to_bytes(make_dataset())[:-20])
    return src


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "provider.key"
    assert main(["--generate-key", str(path)]) == 0
    return path


def _manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {json.loads(line)["input"]: json.loads(line) for line in lines}


def test_it_processes_a_tree_and_reports_each_file(tree: Path, key_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(tree), str(out), "--key-file", str(key_file)]) == 0
    manifest = _manifest(out)
    assert set(manifest) == {"study1/a.dcm", "study1/b.dcm", "DOE_JANE_notes.txt", "cut.dcm"}
    assert manifest["study1/a.dcm"]["status"] == "ok"
    assert manifest["study1/a.dcm"]["output"] == "study1/a.dcm"
    assert manifest["study1/a.dcm"]["actions"]["uid_remapped"] > 0
    assert manifest["cut.dcm"]["status"] == "rejected"
    assert manifest["cut.dcm"]["reason"].startswith("truncated file")
    assert manifest["DOE_JANE_notes.txt"]["output"] is None
    assert (out / "study1" / "b.dcm").exists() and not (out / "cut.dcm").exists()
    captured = capsys.readouterr()
    assert "ok 2, rejected 2" in captured.out
    assert "DOE" not in captured.err  # progress lines carry counts, not file names


def test_an_out_dir_inside_the_in_dir_is_not_read_as_input(tree: Path, key_file: Path) -> None:
    out = tree / "deidentified"
    assert main([str(tree), str(out), "--key-file", str(key_file)]) == 0
    os.symlink(out / "study1", tree / "link-to-output")  # nor through a link to it
    os.symlink(out / "study1" / "a.dcm", tree / "a-link.dcm")
    assert main([str(tree), str(out), "--key-file", str(key_file)]) == 0
    assert set(_manifest(out)) == {"study1/a.dcm", "study1/b.dcm", "DOE_JANE_notes.txt", "cut.dcm"}


@pytest.mark.parametrize("workers", [1, 2])
def test_links_to_nothing_and_pipes_are_listed_not_opened(tree: Path, key_file: Path,
                                                          tmp_path: Path, workers: int) -> None:
    os.symlink(tmp_path / "gone.dcm", tree / "study1" / "broken.dcm")
    os.mkfifo(tree / "pipe.dcm")  # opening it would wait for a writer forever
    out = tmp_path / "out"
    assert main([str(tree), str(out), "--key-file", str(key_file), "--workers", str(workers)]) == 0
    manifest = _manifest(out)
    assert manifest["study1/broken.dcm"] == {
        "input": "study1/broken.dcm", "output": None, "status": "error", "actions": {},
        "reason": "broken symbolic link: nothing to read"}
    assert manifest["pipe.dcm"]["status"] == "rejected"
    assert manifest["pipe.dcm"]["reason"].startswith("not a regular file")
    assert manifest["study1/a.dcm"]["status"] == "ok" and len(manifest) == 6


def test_it_runs_with_worker_processes(tree: Path, key_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(tree), str(out), "--key-file", str(key_file), "--workers", "2"]) == 0
    assert [m["status"] for m in _manifest(out).values()].count("ok") == 2


def test_it_applies_options(tree: Path, key_file: Path, tmp_path: Path) -> None:
    import pydicom
    out = tmp_path / "out"
    main([str(tree), str(out), "--key-file", str(key_file), "--option",
          "retain_patient_characteristics=false"])
    assert pydicom.dcmread(out / "study1" / "a.dcm")["PatientSex"].value == ""


def test_it_refuses_to_run_without_a_key(tree: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tree), str(tmp_path / "out")]) == 2
    assert "--key-file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_it_never_overwrites_a_key(key_file: Path) -> None:
    before = key_file.read_bytes()
    assert main(["--generate-key", str(key_file)]) == 2
    assert key_file.read_bytes() == before
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_python_dash_m_deid_works(tree: Path, key_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "deid", str(tree), str(out), "--key-file",
                             str(key_file)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(_manifest(out)) == 4


def test_workers_share_the_files_and_each_is_done_once(key_file: Path, tmp_path: Path) -> None:
    """The parent works while its helper starts, helpers take small batches: every input
    appears once in the manifest and has its output."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.dcm").write_bytes(to_bytes(make_dataset(SOPInstanceUID=f"1.2.3.4.{i + 1}")))
    out = tmp_path / "out"
    assert main([str(src), str(out), "--key-file", str(key_file), "--workers", "3"]) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["input"] for line in lines) == [f"f{i:02d}.dcm" for i in range(40)]
    assert all((out / f"f{i:02d}.dcm").exists() for i in range(40))


def test_workers_stage_their_files_and_leave_no_staging_folder(key_file: Path, tmp_path: Path,
                                                               tree: Path) -> None:
    out = tmp_path / "out"
    stale = out / ".deid-staging-999999"  # left by a killed run
    stale.mkdir(parents=True)
    (stale / ".deid-1-2.tmp").write_bytes(b"half-written")
    assert main([str(tree), str(out), "--key-file", str(key_file), "--workers", "2"]) == 0
    assert not list(out.glob(".deid-staging-*"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "manifest.jsonl", "study1/a.dcm", "study1/b.dcm"]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_helpers_started_either_way_share_the_work(key_file: Path, tmp_path: Path,
                                                    start_method: str) -> None:
    src, out = tmp_path / "many", tmp_path / "out"
    src.mkdir()
    jobs = []
    for i in range(12):
        (src / f"f{i:02d}.dcm").write_bytes(to_bytes(make_dataset(SOPInstanceUID=f"1.2.3.5.{i + 1}")))
        jobs.append((f"f{i:02d}.dcm", str(src / f"f{i:02d}.dcm"), str(out / f"f{i:02d}.dcm")))
    out.mkdir()
    lines = list(_shared(jobs, read_key(key_file), Options(), 2, out, start_method))
    assert sorted(line["input"] for line in lines) == [job[0] for job in jobs]
    assert all(line["status"] == "ok" for line in lines)
    # The helper did some of them, in its own staging folder (run() removes those).
    assert [p for p in out.glob(".deid-staging-*") if p.name != f".deid-staging-{os.getpid()}"]


def test_helpers_are_spawned_while_another_thread_runs() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _start_method() == "spawn"
    finally:
        stop.set()
        other.join()
    if threading.active_count() == 1:
        assert _start_method() == "fork"
