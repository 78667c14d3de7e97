"""The live tests' image checks and removal, offline: the same functions on builds the simulator ran
against its strict fake region (which answers DescribeImages, DescribeSnapshots and the EBS direct APIs as
AWS does), so what the live tests assert and clean up is tried here first."""

from __future__ import annotations

import io

import botocore.exceptions
import pytest

from amidsl.example import example_config_path
from amidsl.settings import load_toml
from live_tests.body import live_test_group
from live_tests.images import (
    assert_registered_ebs_image,
    ebs_build_settings,
    removal_build_settings,
    remove_built_image,
    uploaded_blocks,
)
from simulator import simulate, template_node


@pytest.fixture
def raw() -> dict:
    """The example's settings as the live tests' conftest reads them (snake_case keys)."""
    return {key.replace("-", "_"): value for key, value in load_toml(example_config_path()).items()}


@pytest.fixture
def build(region):
    """Simulate the live test group (the server spec and its test phase) for settings."""
    nodes = []

    def go(settings: dict, **options):
        nodes.append(template_node(payload_mb=1))
        return simulate(live_test_group(settings), node=nodes[-1], region=region, **options)

    yield go
    for node in nodes:
        node.close()


def snapshots_of(region, name: str) -> list[str]:
    found = region.strict_client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "description", "Values": [f"root disk of {name}"]}]
    )
    return [s["SnapshotId"] for s in found["Snapshots"]]


def test_the_ebs_variant_is_a_native_hvm_ebs_build_under_a_name_of_its_own(raw):
    settings = ebs_build_settings(raw | {"image_name": "nightly"})
    assert (settings["backing"], settings["bundler"], settings["virtualization_type"]) == (
        "ebs",
        "native",
        "hvm",
    )
    assert settings["image_name"] == "nightly-ebs" and settings["s3_bucket"] == raw["s3_bucket"]


def test_the_live_ebs_checks_hold_for_an_ebs_build(raw, region, build):
    simulation = build(ebs_build_settings(raw))
    assert_registered_ebs_image(region.strict_client("ec2"), region.strict_client("ebs"), simulation.result)


def test_the_blocks_the_build_uploaded_are_read_from_its_ami_upload_phase(raw, build):
    simulation = build(ebs_build_settings(raw))
    [(snapshot_id, count)] = uploaded_blocks(simulation.transcript).items()
    assert snapshot_id == simulation.final_settings.snapshot_id and count > 0


def test_the_live_ebs_checks_fail_for_an_s3_backed_image(raw, region, build):
    simulation = build(raw | {"bundler": "native"})
    with pytest.raises(AssertionError):
        assert_registered_ebs_image(
            region.strict_client("ec2"), region.strict_client("ebs"), simulation.result
        )


def test_the_live_ebs_checks_fail_when_the_snapshot_lacks_an_uploaded_block(raw, region, build, monkeypatch):
    simulation = build(ebs_build_settings(raw))
    ebs = region.strict_client("ebs")
    real = ebs.list_snapshot_blocks

    def one_block_fewer(**params):
        page = real(**params)
        return page | {"Blocks": page["Blocks"][:-1]}

    monkeypatch.setattr(ebs, "list_snapshot_blocks", one_block_fewer, raising=False)
    with pytest.raises(AssertionError):
        assert_registered_ebs_image(region.strict_client("ec2"), ebs, simulation.result)


def test_the_live_ebs_checks_fail_when_the_first_block_is_no_mbr(raw, region, build, monkeypatch):
    simulation = build(ebs_build_settings(raw))
    ebs = region.strict_client("ebs")
    real = ebs.get_snapshot_block

    def wiped_signature(**params):
        got = real(**params)
        data = bytearray(got["BlockData"].read())
        data[510:512] = b"\0\0"
        return got | {"BlockData": io.BytesIO(bytes(data))}

    monkeypatch.setattr(ebs, "get_snapshot_block", wiped_signature, raising=False)
    with pytest.raises(AssertionError):
        assert_registered_ebs_image(region.strict_client("ec2"), ebs, simulation.result)


def test_removing_an_ebs_build_deregisters_the_image_and_deletes_its_snapshot(raw, region, build):
    settings = ebs_build_settings(raw)
    simulation = build(settings)
    said: list[str] = []
    ec2 = region.strict_client("ec2")
    assert remove_built_image(ec2, None, settings["image_name"], progress=said.append) == []
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert snapshots_of(region, settings["image_name"]) == []
    assert said == [f"removed {simulation.image_id} and {simulation.final_settings.snapshot_id}"]


def test_removing_an_s3_build_deregisters_the_image_and_deletes_its_bundle(raw, region, build):
    settings = removal_build_settings(raw | {"bundler": "native", "s3_path": "live"})
    assert (settings["image_name"], settings["s3_path"]) == (
        f"{raw['image_name']}-removed",
        f"live/{raw['image_name']}-removed",
    )
    simulation = build(settings)
    ec2 = region.strict_client("ec2")
    listed = region.s3.list_objects_v2(Bucket=settings["s3_bucket"], Prefix=f"{settings['s3_path']}/")
    assert listed["KeyCount"] > 0
    assert remove_built_image(ec2, region.s3, settings["image_name"], progress=lambda line: None) == []
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    listed = region.s3.list_objects_v2(Bucket=settings["s3_bucket"], Prefix=f"{settings['s3_path']}/")
    assert listed["KeyCount"] == 0, simulation.image_id


def test_removal_says_which_snapshot_it_could_not_delete_and_how(raw, region, build):
    settings = ebs_build_settings(raw)
    simulation = build(settings)
    ec2 = region.strict_client("ec2")
    snapshot_id = simulation.final_settings.snapshot_id

    class Refusing:
        """The region's EC2, refusing DeleteSnapshot."""

        def __getattr__(self, name):
            return getattr(ec2, name)

        def delete_snapshot(self, **params):
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "DeleteSnapshot"
            )

    said: list[str] = []
    left = remove_built_image(Refusing(), None, settings["image_name"], progress=said.append)
    assert len(left) == 2 and all(snapshot_id in line for line in left)
    assert "UnauthorizedOperation" in left[0] and "aws ec2 delete-snapshot" in left[0]
    assert left[1].endswith(f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}")
    assert said[-2:] == [f"LEFT BEHIND: {line}" for line in left]


def test_removal_names_the_snapshot_of_a_build_whose_registration_failed(raw, region, build):
    settings = ebs_build_settings(raw)
    region.faults.reject_register = "InvalidParameterValue"
    simulation = build(settings, raise_on_failure=False)
    assert simulation.error is not None and simulation.error.phase == "ami-register"
    [snapshot_id] = snapshots_of(region, settings["image_name"])
    left = remove_built_image(
        region.strict_client("ec2"), None, settings["image_name"], progress=lambda line: None
    )
    assert left == [
        f"the snapshot {snapshot_id}, which no image uses: "
        f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}"
    ]
