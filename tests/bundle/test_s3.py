"""Bundles in S3 (moto's server on loopback): delete exactly a bundle, download it checked part by part."""

from __future__ import annotations

import hashlib
import os
import uuid

import boto3
import botocore.exceptions
import pytest

from amidsl.bundle import unbundle
from amidsl.bundle.errors import ManifestParseError, PartDigestMismatchError
from amidsl.bundle.s3 import (
    BundleStorageError,
    delete_bundle,
    download_bundle,
    split_image_location,
)
from tests.bundle.conftest import bundle_into

PART_SIZE = 100 * 1024


@pytest.fixture
def s3(aws_endpoint):
    return boto3.client(
        "s3",
        endpoint_url=aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3):
    name = f"bundles-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_bundle(tmp_path, sample_image, user, ec2):
    """A bundle of the sample image in several parts, on disk."""
    out = tmp_path / "bundle"
    manifest = bundle_into(sample_image, out, user, ec2, part_size=PART_SIZE)
    assert len(manifest.parts) > 2
    return out


def put_bundle(s3, bucket, directory, path="web/2026-11"):
    """Upload every file of a local bundle under `path`; return the manifest's key."""
    for file in sorted(directory.iterdir()):
        s3.put_object(Bucket=bucket, Key=f"{path}/{file.name}", Body=file.read_bytes())
    return f"{path}/web.manifest.xml"


def keys_in(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_delete_bundle_removes_the_parts_and_the_manifest_and_nothing_else_under_the_prefix(
    s3, bucket, local_bundle
):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    neighbours = ["web/2026-11/web.part.99", "web/2026-11/other.manifest.xml", "web/2026-11/notes.txt"]
    for key in [*neighbours, "web/web.part.0"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not this bundle's")
    deleted = delete_bundle(s3, bucket, manifest_key)
    assert deleted[-1] == manifest_key
    assert len(deleted) == len(list(local_bundle.glob("web.part.*"))) + 1
    assert keys_in(s3, bucket) == sorted([*neighbours, "web/web.part.0"])


def test_a_dry_run_lists_the_bundle_and_deletes_nothing(s3, bucket, local_bundle):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    before = keys_in(s3, bucket)
    listed = delete_bundle(s3, bucket, manifest_key, dry_run=True)
    assert sorted(listed) == before
    assert keys_in(s3, bucket) == before


def test_a_manifest_that_does_not_parse_is_refused_and_nothing_is_deleted(s3, bucket, local_bundle):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=b"<manifest><image>")
    before = keys_in(s3, bucket)
    with pytest.raises(ManifestParseError, match=f"s3://{bucket}/{manifest_key} is truncated"):
        delete_bundle(s3, bucket, manifest_key)
    assert keys_in(s3, bucket) == before


def test_a_manifest_naming_objects_that_are_not_its_parts_is_refused(s3, bucket, local_bundle):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    text = (local_bundle / "web.manifest.xml").read_text()
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=text.replace("web.part.0<", "keep-me.txt<"))
    s3.put_object(Bucket=bucket, Key="web/2026-11/keep-me.txt", Body=b"precious")
    with pytest.raises(ManifestParseError, match=r"'keep-me.txt', which is not web\.part\.<n>"):
        delete_bundle(s3, bucket, manifest_key)
    assert "web/2026-11/keep-me.txt" in keys_in(s3, bucket)


def test_a_missing_manifest_is_named_with_the_fix(s3, bucket):
    with pytest.raises(BundleStorageError, match=f"s3://{bucket}/no/such.manifest.xml.*NoSuchKey"):
        delete_bundle(s3, bucket, "no/such.manifest.xml")


def test_deleting_again_after_an_interruption_finishes_the_job(s3, bucket, local_bundle):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    s3.delete_object(Bucket=bucket, Key="web/2026-11/web.part.1")  # as if cut short
    delete_bundle(s3, bucket, manifest_key)
    assert keys_in(s3, bucket) == []


def test_download_bundle_writes_parts_and_manifest_that_unbundle_restores(
    s3, bucket, local_bundle, tmp_path, sample_image, user
):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    target = tmp_path / "downloaded"
    files = download_bundle(s3, bucket, manifest_key, target, concurrency=3)
    assert files[-1] == "web.manifest.xml"
    for name in files:
        assert (target / name).read_bytes() == (local_bundle / name).read_bytes()
        assert (target / name).stat().st_mode & 0o077 == 0
    restored = unbundle(
        target / "web.manifest.xml", user.key_pem, tmp_path / "restored", user_cert_pem=user.cert_pem
    )
    assert hashlib.sha1(restored.read_bytes()).digest() == hashlib.sha1(sample_image.read_bytes()).digest()


