"""The command-line client (client/marketplace_client) against the running site
(pytest-django's live_server) with a delivered order: fetch, resume, verify, refuse."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

import storage
from marketplace.models import ApiToken, AuditEvent
from marketplace.tokens import api_token_create
from marketplace_client import Api, DiskFullError, fetch, verify
from marketplace_client.cli import main
from workspaces.models import Delivery

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_threshold")]

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
DOCUMENTS = {"manifest.csv", "certificate.json", "certificate.pdf"}


def make_secret(user, scopes=("read", "download")) -> str:  # noqa: ANN001
    return api_token_create(user=user, name="cli", scopes=list(scopes), expires=None)[1]


@pytest.fixture
def delivery(published_dataset, bob, deliver) -> Delivery:
    delivery = deliver(published_dataset, bob)
    assert delivery.status == Delivery.Status.DONE
    return delivery


@pytest.fixture
def world(live_server, bob, delivery, tmp_path):  # noqa: ANN001, ANN201
    class World:
        url = live_server.url
        order = delivery.order_id
        secret = make_secret(bob)
        dest = tmp_path / "order"
        files = {f.path: f for f in delivery.files.all()}

        def run(self, *args: str, token: str | None = None) -> int:
            return main(["fetch", str(self.order), str(self.dest), "--url", self.url,
                         "--token", token or self.secret, *args])

        def api(self) -> Api:
            return Api(self.url, self.secret)

        def stored(self, path: str) -> bytes:
            return b"".join(storage.iter_chunks(self.files[path].storage_key))

    return World()


def on_disk(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


# ---- fetch and verify ----------------------------------------------------------------------
def test_it_fetches_every_file_in_the_manifests_layout_and_verifies_it(world, delivery, capsys):
    assert world.run("--jobs", "3") == 0
    out, err = capsys.readouterr()
    assert "OK: 9 downloaded, 0 already present" in out
    assert "100.0%" in err and "6/6 files" in err  # the progress bar
    assert on_disk(world.dest) == set(world.files) | DOCUMENTS
    for path in world.files:
        assert (world.dest / path).read_bytes() == world.stored(path)
    assert (world.dest / "manifest.csv").read_bytes() == b"".join(storage.iter_chunks(delivery.manifest_key))
    assert main(["verify", str(world.dest)]) == 0
    assert "OK: 6 files match" in capsys.readouterr().out


def test_a_second_run_downloads_nothing(world):
    first = fetch(world.api(), world.order, world.dest)
    assert first.ok and len(first.downloaded) == 9
    downloads = AuditEvent.objects.filter(action="download").count()
    again = fetch(world.api(), world.order, world.dest)
    assert again.ok and again.downloaded == [] and again.bytes_downloaded == 0
    assert sorted(again.skipped) == sorted(set(world.files) | DOCUMENTS)
    assert AuditEvent.objects.filter(action="download").count() == downloads


class CutResponse:
    """A response whose connection drops after ``limit`` bytes (a network cut)."""

    def __init__(self, response, limit: int) -> None:  # noqa: ANN001
        self.response, self.limit, self.sent = response, limit, 0
        self.status, self.headers = response.status, response.headers

    def read(self, size: int) -> bytes:
        if self.sent >= self.limit:
            raise ConnectionResetError("connection reset by peer")
        data = self.response.read(min(size, self.limit - self.sent))
        self.sent += len(data)
        return data

    def __enter__(self) -> CutResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.response.close()


@pytest.fixture
def cut_first_file(monkeypatch):  # noqa: ANN001, ANN201
    """The first data file's download is cut after 1,000 bytes, once."""
    cuts = []
    real_open = Api.open

    def open_and_cut(self, url, headers=None):  # noqa: ANN001, ANN202
        response = real_open(self, url, headers)
        if not cuts and response.headers.get("Content-Type") == "application/dicom":
            cuts.append(url)
            return CutResponse(response, 1000)
        return response

    monkeypatch.setattr(Api, "open", open_and_cut)
    return cuts


