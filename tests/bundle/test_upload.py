"""upload_bundle: the native build's upload, run in this process (moto's server on loopback)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from amidsl.bundle.errors import BundleError
from amidsl.node import amidsl_node
from amidsl.run.bundle_upload import upload_bundle
from tests.bundle.conftest import bundle_into
from tests.node.test_node_upload import s3_client


class WrongBucketPresigner:
    """Presigns every part for a bucket that does not exist, so that each PUT fails for good."""

    def __init__(self, client):
        self.client = client

    def generate_presigned_url(self, operation, Params, ExpiresIn):
        return self.client.generate_presigned_url(
            operation, Params={**Params, "Bucket": "no-such-bucket-anywhere"}, ExpiresIn=ExpiresIn
        )


@pytest.fixture
def bundle(tmp_path, sample_image, user, ec2):
    bundle_into(sample_image, tmp_path / "bundle", user, ec2, part_size=100 * 1024)
    return tmp_path / "bundle" / "web.manifest.xml"


def test_a_part_that_cannot_be_uploaded_is_named_and_the_manifest_is_not_uploaded(aws_endpoint, bundle):
    s3 = s3_client(aws_endpoint)
    bucket = f"bundles-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(BundleError) as raised:
        upload_bundle(s3, WrongBucketPresigner(s3), bundle, bucket, "web", retries=0)
    message = str(raised.value)
    assert "upload failed: web.part." in message and "NoSuchBucket" in message
    assert "X-Amz-Signature" not in message  # the presigned URLs are never shown
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_the_parts_go_up_in_parallel_as_the_concurrency_says(aws_endpoint, bundle, monkeypatch):
    lock, running, most = threading.Lock(), [0], [0]
    original = amidsl_node.put_part

    def counting_put_part(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)  # long enough for the others to start
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(amidsl_node, "put_part", counting_put_part)
    s3 = s3_client(aws_endpoint)
    bucket = f"bundles-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    report = upload_bundle(s3, s3, bundle, bucket, "web", concurrency=3)
    assert len(report.uploaded) >= 3 and most[0] == 3
