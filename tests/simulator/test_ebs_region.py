"""FakeRegion's EBS direct APIs and EBS-backed RegisterImage refuse, with AWS's error codes, what AWS
refuses; moto alone accepts all of it."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

from simulator import FakeRegion

BLOCK = 524288


@pytest.fixture
def region():
    made = FakeRegion("us-east-1")
    yield made
    made.close()


@pytest.fixture
def ebs(region):
    return region.strict_client("ebs")


@pytest.fixture
def ec2(region):
    return region.strict_client("ec2")


def block(fill: int) -> bytes:
    return bytes([fill]) * BLOCK


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(blocks: dict[int, bytes]) -> str:
    digests = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


def put(ebs, snapshot_id: str, index: int, data: bytes, **overrides):
    params = {
        "SnapshotId": snapshot_id,
        "BlockIndex": index,
        "BlockData": data,
        "DataLength": len(data),
        "Checksum": checksum(data),
        "ChecksumAlgorithm": "SHA256",
    } | overrides
    return ebs.put_snapshot_block(**params)


def error_of(call, *args, **kwargs) -> tuple[str, str, str]:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    response = caught.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response.get("Reason", "")


def state_of(ec2, snapshot_id: str) -> str:
    return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]


def snapshots_described(ec2, description: str) -> list[dict]:
    found = ec2.describe_snapshots(Filters=[{"Name": "description", "Values": [description]}])
    return found["Snapshots"]


def completed_snapshot(ebs, blocks: dict[int, bytes], size: int = 1) -> str:
    snapshot_id = ebs.start_snapshot(VolumeSize=size)["SnapshotId"]
    for index, data in blocks.items():
        put(ebs, snapshot_id, index, data)
    ebs.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=len(blocks),
        Checksum=linear(blocks),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )
    return snapshot_id


# -- StartSnapshot ----------------------------------------------------------------------------------


def test_a_started_snapshot_has_512_kib_blocks_and_is_pending_in_ec2(region, ebs, ec2):
    started = ebs.start_snapshot(
        VolumeSize=2, Description="root of web", Tags=[{"Key": "amidsl:built-by", "Value": "amidsl"}]
    )
    assert started["BlockSize"] == BLOCK and started["Status"] == "pending" and started["VolumeSize"] == 2
    (described,) = ec2.describe_snapshots(SnapshotIds=[started["SnapshotId"]])["Snapshots"]
    assert described["State"] == "pending" and described["VolumeId"] == "vol-ffffffff"
    assert described["Description"] == "root of web"
    assert described["Tags"] == [{"Key": "amidsl:built-by", "Value": "amidsl"}]
    assert ec2.describe_volumes()["Volumes"] == []  # the EBS direct APIs make no volume


@pytest.mark.parametrize("encryption", [{}, {"Encrypted": True}])
def test_the_same_client_token_gives_the_same_snapshot(ebs, ec2, encryption):
    asked = {"VolumeSize": 1, "ClientToken": "build-42", "Timeout": 30, "Description": "retried"} | encryption
    first = ebs.start_snapshot(**asked)
    again = ebs.start_snapshot(**asked)
    assert again["SnapshotId"] == first["SnapshotId"]
    assert len(snapshots_described(ec2, "retried")) == 1


@pytest.mark.parametrize("other", [{"VolumeSize": 2}, {"VolumeSize": 1, "Encrypted": True}])
def test_the_same_client_token_with_other_parameters_is_a_conflict(ebs, other):
    ebs.start_snapshot(VolumeSize=1, ClientToken="build-42")
    code, _, _ = error_of(ebs.start_snapshot, ClientToken="build-42", **other)
    assert code == "ConflictException"


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"Timeout": 5}, "INVALID_PARAMETER_VALUE"), ({"VolumeSize": 65537}, "INVALID_VOLUME_SIZE")],
)
def test_start_refuses_a_timeout_or_size_out_of_range(ebs, params, reason):
    code, _, said = error_of(ebs.start_snapshot, **({"VolumeSize": 1} | params))
    assert (code, said) == ("ValidationException", reason)


def test_a_snapshot_left_idle_past_its_timeout_ends_in_error(region, ebs, ec2):
    snapshot_id = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    put(ebs, snapshot_id, 0, block(1))
    region.ebs_direct.let_minutes_pass(9)
    put(ebs, snapshot_id, 1, block(2))  # a write restarts the timeout
    region.ebs_direct.let_minutes_pass(10)
    code, message, _ = error_of(put, ebs, snapshot_id, 2, block(3))
    assert code == "ValidationException" and "is error, not pending" in message
    assert state_of(ec2, snapshot_id) == "error"


# -- PutSnapshotBlock -------------------------------------------------------------------------------


def test_a_block_whose_checksum_does_not_match_its_data_is_refused(ebs):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    code, message, reason = error_of(put, ebs, snapshot_id, 0, block(1), Checksum=checksum(block(2)))
    assert (code, reason) == ("ValidationException", "INVALID_BLOCK")
    assert "checksum of block 0 does not match" in message


@pytest.mark.parametrize(
    ("index", "data", "overrides"),
    [
        (2048, block(1), {}),  # 1 GiB has blocks 0 to 2047
        (0, b"\x01" * 512, {}),  # moto's own block size
        (0, block(1), {"DataLength": 512}),
        (0, block(1), {"ChecksumAlgorithm": "SHA1"}),
    ],
    ids=["index-beyond-the-volume", "short-block", "wrong-data-length", "wrong-algorithm"],
)
def test_a_block_outside_the_volume_or_not_512_kib_is_refused(ebs, index, data, overrides):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    code, _, _ = error_of(put, ebs, snapshot_id, index, data, **overrides)
    assert code == "ValidationException"


def test_a_block_for_an_unknown_snapshot_is_not_found(ebs):
    code, _, reason = error_of(put, ebs, "snap-0123456789abcdef0", 0, block(1))
    assert (code, reason) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND")


def test_no_block_can_be_written_to_a_completed_snapshot(ebs):
    snapshot_id = completed_snapshot(ebs, {0: block(1)})
    code, message, _ = error_of(put, ebs, snapshot_id, 1, block(2))
    assert code == "ValidationException" and "is completed, not pending" in message


# -- CompleteSnapshot -------------------------------------------------------------------------------


def test_a_snapshot_is_completed_in_ec2_only_after_complete_snapshot(ebs, ec2):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, snapshot_id, 3, block(1))
    assert state_of(ec2, snapshot_id) == "pending"
    answer = ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    assert answer["Status"] == "completed" and state_of(ec2, snapshot_id) == "completed"


def test_completion_with_a_wrong_block_count_is_refused_and_the_snapshot_stays_pending(ebs, ec2):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, snapshot_id, 0, block(1))
    put(ebs, snapshot_id, 0, block(2))  # written twice: still one block
    code, message, _ = error_of(ebs.complete_snapshot, SnapshotId=snapshot_id, ChangedBlocksCount=2)
    assert code == "ValidationException" and "1 block(s) were written" in message
    assert state_of(ec2, snapshot_id) == "pending"


def test_completion_checks_the_linear_aggregate_of_the_block_digests_in_index_order(ebs):
    blocks = {5: block(5), 1: block(1)}
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for index, data in blocks.items():
        put(ebs, snapshot_id, index, data)
    in_put_order = base64.b64encode(
        hashlib.sha256(hashlib.sha256(block(5)).digest() + hashlib.sha256(block(1)).digest()).digest()
    ).decode()
    aggregate = {"ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"}
    code, message, _ = error_of(
        ebs.complete_snapshot,
        SnapshotId=snapshot_id,
        ChangedBlocksCount=2,
        Checksum=in_put_order,
        **aggregate,
    )
    assert code == "ValidationException" and "aggregate checksum does not match" in message
    answer = ebs.complete_snapshot(
        SnapshotId=snapshot_id, ChangedBlocksCount=2, Checksum=linear(blocks), **aggregate
    )
    assert answer["Status"] == "completed"


# -- reading back -----------------------------------------------------------------------------------


def test_list_and_get_read_back_the_written_blocks_in_index_order(ebs):
    blocks = {7: block(7), 2: block(2), 1000: block(9)}
    snapshot_id = completed_snapshot(ebs, blocks)
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert listed["BlockSize"] == BLOCK and listed["VolumeSize"] == 1
    assert [b["BlockIndex"] for b in listed["Blocks"]] == [2, 7, 1000]
    for entry in listed["Blocks"]:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=entry["BlockIndex"], BlockToken=entry["BlockToken"]
        )
        assert got["BlockData"].read() == blocks[entry["BlockIndex"]]
        assert got["Checksum"] == checksum(blocks[entry["BlockIndex"]])


def test_list_pages_through_the_blocks(ebs):
    blocks = {index: block(index % 250 + 1) for index in range(150)}
    snapshot_id = completed_snapshot(ebs, blocks)
    first = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)
    rest = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100, NextToken=first["NextToken"])
    assert [b["BlockIndex"] for b in first["Blocks"] + rest["Blocks"]] == list(range(150))
    assert "NextToken" not in rest


def test_a_pending_snapshot_cannot_be_read(ebs):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    code, _, _ = error_of(ebs.list_snapshot_blocks, SnapshotId=snapshot_id)
    assert code == "ValidationException"


# -- RegisterImage from a snapshot ------------------------------------------------------------------


def ebs_image(snapshot_id: str, **overrides) -> dict:
    params = {
        "Name": "web-ebs",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"SnapshotId": snapshot_id, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ],
        "Architecture": "x86_64",
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "BootMode": "uefi-preferred",
        "ImdsSupport": "v2.0",
    }
    return params | overrides


def test_an_image_registered_from_a_completed_snapshot_is_ebs_backed(ebs, ec2):
    snapshot_id = completed_snapshot(ebs, {0: block(1)}, size=2)
    image_id = ec2.register_image(**ebs_image(snapshot_id))["ImageId"]
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["RootDeviceType"] == "ebs" and image["RootDeviceName"] == "/dev/xvda"
    assert image["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "SnapshotId": snapshot_id,
                "VolumeSize": 2,
                "VolumeType": "gp3",
                "DeleteOnTermination": True,
                "Encrypted": False,
            },
        }
    ]
    assert (image["Architecture"], image["BootMode"], image["ImdsSupport"]) == (
        "x86_64",
        "uefi-preferred",
        "v2.0",
    )
    assert "ImageLocation" not in image
    made_up = snapshots_described(ec2, f"Auto-created snapshot for AMI {image_id}")
    assert made_up == []  # moto's own root snapshot for the image is gone


def test_a_snapshot_an_image_uses_cannot_be_deleted(ebs, ec2):
    snapshot_id = completed_snapshot(ebs, {0: block(1)})
    image_id = ec2.register_image(**ebs_image(snapshot_id))["ImageId"]
    code, message, _ = error_of(ec2.delete_snapshot, SnapshotId=snapshot_id)
    assert code == "InvalidSnapshot.InUse" and image_id in message
    ec2.deregister_image(ImageId=image_id)
    ec2.delete_snapshot(SnapshotId=snapshot_id)


def root_ebs(**ebs_fields) -> list[dict]:
    return [{"DeviceName": "/dev/xvda", "Ebs": ebs_fields}]


REFUSED = {
    "no-root-device-name": ({"RootDeviceName": None}, "MissingParameter"),
    "root-not-mapped": ({"RootDeviceName": "/dev/sda1"}, "InvalidBlockDeviceMapping"),
    "root-without-snapshot": ({"BlockDeviceMappings": root_ebs(VolumeSize=8)}, "InvalidBlockDeviceMapping"),
    "unknown-snapshot": (
        {"BlockDeviceMappings": root_ebs(SnapshotId="snap-0123456789abcdef0")},
        "InvalidSnapshot.NotFound",
    ),
    "volume-smaller-than-snapshot": (
        {"BlockDeviceMappings": root_ebs(SNAP=1, VolumeSize=1)},
        "InvalidBlockDeviceMapping",
    ),
    "unknown-volume-type": (
        {"BlockDeviceMappings": root_ebs(SNAP=1, VolumeType="gp9")},
        "InvalidParameterValue",
    ),
    "st1-root": ({"BlockDeviceMappings": root_ebs(SNAP=1, VolumeType="st1")}, "InvalidBlockDeviceMapping"),
    "encrypted-with-snapshot": (
        {"BlockDeviceMappings": root_ebs(SNAP=1, Encrypted=True)},
        "InvalidParameterCombination",
    ),
    "boot-mode": ({"BootMode": "bios"}, "InvalidParameterValue"),
    "imds": ({"ImdsSupport": "v1.0"}, "InvalidParameterValue"),
    "architecture": ({"Architecture": "amd64"}, "InvalidParameterValue"),
    "ena-on-paravirtual": (
        {"VirtualizationType": "paravirtual", "BootMode": None},
        "InvalidParameterCombination",
    ),
    "image-location-too": ({"ImageLocation": "bucket/web.manifest.xml"}, "InvalidParameterCombination"),
    "malformed-name": ({"Name": "a"}, "InvalidAMIName.Malformed"),
}


@pytest.mark.parametrize(("overrides", "expected"), REFUSED.values(), ids=REFUSED.keys())
def test_register_image_refuses_what_ec2_refuses(ebs, ec2, overrides, expected):
    snapshot_id = completed_snapshot(ebs, {0: block(1)}, size=2)
    params = ebs_image(snapshot_id)
    for key, value in overrides.items():
        if key == "BlockDeviceMappings":
            value = [
                {
                    **m,
                    "Ebs": {
                        ("SnapshotId" if k == "SNAP" else k): (snapshot_id if k == "SNAP" else v)
                        for k, v in m["Ebs"].items()
                    },
                }
                for m in value
            ]
        params[key] = value
    params = {key: value for key, value in params.items() if value is not None}
    code, _, _ = error_of(ec2.register_image, **params)
    assert code == expected
    assert ec2.describe_images(Owners=["self"])["Images"] == []


def test_register_image_refuses_a_pending_snapshot(ebs, ec2):
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    code, message, _ = error_of(ec2.register_image, **ebs_image(snapshot_id))
    assert code == "IncorrectState" and "completed snapshot" in message


def test_register_image_refuses_a_snapshot_of_another_account(region, ebs, ec2):
    from moto.backends import get_backend

    snapshot_id = completed_snapshot(ebs, {0: block(1)})
    get_backend("ec2")["123456789012"]["us-east-1"].snapshots[snapshot_id].owner_id = "210987654321"
    code, _, _ = error_of(ec2.register_image, **ebs_image(snapshot_id))
    assert code == "InvalidSnapshot.NotFound"


def test_an_ebs_image_name_must_be_unused(ebs, ec2):
    snapshot_id = completed_snapshot(ebs, {0: block(1)})
    ec2.register_image(**ebs_image(snapshot_id))
    code, _, _ = error_of(ec2.register_image, **ebs_image(snapshot_id))
    assert code == "InvalidAMIName.Duplicate"


def test_plain_moto_accepts_what_the_region_refuses(region):
    """The reason for the strict region: moto takes a wrong checksum and a wrong count."""
    ebs = region.client("ebs")
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(ebs, snapshot_id, 0, block(1), Checksum=checksum(block(2)))
    assert ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=7)["Status"] == "completed"


# -- encryption and copies --------------------------------------------------------------------------

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def encrypted_snapshot(ebs, **encryption) -> str:
    snapshot_id = ebs.start_snapshot(VolumeSize=1, **encryption)["SnapshotId"]
    put(ebs, snapshot_id, 0, block(1))
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    return snapshot_id


def test_an_encrypted_snapshot_is_encrypted_with_the_key_given_and_so_is_its_image(ebs, ec2):
    snapshot_id = encrypted_snapshot(ebs, Encrypted=True, KmsKeyArn=KEY)
    (described,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert (described["Encrypted"], described["KmsKeyId"]) == (True, KEY)
    image_id = ec2.register_image(**ebs_image(snapshot_id))["ImageId"]
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True


def test_encrypted_without_a_key_uses_the_regions_aws_managed_key(region, ebs, ec2):
    snapshot_id = encrypted_snapshot(ebs, Encrypted=True)
    (described,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert described["Encrypted"] is True
    assert described["KmsKeyId"].startswith("arn:aws:kms:us-east-1:123456789012:key/")
    plain = encrypted_snapshot(ebs)
    assert ec2.describe_snapshots(SnapshotIds=[plain])["Snapshots"][0]["Encrypted"] is False


@pytest.mark.parametrize(
    ("encryption", "reason"),
    [
        ({"KmsKeyArn": KEY}, "INVALID_PARAMETER_VALUE"),  # a key without Encrypted true
        ({"Encrypted": True, "KmsKeyArn": KEY.replace("us-east-1", "eu-west-1")}, "INVALID_CUSTOMER_KEY"),
        ({"Encrypted": True, "KmsKeyArn": "alias/builds"}, "INVALID_CUSTOMER_KEY"),
    ],
)
def test_start_refuses_a_key_it_cannot_encrypt_with(ebs, ec2, encryption, reason):
    code, _, said = error_of(ebs.start_snapshot, VolumeSize=1, Description="refused", **encryption)
    assert (code, said) == ("ValidationException", reason)
    assert snapshots_described(ec2, "refused") == []


def test_a_copy_of_an_ebs_image_is_on_copies_of_its_snapshots_in_the_destination(region, ebs, ec2):
    snapshot_id = completed_snapshot(ebs, {0: block(1), 3: block(2)})
    image_id = ec2.register_image(**ebs_image(snapshot_id))["ImageId"]
    copy_id = region.call(
        "ec2",
        "CopyImage",
        {"SourceImageId": image_id, "SourceRegion": "us-east-1", "Name": "web-ebs"},
        region="eu-west-1",
    )["ImageId"]
    (copy,) = region.call("ec2", "DescribeImages", {"ImageIds": [copy_id]}, region="eu-west-1")["Images"]
    assert (copy["RootDeviceType"], copy["RootDeviceName"]) == ("ebs", "/dev/xvda")
    [root] = copy["BlockDeviceMappings"]
    copied = root["Ebs"]["SnapshotId"]
    assert copied != snapshot_id and root["Ebs"]["Encrypted"] is False
    eu_ec2 = region.strict_client("ec2", "eu-west-1")
    assert eu_ec2.describe_snapshots(SnapshotIds=[copied])["Snapshots"][0]["State"] == "completed"
    eu_ebs = region.strict_client("ebs", "eu-west-1")
    blocks = eu_ebs.list_snapshot_blocks(SnapshotId=copied)["Blocks"]
    assert [b["BlockIndex"] for b in blocks] == [0, 3]
    data = eu_ebs.get_snapshot_block(SnapshotId=copied, BlockIndex=3, BlockToken=blocks[1]["BlockToken"])
    assert data["BlockData"].read() == block(2)
    # The copy's snapshot is the copy's own: in use while the copy is registered.
    code, _, _ = error_of(eu_ec2.delete_snapshot, SnapshotId=copied)
    assert code == "InvalidSnapshot.InUse"


def test_a_copy_is_encrypted_with_the_destinations_aws_managed_key_when_asked(region, ebs, ec2):
    image_id = ec2.register_image(**ebs_image(encrypted_snapshot(ebs)))["ImageId"]
    copy_id = region.call(
        "ec2",
        "CopyImage",
        {"SourceImageId": image_id, "SourceRegion": "us-east-1", "Name": "web-ebs", "Encrypted": True},
        region="eu-west-1",
    )["ImageId"]
    (copy,) = region.call("ec2", "DescribeImages", {"ImageIds": [copy_id]}, region="eu-west-1")["Images"]
    copied = copy["BlockDeviceMappings"][0]["Ebs"]
    assert copied["Encrypted"] is True
    eu_ec2 = region.strict_client("ec2", "eu-west-1")
    (snapshot,) = eu_ec2.describe_snapshots(SnapshotIds=[copied["SnapshotId"]])["Snapshots"]
    assert snapshot["KmsKeyId"].startswith("arn:aws:kms:eu-west-1:123456789012:key/")


def test_a_copy_refuses_a_key_without_encrypted_and_makes_nothing(region, ebs, ec2):
    image_id = ec2.register_image(**ebs_image(encrypted_snapshot(ebs)))["ImageId"]
    params = {
        "SourceImageId": image_id,
        "SourceRegion": "us-east-1",
        "Name": "web-ebs",
        "KmsKeyId": KEY.replace("us-east-1", "eu-west-1"),
    }
    code, _, _ = error_of(region.call, "ec2", "CopyImage", params, region="eu-west-1")
    assert code == "InvalidParameterCombination"
    assert region.call("ec2", "DescribeImages", {"Owners": ["self"]}, region="eu-west-1")["Images"] == []


def test_a_copy_tags_its_snapshots_and_itself_as_tag_specifications_say(region, ebs, ec2):
    image_id = ec2.register_image(**ebs_image(completed_snapshot(ebs, {0: block(1)})))["ImageId"]
    tag = [{"Key": "team", "Value": "web"}]
    params = {"SourceImageId": image_id, "SourceRegion": "us-east-1", "Name": "web-ebs"}
    refused = params | {"TagSpecifications": [{"ResourceType": "volume", "Tags": tag}]}
    code, _, _ = error_of(region.call, "ec2", "CopyImage", refused, region="eu-west-1")
    assert code == "InvalidParameterValue"
    specs = [{"ResourceType": "snapshot", "Tags": tag}, {"ResourceType": "image", "Tags": tag}]
    copy_id = region.call("ec2", "CopyImage", params | {"TagSpecifications": specs}, region="eu-west-1")[
        "ImageId"
    ]
    (copy,) = region.call("ec2", "DescribeImages", {"ImageIds": [copy_id]}, region="eu-west-1")["Images"]
    assert copy["Tags"] == tag
    eu_ec2 = region.strict_client("ec2", "eu-west-1")
    (snapshot,) = eu_ec2.describe_snapshots(
        SnapshotIds=[copy["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]]
    )["Snapshots"]
    assert snapshot["Tags"] == tag


def test_an_image_with_encrypted_snapshots_cannot_be_made_public(region, ebs, ec2):
    image_id = ec2.register_image(**ebs_image(encrypted_snapshot(ebs, Encrypted=True)))["ImageId"]
    public = {"ImageId": image_id, "LaunchPermission": {"Add": [{"Group": "all"}]}}
    code, _, _ = error_of(region.call, "ec2", "ModifyImageAttribute", public)
    assert code == "InvalidParameter"
    shared = {"ImageId": image_id, "LaunchPermission": {"Add": [{"UserId": "111122223333"}]}}
    region.call("ec2", "ModifyImageAttribute", shared)  # an account may be given it (with the key)
    plain_id = ec2.register_image(**ebs_image(encrypted_snapshot(ebs), Name="plain"))["ImageId"]
    region.call("ec2", "ModifyImageAttribute", public | {"ImageId": plain_id})
