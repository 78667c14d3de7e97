"""The simulated region's RegisterImage check parses manifests with the same strict, linear code."""

from __future__ import annotations

import re
import time

import pytest
from botocore.exceptions import ClientError

from amidsl.bundle import bundle_image
from amidsl.example import example_credentials
from tests.simulator import test_region as region_tests

# The region tests' fixtures: a small ext4 image and a fake region that knows the example certificate.
BUCKET, image, region = region_tests.BUCKET, region_tests.image, region_tests.region


def _bundle(directory, image, region, prefix):
    key_pem, cert_pem = example_credentials()
    bundle_image(
        image,
        directory,
        prefix=prefix,
        user_id=region.account_id,
        user_cert_pem=cert_pem,
        user_private_key_pem=key_pem,
        ec2_cert_pem=region.ec2_cert_pem,
        part_size=64 * 1024,
    )
    return (directory / f"{prefix}.manifest.xml").read_text()


def _register_error(region, manifest_text: str) -> str:
    region.s3.put_object(Bucket=BUCKET, Key="img/image.manifest.xml", Body=manifest_text.encode())
    with pytest.raises(ClientError) as caught:
        region.call(
            "ec2",
            "RegisterImage",
            {"Name": "web", "ImageLocation": f"{BUCKET}/img/image.manifest.xml", "Architecture": "x86_64"},
        )
    return caught.value.response["Error"]["Code"]


def test_register_image_refuses_genuine_sections_hidden_in_a_comment(tmp_path, image, region):
    genuine = _bundle(tmp_path, image, region, "image")
    forged = _bundle(tmp_path, image, region, "forged")
    for part in tmp_path.glob("*.part.*"):
        region.s3.put_object(Bucket=BUCKET, Key=f"img/{part.name}", Body=part.read_bytes())
    sections = re.compile(r"<machine_configuration>.*</image>", re.DOTALL)
    hidden = f"<!--{sections.search(genuine).group(0)}-->{sections.search(forged).group(0)}"
    wrapped = sections.sub(lambda _: hidden, genuine)
    assert _register_error(region, wrapped) == "InvalidManifest"


def test_register_image_refuses_a_manifest_of_repeated_sections_at_once(region):
    section = "<machine_configuration></machine_configuration>"
    text = "<?xml version='1.0'?><manifest>" + section * (38_000 // len(section)) + "</manifest>"
    started = time.process_time()
    assert _register_error(region, text) == "InvalidManifest"
    assert time.process_time() - started < 2.0
