"""Throughput benchmark: our deid engine against cp, a pydicom read+write floor,
dicognito and pydicom's `deid` package (the peers run in their own virtual environment).

    python benchmarks/deid_bench.py [--files 2000] [--rounds 3] [--keep] [--big-mb 1024]
                                    [--no-peers]

Generates a corpus of 512x512 16-bit CT files (~0.5 MB each, fake PHI in the usual
places, free text, a private block and an overlay) in a temporary directory, warms the
page cache, then runs each tool once per round (rounds interleaved: this machine's speed
drifts; dirty pages flushed before each tool, so none pays for its predecessor's writes)
and prints each tool's median files/s with its range, MB/s, peak RSS (largest single
process, from wait4) and ratios of the medians (pydicom's deid: one round); then a leak
check of every tool's output on a 50-file subset with our verifier; then the peak memory
of the engine on one large multi-frame file. It prints numbers only: no timed assertions (it is not part of `make test`).

The peers are installed only into benchmarks/.peers-venv (gitignored) and run as
subprocesses with `python -I`, cwd outside the repository and no PYTHONPATH: their
package `deid` never meets ours. This parent process imports nothing heavy, so the
children's peak RSS (which Linux seeds from the parent's) stays meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / "benchmarks" / ".peers-venv"
KEY = "benchmark-key-0123456789abcdef0123456789"

GENERATE = r"""
import sys, os, random
sys.path.insert(0, sys.argv[1])
from demo.synthetic import fake_patients, make_instance, make_uid, to_bytes
out, n = sys.argv[2], int(sys.argv[3])
patients = fake_patients(max(1, n // 100), seed=7)
for i in range(n):
    patient = patients[i % len(patients)]
    study = i % len(patients)
    ds = make_instance(patient=patient, modality="CT", study_uid=make_uid("bench", study),
                       series_uid=make_uid("bench", study, 1), sop_uid=make_uid("bench", i),
                       instance_number=i // len(patients) + 1, rows=512, columns=512,
                       rng_seed=i)
    # Free text, and an overlay with a label, as uploads carry them.
    ds.ImageComments = f"Pt {patient.display_name} MRN {patient.patient_id} ok"
    ds.add_new(0x60000010, "US", 512)
    ds.add_new(0x60000011, "US", 512)
    ds.add_new(0x60000022, "LO", f"{patient.display_name} overlay")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(512 * 512 // 8))
    with open(os.path.join(out, f"ct{i:05d}.dcm"), "wb") as f:
        f.write(to_bytes(ds))
"""

RUN_TIMED = r"""
import json, sys, time, os
def report(t0, n):
    print(json.dumps({"seconds": time.perf_counter() - t0, "files": n}))
"""

FLOOR = RUN_TIMED + r"""
import pydicom
src, dst = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(src))
t0 = time.perf_counter()
for name in names:
    ds = pydicom.dcmread(os.path.join(src, name))
    ds.save_as(os.path.join(dst, name))
report(t0, len(names))
"""

ENGINE = RUN_TIMED + r"""
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from deid.cli import run
from deid.profile import Options
if __name__ == "__main__":  # spawned workers import this file again
    src, dst, workers = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    totals = run(src, dst, key=sys.argv[5].encode(), options=Options(), workers=workers,
                 progress=False)
    report(t0, totals["ok"] + totals["rejected"] + totals["error"])
    print(json.dumps(dict(totals)), file=sys.stderr)
"""

DICOGNITO = RUN_TIMED + r"""
import pydicom
from dicognito.anonymizer import Anonymizer
src, dst = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(src))
anonymizer = Anonymizer()
t0 = time.perf_counter()
for name in names:
    ds = pydicom.dcmread(os.path.join(src, name))
    anonymizer.anonymize(ds)
    ds.save_as(os.path.join(dst, name))
report(t0, len(names))
"""

PYDEID = RUN_TIMED + r"""
import logging
logging.disable(logging.WARNING)
from deid.dicom import replace_identifiers
src, dst = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(src))
files = [os.path.join(src, name) for name in names]
t0 = time.perf_counter()
# The default recipe (deid.dicom), saving each file under its own name in dst.
replace_identifiers(dicom_files=files, save=True, output_folder=dst, overwrite=True)
report(t0, len(names))
"""

LEAKS = r"""
import io, json, os, sys
sys.path.insert(0, sys.argv[1])
import pydicom
from deid.errors import PHIRemainsError
from deid.verify import verify_output
src, names = sys.argv[2], json.loads(sys.argv[3])
result = {}
for label, out in json.loads(sys.argv[4]).items():
    leaked = missing = 0
    for name in names:
        path = os.path.join(out, name)
        if not os.path.exists(path):
            missing += 1
            continue
        original = pydicom.dcmread(os.path.join(src, name))
        try:
            verify_output(original, open(path, "rb").read())
        except PHIRemainsError:
            leaked += 1
        except Exception:
            missing += 1  # unreadable output
    result[label] = {"leaked": leaked, "missing": missing}