def test_a_part_with_a_wrong_digest_is_refused_by_name_and_not_kept(s3, bucket, local_bundle, tmp_path):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    s3.put_object(Bucket=bucket, Key="web/2026-11/web.part.2", Body=os.urandom(PART_SIZE))
    target = tmp_path / "downloaded"
    with pytest.raises(PartDigestMismatchError, match=r"part web\.part\.2 .*s3://.*web\.part\.2"):
        download_bundle(s3, bucket, manifest_key, target)
    assert not (target / "web.part.2").exists()
    assert not (target / "web.manifest.xml").exists()
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []


def test_a_resumed_download_keeps_the_parts_already_there(s3, bucket, local_bundle, tmp_path):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    target = tmp_path / "downloaded"
    target.mkdir()
    (target / "web.part.0").write_bytes((local_bundle / "web.part.0").read_bytes())
    s3.delete_object(Bucket=bucket, Key="web/2026-11/web.part.0")  # would fail if fetched again
    lines = []
    download_bundle(s3, bucket, manifest_key, target, progress=lines.append)
    assert "1 part(s) already in" in lines[0]
    assert (target / "web.part.1").read_bytes() == (local_bundle / "web.part.1").read_bytes()


def test_download_never_writes_through_a_planted_link(s3, bucket, local_bundle, tmp_path):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    target = tmp_path / "downloaded"
    target.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (target / "web.part.1").symlink_to(victim)
    with pytest.raises(Exception, match="symbolic link"):
        download_bundle(s3, bucket, manifest_key, target)
    assert victim.read_text() == "untouched"


def test_an_image_location_splits_into_bucket_and_manifest_key():
    assert split_image_location("b/web/2026-11/web.manifest.xml") == ("b", "web/2026-11/web.manifest.xml")
    with pytest.raises(Exception, match="is not bucket/key"):
        split_image_location("just-a-bucket")


def test_an_interrupted_download_leaves_no_staging_files_and_no_manifest(s3, bucket, local_bundle, tmp_path):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    target = tmp_path / "downloaded"

    def interrupt(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_bundle(s3, bucket, manifest_key, target, concurrency=1, progress=interrupt)
    left = sorted(p.name for p in target.iterdir())
    assert "web.manifest.xml" not in left
    assert [name for name in left if not name.startswith("web.part.")] == []


class RefusingReads:
    """An S3 client that is refused (AccessDenied) every read of one key, as a bucket policy can do."""

    def __init__(self, s3, refused_key):
        self._s3, self._refused_key = s3, refused_key

    def get_object(self, **params):
        if params["Key"] == self._refused_key:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise botocore.exceptions.ClientError(error, "GetObject")
        return self._s3.get_object(**params)

    def __getattr__(self, name):
        return getattr(self._s3, name)


def test_a_manifest_beside_that_does_not_parse_still_keeps_the_parts_it_mentions(s3, bucket, local_bundle):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    s3.put_object(
        Bucket=bucket, Key="web/2026-11/old.manifest.xml", Body=b"<manifest><filename>web.part.1</filename>"
    )
    deleted = delete_bundle(s3, bucket, manifest_key)
    assert "web/2026-11/web.part.1" not in deleted
    assert keys_in(s3, bucket) == ["web/2026-11/old.manifest.xml", "web/2026-11/web.part.1"]


def test_a_manifest_beside_that_cannot_be_read_stops_the_delete_before_anything_goes(
    s3, bucket, local_bundle
):
    manifest_key = put_bundle(s3, bucket, local_bundle)
    s3.put_object(Bucket=bucket, Key="web/2026-11/eu.manifest.xml", Body=b"unreadable to these credentials")
    before = keys_in(s3, bucket)
    refusing = RefusingReads(s3, "web/2026-11/eu.manifest.xml")
    with pytest.raises(BundleStorageError, match=f"s3://{bucket}/web/2026-11/eu.manifest.xml.*AccessDenied"):
        delete_bundle(refusing, bucket, manifest_key)
    assert keys_in(s3, bucket) == before