def test_a_download_cut_mid_file_resumes_from_its_part_file(world, cut_first_file):
    result = fetch(world.api(), world.order, world.dest, retries=0, jobs=1)
    assert len(cut_first_file) == 1 and len(result.failed) == 1
    (path, reason), = result.failed.items()
    assert "ConnectionResetError" in reason
    part = world.dest / (path + ".part")
    assert part.stat().st_size == 1000 and not (world.dest / path).exists()
    assert not (world.dest / "manifest.csv").exists()  # written only after every file is right
    assert verify(world.dest).manifest_problems  # nothing claims to be complete

    again = fetch(world.api(), world.order, world.dest)
    assert again.ok and path in again.downloaded
    size = world.files[path].size_bytes
    assert again.bytes_downloaded == size - 1000 + sum(
        (world.dest / name).stat().st_size for name in DOCUMENTS)  # the rest of the file, then the documents
    assert (world.dest / path).read_bytes() == world.stored(path) and not part.exists()
    assert verify(world.dest).ok


def test_a_cut_download_is_retried_within_the_same_run(world, cut_first_file):
    result = fetch(world.api(), world.order, world.dest, retries=1, backoff=0)
    assert len(cut_first_file) == 1 and result.ok
    assert verify(world.dest).ok


def test_a_part_file_truncated_by_hand_is_completed_with_a_range_request(world):
    assert fetch(world.api(), world.order, world.dest).ok
    path = sorted(world.files)[0]
    data = (world.dest / path).read_bytes()
    (world.dest / path).unlink()
    (world.dest / (path + ".part")).write_bytes(data[: len(data) // 2])
    result = fetch(world.api(), world.order, world.dest)
    assert result.downloaded == [path] and result.bytes_downloaded == len(data) - len(data) // 2
    assert verify(world.dest).ok


def test_verify_finds_a_tampered_file_and_fetch_replaces_it(world, capsys):
    assert fetch(world.api(), world.order, world.dest).ok
    path = sorted(world.files)[1]
    data = bytearray((world.dest / path).read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (world.dest / path).write_bytes(bytes(data))
    assert main(["verify", str(world.dest)]) == 1
    assert f"sha256 mismatch: {path}" in capsys.readouterr().err
    result = fetch(world.api(), world.order, world.dest)
    assert result.downloaded == [path]
    assert main(["verify", str(world.dest)]) == 0


def test_verify_lists_missing_extra_and_resized_files(world):
    assert fetch(world.api(), world.order, world.dest).ok
    gone, shorter = sorted(world.files)[:2]
    (world.dest / gone).unlink()
    with open(world.dest / shorter, "r+b") as fh:
        fh.truncate(10)
    (world.dest / "notes.txt").write_text("mine")
    report = verify(world.dest)
    assert (report.missing, report.size_mismatch, report.extra, report.sha_mismatch) == (
        [gone], [shorter], ["notes.txt"], [])


def test_verify_notices_an_edited_manifest_and_fetch_restores_it(world, capsys):
    assert fetch(world.api(), world.order, world.dest).ok
    manifest = world.dest / "manifest.csv"
    original = manifest.read_bytes()
    # Someone "fixes" the manifest to match a changed file: the row and the file agree, the
    # certificate's hash of the manifest does not.
    path = sorted(world.files)[0]
    (world.dest / path).write_bytes(b"other data")
    row = f"{world.files[path].size_bytes},{world.files[path].sha256}".encode()
    manifest.write_bytes(original.replace(row, f"10,{hashlib.sha256(b'other data').hexdigest()}".encode()))
    assert main(["verify", str(world.dest)]) == 1
    assert "manifest.csv was changed" in capsys.readouterr().err
    result = fetch(world.api(), world.order, world.dest)
    assert set(result.downloaded) == {path, "manifest.csv"}
    assert manifest.read_bytes() == original and verify(world.dest).ok


# ---- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("problem, words", [("revoked", "token revoked"), ("expired", "token expired"),
                                             ("unknown", "unknown token")])
def test_it_exits_2_naming_the_tokens_problem(world, bob, problem, words, capsys):
    token = make_secret(bob)
    row = ApiToken.objects.order_by("-id").first()
    if problem == "revoked":
        row.revoked_at = timezone.now()
    elif problem == "expired":
        row.expires = timezone.now() - timedelta(minutes=1)
    else:
        token = "mkt_" + "x" * 43
    row.save()
    assert world.run(token=token) == 2
    assert words in capsys.readouterr().err
    assert not world.dest.exists()


def test_it_exits_2_for_an_order_that_is_not_the_tokens_users(world, charlie, capsys):
    assert world.run(token=make_secret(charlie)) == 2
    err = capsys.readouterr().err
    assert f"order {world.order} was not found for this token's account" in err


def test_it_exits_2_when_the_token_may_only_read(world, bob, capsys):
    assert world.run(token=make_secret(bob, scopes=("read",))) == 2
    assert "lacks the 'download' scope" in capsys.readouterr().err


def test_it_exits_2_for_a_view_only_delivery(world, delivery, capsys):
    from marketplace.grants import grants_remove_all
    from workspaces.grants import DELIVERY_DOWNLOAD

    grants_remove_all(delivery, [DELIVERY_DOWNLOAD], reason="test")
    assert world.run() == 2
    assert "view-only" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to run out of space")
def test_a_full_disk_stops_the_fetch_with_a_clear_message(world, capsys):
    path = sorted(world.files)[0]
    (world.dest / path).parent.mkdir(parents=True)
    (world.dest / (path + ".part")).symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(DiskFullError):
        fetch(world.api(), world.order, world.dest, jobs=1)
    assert world.run("--jobs", "1") == 3
    out, err = capsys.readouterr()
    assert "disk full while writing" in err and path in err
    assert "OK" not in out and not (world.dest / "manifest.csv").exists()


def test_the_client_runs_as_a_program_without_django(world):
    assert fetch(world.api(), world.order, world.dest).ok
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}
    code = "import sys; sys.argv = ['mkt', 'verify', sys.argv[1]]; " \
           "import marketplace_client.cli as c; rc = c.main(); assert 'django' not in sys.modules; sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code, str(world.dest)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "OK: 6 files match" in done.stdout