print(json.dumps(result))
"""

BIG = r"""
import struct, sys, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests/deid")
src, dst, mb = sys.argv[2], sys.argv[3], int(sys.argv[4])
if sys.argv[5] == "make":
    import numpy as np
    from deid_factory import make_dataset, to_bytes
    frames = mb * 1024 * 1024 // (512 * 512 * 2)
    ds = make_dataset(Rows=512, Columns=512, NumberOfFrames=str(frames))
    del ds.PixelData
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 4096, 512 * 512, dtype="<u2").tobytes()
    with open(src, "wb") as f:
        f.write(to_bytes(ds) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * len(frame)))
        for _ in range(frames):
            f.write(frame)
    sys.exit(0)
from deid_factory import KEY
from deid import deidentify_file
t0 = time.perf_counter()
report = deidentify_file(src, dst, key=KEY)
seconds = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(f"{seconds} {hwm} {report.verified}")
"""


def spawn(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
          quiet: bool = True) -> tuple[float, int, str, str]:
    """Run argv; return (wall seconds, peak RSS in KiB of its largest process, out, err)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_maxrss, stdout, stderr


def script(work: Path, name: str, text: str) -> str:
    path = work / name
    path.write_text(text)
    return str(path)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def ensure_peers() -> tuple[str | None, str]:
    """Python of the peers' venv, or None with the reason."""
    python = PEERS_VENV / "bin" / "python"
    if python.exists():
        probe = subprocess.run([str(python), "-I", "-c", "import dicognito, deid.dicom"],
                               capture_output=True, cwd=tempfile.gettempdir(), env=clean_env())
        if probe.returncode == 0:
            return str(python), "already installed"
    print(f"# installing dicognito and deid into {PEERS_VENV.relative_to(ROOT)} ...", flush=True)
    try:
        if not python.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(PEERS_VENV)
        with tempfile.TemporaryDirectory() as tmp:
            check = subprocess.run([str(python), "-m", "pip", "download", "-q", "--no-deps",
                                    "-d", tmp, "dicognito", "deid"], capture_output=True,
                                   text=True, timeout=300, cwd=tmp, env=clean_env())
        if check.returncode != 0:
            return None, "pip download failed: " + check.stderr.strip()[-300:]
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", "dicognito", "deid"],
                                 capture_output=True, text=True, timeout=900,
                                 cwd=tempfile.gettempdir(), env=clean_env())
        if install.returncode != 0:
            return None, "pip install failed: " + install.stderr.strip()[-300:]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return str(python), "installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the corpus and outputs")
    parser.add_argument("--big-mb", type=int, default=1024,
                        help="size of the multi-frame memory test file (0: skip)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--leak-subset", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every tool but pydicom deid (median counts)")
    args = parser.parse_args()

    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="deid-bench-"))
    corpus = work / "in"
    corpus.mkdir()
    print(f"# work dir {work}; python {sys.version.split()[0]}; {os.cpu_count()} cores", flush=True)
    try:
        t0 = time.perf_counter()
        spawn([py, script(work, "gen.py", GENERATE), str(ROOT), str(corpus), str(args.files)])
        names = sorted(os.listdir(corpus))
        total_bytes = sum((corpus / n).stat().st_size for n in names)
        print(f"# corpus: {len(names)} files, {total_bytes / 1e6:.0f} MB "
              f"({total_bytes / len(names) / 1e6:.2f} MB each), generated in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for name in names:  # warm the page cache
            with open(corpus / name, "rb") as f:
                while f.read(1 << 20):
                    pass

        peers_python, peers_note = (None, "skipped (--no-peers)")
        if not args.no_peers:
            peers_python, peers_note = ensure_peers()
        print(f"# peers: {peers_note}", flush=True)

        runs: dict[str, list[dict[str, float]]] = {}
        outputs: dict[str, Path] = {}

        def measure(label: str, argv: list[str], out: Path, **kw: object) -> None:
            out.mkdir()
            # The previous tool's ~1 GB of output is still being written back to disk:
            # flush it first, so that no tool pays for the one before it.
            os.sync()
            print(f"# running {label} ...", flush=True)
            try:
                wall, rss, stdout, _ = spawn(argv, **kw)  # type: ignore[arg-type]
            except RuntimeError as exc:
                print(f"# {label} FAILED: {exc}", flush=True)
                return
            seconds = wall
            for line in stdout.splitlines():
                if line.startswith("{") and "seconds" in line:
                    seconds = json.loads(line)["seconds"]  # loop time, no interpreter start
            runs.setdefault(label, []).append({"seconds": seconds, "wall": wall, "rss_mb": rss / 1024})
            if label in outputs:
                shutil.rmtree(outputs[label], ignore_errors=True)  # keep the last round's only
                os.sync()
            outputs[label] = out
            print(f"#   {len(names) / seconds:8.1f} files/s  ({seconds:.1f} s loop, "
                  f"{wall:.1f} s wall)", flush=True)

        engine = script(work, "engine.py", ENGINE)
        tools: list[tuple[str, Callable[[Path], list[str]], dict[str, object]]] = [
            ("cp -r", lambda out: ["cp", "-r", str(corpus) + "/.", str(out)], {}),
            ("pydicom read+write (floor)",
             lambda out: [py, "-I", script(work, "floor.py", FLOOR), str(corpus), str(out)],
             {"cwd": str(work), "env": clean_env()}),
        ]
        for workers in (1, 2):
            tools.append((f"our deid engine, {workers} worker{'s' if workers > 1 else ''}",
                          lambda out, w=workers: [py, "-I", engine, str(ROOT), str(corpus),
                                                  str(out), str(w), KEY],
                          {"cwd": str(work), "env": clean_env()}))
        if peers_python:
            tools.append(("dicognito", lambda out: [
                peers_python, "-I", script(work, "dicognito_run.py", DICOGNITO), str(corpus),
                str(out)], {"cwd": str(work), "env": clean_env()}))
        else:
            print("# dicognito and pydicom deid NOT measured: " + peers_note, flush=True)
        # This machine's speed drifts by tens of percent from minute to minute: every tool
        # runs once per round, rounds interleaved, and each tool's median round counts.
        for round_ in range(args.rounds):
            print(f"# round {round_ + 1} of {args.rounds}", flush=True)
            for index, (label, argv, kw) in enumerate(tools):
                out = work / f"out-{index}-{round_}"
                measure(label, argv(out), out, **kw)  # type: ignore[arg-type]
        if peers_python:  # the slowest by far: one round
            measure("pydicom deid (default recipe)",
                    [peers_python, "-I", script(work, "pydeid_run.py", PYDEID), str(corpus),
                     str(work / "out-pydeid")], work / "out-pydeid", cwd=str(work),
                    env=clean_env())

        results: dict[str, dict[str, float]] = {}
        for label, rounds in runs.items():
            rates = sorted(len(names) / r["seconds"] for r in rounds)
            median = statistics.median(rates)
            results[label] = {"files_s": median, "mb_s": median * total_bytes / len(names) / 1e6,
                              "rss_mb": max(r["rss_mb"] for r in rounds),
                              "low": rates[0], "high": rates[-1], "rounds": len(rates)}

        # Leak check: our verifier on a subset of every tool's output.
        step = max(1, len(names) // max(1, args.leak_subset))
        subset = names[::step][: args.leak_subset]
        print(f"# leak check on {len(subset)} files per tool ...", flush=True)
        _, _, stdout, _ = spawn([py, "-I", script(work, "leaks.py", LEAKS), str(ROOT),
                                 str(corpus), json.dumps(subset),
                                 json.dumps({k: str(v) for k, v in outputs.items()})],
                                cwd=str(work), env=clean_env())
        leaks = json.loads(stdout.strip().splitlines()[-1])

        def ratio(label: str, base: str) -> str:
            if label not in results or base not in results:
                return "n/a"
            return f"{results[label]['files_s'] / results[base]['files_s']:.2f}x"

        print()
        header = (f"{'tool':32} {'files/s':>9} {'range':>13} {'MB/s':>8} {'peak RSS':>9} "
                  f"{'vs dicognito':>13} {'vs floor':>9} {'vs cp':>7} {'leaked/checked':>15}")
        print(header)
        print("-" * len(header))
        for label, r in results.items():
            leak = leaks.get(label, {})
            checked = len(subset) - leak.get("missing", 0)
            leak_text = f"{leak.get('leaked', 0)}/{checked}" + (
                f" ({leak['missing']} unreadable)" if leak.get("missing") else "")
            spread = f"{r['low']:.0f}-{r['high']:.0f}" if r["rounds"] > 1 else "1 round"
            print(f"{label:32} {r['files_s']:9.1f} {spread:>13} {r['mb_s']:8.1f} {r['rss_mb']:7.0f}MB "
                  f"{ratio(label, 'dicognito'):>13} {ratio(label, 'pydicom read+write (floor)'):>9} "
                  f"{ratio(label, 'cp -r'):>7} {leak_text:>15}")
        e1, e2 = "our deid engine, 1 worker", "our deid engine, 2 workers"
        if e1 in results and e2 in results:
            print(f"\n2 workers / 1 worker: {results[e2]['files_s'] / results[e1]['files_s']:.2f}x")
        # Round by round, the tools ran within the same minute: their ratios there show how
        # much of a difference between medians is the machine's drift.
        for label, base in ((e1, "pydicom read+write (floor)"), (e1, "cp -r"), (e2, e1)):
            if label in runs and base in runs and len(runs[label]) == len(runs[base]) > 1:
                per_round = " ".join(f"{b['seconds'] / r['seconds']:.2f}"
                                     for r, b in zip(runs[label], runs[base]))
                print(f"{label} / {base}, round by round: {per_round}")
        print(f"files/s: median of {args.rounds} interleaved rounds (range: slowest-fastest "
              "round); MB/s from the median. ")
        print("files/s and MB/s: input files and bytes over the tool's own loop time (cp: wall); "
              "peak RSS: largest single process (wait4). leaked: outputs in which our verifier "
              "found an identifying value of the input.")

        if args.big_mb:
            big, big_out = work / "big.dcm", work / "big-out.dcm"
            runner = script(work, "big.py", BIG)
            spawn([py, "-I", runner, str(ROOT), str(big), str(big_out), str(args.big_mb), "make"],
                  cwd=str(work), env=clean_env())
            wall, rss, stdout, _ = spawn([py, "-I", runner, str(ROOT), str(big), str(big_out),
                                          str(args.big_mb), "run"], cwd=str(work), env=clean_env())
            seconds, hwm, verified = stdout.split()
            size = big.stat().st_size
            print(f"\nlarge file: {size / 2**30:.2f} GiB multi-frame, de-identified in "
                  f"{float(seconds):.1f} s ({size / float(seconds) / 1e6:.0f} MB/s), peak RSS "
                  f"{int(hwm) / 1024:.0f} MB (VmHWM; wait4 {rss / 1024:.0f} MB), verified {verified}")
            big.unlink()
            big_out.unlink(missing_ok=True)
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
