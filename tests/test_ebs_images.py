"""`amidsl images` and `amidsl delete` with EBS-backed images, registered in the strict FakeRegion and
seen by the commands through the standard credential chain, as a user runs them."""

from __future__ import annotations

import json

import pytest

from amidsl.cli.main import run
from amidsl.run.ebs_upload import BLOCK_SIZE, upload_snapshot
from amidsl.tags import BUILT_BY_TAG, BUILT_BY_VALUE
from simulator import FakeRegion

REGION = "us-east-1"


@pytest.fixture
def region(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    made = FakeRegion(REGION)
    yield made
    made.close()


def amidsl(capsys, *args: str) -> tuple[int, str, str]:
    status = run((*args, "--region", REGION))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def snapshot_of(region, fill: int) -> str:
    return upload_snapshot(
        region.strict_client("ebs"),
        [(0, bytes([fill]) * BLOCK_SIZE)],
        ec2=region.strict_client("ec2"),
        volume_size_gib=1,
        pause=lambda seconds: None,
    ).snapshot_id


def register(region, name: str, root: str, data: str | None = None) -> str:
    mappings = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root, "VolumeType": "gp3"}}]
    if data:
        mappings.append({"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": data}})
    tags = [{"ResourceType": "image", "Tags": [{"Key": BUILT_BY_TAG, "Value": BUILT_BY_VALUE}]}]
    return region.strict_client("ec2").register_image(
        Name=name,
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=mappings,
        Architecture="x86_64",
        VirtualizationType="hvm",
        EnaSupport=True,
        BootMode="uefi-preferred",
        TagSpecifications=tags,
    )["ImageId"]


def snapshot_ids(region) -> set[str]:
    return {s["SnapshotId"] for s in region.ec2.describe_snapshots()["Snapshots"]}


def image_ids(region) -> list[str]:
    return [image["ImageId"] for image in region.ec2.describe_images(Owners=["self"])["Images"]]


def test_images_shows_an_ebs_image_with_its_backing_and_root_snapshot(capsys, region):
    root, data = snapshot_of(region, 1), snapshot_of(region, 2)
    image_id = register(region, "web-ebs", root, data)
    status, out, err = amidsl(capsys, "images")
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["IMAGE", "STATE", "CREATED", "BACKING", "NAME", "BUNDLE/SNAPSHOT"]
    (row,) = rows
    assert row.startswith(image_id) and row.split()[3] == "ebs"
    assert row.endswith(f"web-ebs  {root} (+1 more)")
    status, out, err = amidsl(capsys, "images", "--json")
    (listed,) = json.loads(out)["images"]
    assert listed["backing"] == "ebs" and listed["root_snapshot_id"] == root
    assert listed["snapshot_ids"] == [root, data] and listed["image_location"] == ""


def test_delete_dry_run_shows_the_image_and_its_snapshots_and_changes_nothing(capsys, region):
    root, data = snapshot_of(region, 1), snapshot_of(region, 2)
    image_id = register(region, "web-ebs", root, data)
    status, out, err = amidsl(capsys, "delete", image_id, "--dry-run")
    assert status == 0, err
    assert out.splitlines() == [
        f"would deregister {image_id} (web-ebs)",
        f"would delete snapshot {root}",
        f"would delete snapshot {data}",
    ]
    assert image_ids(region) == [image_id]
    assert {root, data} <= snapshot_ids(region)


def test_delete_deregisters_an_ebs_image_and_deletes_its_snapshots(capsys, region):
    root, data = snapshot_of(region, 1), snapshot_of(region, 2)
    image_id = register(region, "web-ebs", root, data)
    status, out, err = amidsl(capsys, "delete", "web-ebs", "--yes")
    assert status == 0, err
    assert f"deregistered {image_id}; deleted 2 snapshot(s)" in out
    assert image_ids(region) == []
    assert not {root, data} & snapshot_ids(region)


def test_delete_keeps_a_snapshot_another_image_uses_and_names_that_image(capsys, region):
    shared, own = snapshot_of(region, 1), snapshot_of(region, 2)
    first = register(region, "web-ebs", shared, own)
    second = register(region, "web-ebs-copy", shared)
    status, out, err = amidsl(capsys, "delete", first, "--yes")
    assert status == 0, err
    assert f"will keep snapshot {shared}: image {second} also use(s) it" in out
    assert "deleted 1 snapshot(s); kept 1 snapshot(s) other images use" in out
    assert image_ids(region) == [second]
    remaining = snapshot_ids(region)
    assert shared in remaining and own not in remaining


def test_on_a_terminal_delete_asks_about_the_snapshots_and_no_changes_nothing(capsys, monkeypatch, region):
    image_id = register(region, "web-ebs", snapshot_of(region, 1))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    questions = []
    monkeypatch.setattr("builtins.input", lambda question: questions.append(question) or "n")
    status, _, _ = amidsl(capsys, "delete", image_id)
    assert status == 1
    assert questions == [f"Deregister {image_id} and delete 1 snapshot(s)? [y/N] "]
    assert image_ids(region) == [image_id]


def test_images_pads_the_name_column_so_the_last_column_lines_up(capsys, region):
    root = snapshot_of(region, 1)
    register(region, "web", root)
    register(region, "web-server-with-a-long-name", root)
    status, out, err = amidsl(capsys, "images")
    assert status == 0, err
    header, *rows = out.splitlines()
    column = header.index("BUNDLE/SNAPSHOT")
    assert [row[column:] for row in rows] == [root, root]


def test_delete_of_a_name_the_account_has_not_says_which_region_it_looked_in(capsys, region):
    status, _, err = amidsl(capsys, "delete", "no-such-image", "--yes")
    assert status == 1
    assert f"this account owns no image 'no-such-image' in {REGION};" in err


@pytest.mark.parametrize("command", [("images",), ("delete", "web-ebs", "--yes")])
def test_without_credentials_images_and_delete_are_set_up_errors_saying_where_to_put_them(
    capsys, monkeypatch, region, command
):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    status, out, err = amidsl(capsys, *command)
    assert status == 2 and out == ""
    assert "EC2: no AWS credentials found" in err and "AWS_PROFILE" in err