# ---- S3 ------------------------------------------------------------------------------------
S3_BUCKET = "marketplace-client-test"


@pytest.fixture
def s3_storage(s3_server, settings):  # noqa: ANN001, ANN201
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=S3_BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": S3_BUCKET, "endpoint_url": s3_server, "access_key": "test", "secret_key": "test",
                    "region_name": "us-east-1", "signature_version": "s3v4", "querystring_expire": 300,
                    "file_overwrite": True, "default_acl": None}}}
    return s3_server


def test_it_follows_the_redirect_to_s3_and_resumes_there(s3_storage, live_server, bob, dataset, ingest, publish,
                                                         deliver, tmp_path):
    from factories.dicom import ct_files

    ingest(dataset, ct_files())
    delivery = deliver(publish(dataset), bob)
    assert storage.download_url(delivery.manifest_key).startswith(s3_storage)
    api, dest = Api(live_server.url, make_secret(bob)), tmp_path / "s3"
    assert fetch(api, delivery.order_id, dest).ok and verify(dest).ok
    path = delivery.files.first().path
    data = (dest / path).read_bytes()
    (dest / path).unlink()
    (dest / (path + ".part")).write_bytes(data[:100])
    result = fetch(api, delivery.order_id, dest)
    assert result.downloaded == [path] and result.bytes_downloaded == len(data) - 100  # a Range on the presigned URL
    assert verify(dest).ok
