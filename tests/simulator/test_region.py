"""FakeRegion: RegisterImage refuses, with EC2's error codes, every bundle EC2 would refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from amidsl.bundle import build_image, bundle_image
from amidsl.example import example_credentials
from amidsl.strategies.ec2_certificate import spki_sha256
from simulator import FakeRegion, template_node
from simulator.region import without_public_images
from tests.conftest import make_key_and_cert

BUCKET = "acme-bundles"
LOCATION = f"{BUCKET}/img/image.manifest.xml"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A small real ext4 image to bundle."""
    folder = tmp_path_factory.mktemp("volume")
    (folder / "etc").mkdir()
    (folder / "etc" / "hostname").write_text("web-1\n")
    (folder / "data.bin").write_bytes(os.urandom(200_000))
    path = tmp_path_factory.mktemp("image") / "image"
    build_image(folder, path)
    return path


def test_moto_loads_ec2_only_when_the_region_first_asks_it_something():
    """Loading moto's EC2 takes a third of a second; a simulation does it while the node program runs."""
    code = (
        "import sys; from simulator import FakeRegion; region = FakeRegion('us-east-1'); "
        "region.create_bucket('bundles'); print('moto.ec2' in sys.modules, end=' '); "
        "region.ec2.describe_regions(); print('moto.ec2' in sys.modules); region.close()"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False True"


@pytest.fixture
def region():
    made = FakeRegion("us-east-1")
    made.create_bucket(BUCKET)
    made.register_signing_certificate(example_credentials()[1])
    yield made
    made.close()


def make_bundle(tmp_path: Path, image: Path, region: FakeRegion, **overrides) -> Path:
    key_pem, cert_pem = example_credentials()
    options = {
        "prefix": "image",
        "user_id": region.account_id,
        "user_cert_pem": cert_pem,
        "user_private_key_pem": key_pem,
        "ec2_cert_pem": region.ec2_cert_pem,
        "part_size": 64 * 1024,
    } | overrides
    out = tmp_path / "bundle"
    out.mkdir()
    bundle_image(image, out, **options)
    return out


def upload(region: FakeRegion, folder: Path, skip: str | None = None) -> None:
    for path in sorted(folder.iterdir()):
        if path.name != skip:
            region.s3.put_object(Bucket=BUCKET, Key=f"img/{path.name}", Body=path.read_bytes())


def register(region: FakeRegion, name: str = "web-2026-11", location: str = LOCATION) -> dict:
    return region.call(
        "ec2", "RegisterImage", {"Name": name, "ImageLocation": location, "Architecture": "x86_64"}
    )


def error_of(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_a_correct_bundle_passes_every_check(tmp_path, image, region):
    upload(region, make_bundle(tmp_path, image, region))
    image_id = register(region)["ImageId"]
    described = region.ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert described["ImageLocation"] == LOCATION
    assert described["RootDeviceType"] == "instance-store"
    assert described["Architecture"] == "x86_64"


def test_malformed_name(tmp_path, image, region):
    upload(region, make_bundle(tmp_path, image, region))
    assert error_of(lambda: register(region, name="web#1"))[0] == "InvalidAMIName.Malformed"


def test_duplicate_name(tmp_path, image, region):
    upload(region, make_bundle(tmp_path, image, region))
    register(region)
    code, message = error_of(lambda: register(region))
    assert code == "InvalidAMIName.Duplicate" and "already in use" in message


def test_manifest_that_does_not_exist(region):
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "does not exist" in message


def test_bucket_that_does_not_exist(region):
    code, message = error_of(lambda: register(region, location="no-such-bucket/img/image.manifest.xml"))
    assert code == "InvalidManifest" and "no bucket 'no-such-bucket'" in message


def test_bucket_in_another_region(tmp_path, image, region):
    region.create_bucket("eu-bundles", region="eu-west-1")
    folder = make_bundle(tmp_path, image, region)
    for path in folder.iterdir():
        region.s3.put_object(Bucket="eu-bundles", Key=f"img/{path.name}", Body=path.read_bytes())
    code, message = error_of(lambda: register(region, location="eu-bundles/img/image.manifest.xml"))
    assert code == "InvalidManifest" and "is in eu-west-1" in message


def test_unparsable_manifest(region):
    region.s3.put_object(Bucket=BUCKET, Key="img/image.manifest.xml", Body=b"<manifest><version>2007")
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "unparsable" in message


def test_manifest_user_must_be_the_account(tmp_path, image, region):
    upload(region, make_bundle(tmp_path, image, region, user_id="999988887777"))
    code, message = error_of(lambda: register(region))
    assert code == "AuthFailure" and "999988887777" in message


def test_signature_must_verify_against_a_registered_certificate(tmp_path, image, region):
    key_pem, cert_pem = make_key_and_cert("not registered")
    upload(region, make_bundle(tmp_path, image, region, user_cert_pem=cert_pem, user_private_key_pem=key_pem))
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "signature does not verify" in message


def test_ec2_copy_of_the_key_must_open_with_the_regions_key(tmp_path, image, region):
    _, other_ec2_cert = make_key_and_cert("EC2 elsewhere")
    upload(region, make_bundle(tmp_path, image, region, ec2_cert_pem=other_ec2_cert))
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "does not open with the EC2 key of us-east-1" in message


def test_every_part_must_be_there(tmp_path, image, region):
    folder = make_bundle(tmp_path, image, region)
    upload(region, folder, skip="image.part.1")
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "image.part.1" in message


def test_every_part_must_have_its_digest(tmp_path, image, region):
    folder = make_bundle(tmp_path, image, region)
    part = folder / "image.part.2"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    upload(region, folder)
    code, message = error_of(lambda: register(region))
    assert code == "InvalidManifest" and "SHA-1" in message


def test_run_and_terminate_instances_make_and_end_nodes(region):
    region.node_factory = lambda: template_node(payload_mb=0)
    reservation = region.call(
        "ec2", "RunInstances", {"ImageId": "ami-0a1b2c3d", "MinCount": 1, "MaxCount": 1}
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    node = region.node(instance_id)
    assert node.exists("/etc/hostname") and node.region is region
    region.call("ec2", "TerminateInstances", {"InstanceIds": [instance_id]})
    assert not node.running and instance_id not in region.nodes


def test_regions_opened_without_public_images_hold_only_the_accounts_own_and_the_environment_is_restored():
    before = dict(os.environ)
    with without_public_images():
        first, second = FakeRegion("us-east-1"), FakeRegion("eu-west-1")
        first.close()  # closed out of order: the second region still has none
        assert second.ec2.describe_images(Owners=["amazon"])["Images"] == []
        second.close()
    assert dict(os.environ) == before
    region = FakeRegion("us-east-1")
    try:
        assert region.ec2.describe_images(Owners=["amazon"])["Images"]  # moto's public images, as before
    finally:
        region.close()


def test_ec2_has_one_certificate_key_for_the_commercial_regions_and_others_for_govcloud_and_china():
    keys = {}
    for name in ("us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1"):
        region = FakeRegion(name)
        keys[name] = spki_sha256(region.ec2_cert_pem)
        region.close()
    assert keys["us-east-1"] == keys["eu-west-1"]
    assert len({keys["us-east-1"], keys["us-gov-west-1"], keys["cn-north-1"]}) == 3
