"""The storage layer against a moto S3 server over HTTP (the production backend's path).

moto ignores presigned-URL expiry and signatures: expiry of our own links is
tested in tests/workspaces, not here.
"""
from __future__ import annotations

import hashlib
import io

import boto3
import pytest
import requests

import storage

BUCKET = "marketplace-test"


@pytest.fixture
def s3_storage(s3_server, settings):
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET, "endpoint_url": s3_server, "access_key": "test", "secret_key": "test",
                "region_name": "us-east-1", "signature_version": "s3v4", "querystring_expire": 300,
                "file_overwrite": True, "default_acl": None,
            },
        },
    }
    yield s3_server


def test_it_puts_reads_copies_and_deletes_objects_on_s3(s3_storage):
    payload = b"DICM" * 1000
    storage.put("catalog/1/a/b/c.dcm", io.BytesIO(payload))
    assert storage.exists("catalog/1/a/b/c.dcm")
    assert storage.size("catalog/1/a/b/c.dcm") == len(payload)
    assert storage.sha256_of("catalog/1/a/b/c.dcm") == hashlib.sha256(payload).hexdigest()

    storage.copy("catalog/1/a/b/c.dcm", "workspaces/9/4/a/b/c.dcm")
    assert b"".join(storage.iter_chunks("workspaces/9/4/a/b/c.dcm")) == payload

    storage.put("catalog/1/a/b/c.dcm", io.BytesIO(b"replaced"))  # same key: replaced, never renamed
    assert b"".join(storage.iter_chunks("catalog/1/a/b/c.dcm")) == b"replaced"

    storage.delete("catalog/1/a/b/c.dcm")
    assert not storage.exists("catalog/1/a/b/c.dcm")
    assert storage.exists("workspaces/9/4/a/b/c.dcm")


def test_it_gives_a_short_lived_sigv4_url_on_s3(s3_storage):
    storage.put("workspaces/9/4/manifest.csv", io.BytesIO(b"path,sha256\n"))
    url = storage.download_url("workspaces/9/4/manifest.csv")
    assert url is not None
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=300" in url
    assert requests.get(url, timeout=10).content == b"path,sha256\n"


def test_local_storage_has_no_direct_url(settings):
    assert storage.download_url("anything") is None


@pytest.mark.django_db
def test_ingestion_and_delivery_run_on_s3(s3_storage, dataset, ingest, publish, deliver, bob, tiny_threshold):
    from factories.dicom import ct_files

    batch = ingest(dataset, ct_files(n_patients=1, n_instances=2), as_zip=True)
    assert batch.ok_files == 2
    delivery = deliver(publish(dataset), bob)

    client = boto3.client("s3", endpoint_url=s3_storage, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    delivered = {k for k in keys if k.startswith(f"{delivery.prefix}/")}
    assert len(delivered) == 5  # two instances, the manifest and the certificate (JSON and PDF)
    assert not any(k.startswith("quarantine/") for k in keys)
    for f in delivery.files.all():
        body = client.get_object(Bucket=BUCKET, Key=f.storage_key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f.sha256
