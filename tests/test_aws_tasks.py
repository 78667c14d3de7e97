"""The AWS commands against moto's server on loopback: upload-bundle, download-bundle, delete-bundle,
images and delete, each run as the `amidsl` program runs it, with the standard credential chain."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto.backends import get_backend

from amidsl.cli.aws_commands import AwsClients
from amidsl.cli.main import run
from amidsl.run.images import BUILT_BY_TAG
from tests.bundle.conftest import bundle_into, make_identity, write_sparse_file

ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGES_REGION = "sa-east-1"  # a region no other test registers images in
PART_SIZE = 100 * 1024


@pytest.fixture
def aws_env(monkeypatch, aws_endpoint):
    """Credentials in the environment, as a user of the standard chain has them; no profile, no IMDS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return aws_endpoint


def client(service, endpoint, region=REGION):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3(aws_env):
    return client("s3", aws_env)


@pytest.fixture
def bucket(s3):
    name = f"bundles-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def identities():
    return make_identity("amidsl test user"), make_identity("amidsl test ec2")


@pytest.fixture
def local_bundle(tmp_path, identities) -> Path:
    """A bundle in several parts; returns its manifest file."""
    user, ec2 = identities
    image = tmp_path / "disk.img"
    write_sparse_file(image, 1024 * 1024, [(0, os.urandom(350_000))])
    out = tmp_path / "bundle"
    manifest = bundle_into(image, out, user, ec2, part_size=PART_SIZE)
    assert len(manifest.parts) >= 3
    return out / "web.manifest.xml"


def amidsl(capsys, *args: str) -> tuple[int, str, str]:
    status = run(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def keys_in(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def upload(capsys, endpoint, bucket, manifest, *extra):
    return amidsl(
        capsys,
        "upload-bundle",
        "-b",
        f"{bucket}/web/2026-11",
        "-m",
        str(manifest),
        "--endpoint-url",
        endpoint,
        *extra,
    )


# -- upload-bundle --------------------------------------------------------------------------------


def test_upload_puts_every_part_and_then_the_manifest_with_the_exec_read_acl(
    capsys, aws_env, s3, bucket, local_bundle
):
    status, out, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 0, err
    names = sorted(p.name for p in local_bundle.parent.iterdir())
    assert keys_in(s3, bucket) == [f"web/2026-11/{name}" for name in names]
    s3.put_object(Bucket=bucket, Key="reference", Body=b"x", ACL="aws-exec-read")
    expected = s3.get_object_acl(Bucket=bucket, Key="reference")["Grants"]
    for name in names:
        key = f"web/2026-11/{name}"
        assert (
            s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (local_bundle.parent / name).read_bytes()
        )
        assert s3.get_object_acl(Bucket=bucket, Key=key)["Grants"] == expected
    assert f"register it as {bucket}/web/2026-11/web.manifest.xml" in out


def test_a_second_upload_skips_the_parts_already_in_s3_and_replaces_a_stale_one(
    capsys, aws_env, s3, bucket, local_bundle
):
    s3.put_object(
        Bucket=bucket, Key="web/2026-11/web.part.0", Body=(local_bundle.parent / "web.part.0").read_bytes()
    )
    s3.put_object(Bucket=bucket, Key="web/2026-11/web.part.1", Body=b"stale")
    status, out, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 0, err
    assert "skipped: web.part.0\n" in err
    assert "1 already there" in out
    part1 = s3.get_object(Bucket=bucket, Key="web/2026-11/web.part.1")["Body"].read()
    assert part1 == (local_bundle.parent / "web.part.1").read_bytes()


def test_upload_refuses_a_local_part_whose_digest_is_wrong_and_uploads_nothing(
    capsys, aws_env, s3, bucket, local_bundle
):
    part = local_bundle.parent / "web.part.1"
    part.write_bytes(bytes(len(part.read_bytes())))
    status, _, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 1
    assert "part web.part.1" in err and "Traceback" not in err
    assert keys_in(s3, bucket) == []


def test_presigned_urls_carry_the_session_token_so_temporary_credentials_work(
    capsys, monkeypatch, aws_env, s3, bucket, local_bundle
):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-temporary-credentials")
    presigner = AwsClients(region=REGION, endpoint_url=aws_env).s3_for_bucket(bucket, presign=True)
    url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "k", "ACL": "aws-exec-read"}
    )
    assert "X-Amz-Security-Token=token-of-temporary-credentials" in url
    status, _, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 0, err
    assert "token-of-temporary-credentials" not in err


@pytest.mark.parametrize("manifest", ["missing.manifest.xml", "."])
def test_upload_of_a_manifest_that_is_not_a_readable_file_is_a_usage_error_before_any_aws_call(
    capsys, monkeypatch, tmp_path, manifest
):
    def no_aws(*args, **kwargs):
        raise AssertionError("AWS was called")

    monkeypatch.setattr(boto3.session, "Session", no_aws)
    monkeypatch.chdir(tmp_path)
    status, out, err = amidsl(capsys, "upload-bundle", "-b", "my-bundles/web", "-m", manifest)
    assert status == 2 and out == ""
    assert f"--manifest {manifest}: " in err and "give the bundle's manifest file" in err


def test_upload_to_a_bucket_that_does_not_exist_says_so(capsys, aws_env, local_bundle):
    status, _, err = upload(capsys, aws_env, "no-such-bucket-here", local_bundle)
    assert status == 2
    assert "the bucket 'no-such-bucket-here' does not exist" in err


def test_without_credentials_the_command_says_where_to_put_them(
    capsys, monkeypatch, aws_env, bucket, local_bundle
):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    status, _, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 2
    assert "no AWS credentials found" in err and "AWS_PROFILE" in err


# -- download-bundle and delete-bundle -------------------------------------------------------------


def test_upload_download_and_delete_round_trip(capsys, aws_env, s3, bucket, local_bundle, tmp_path):
    assert upload(capsys, aws_env, bucket, local_bundle)[0] == 0
    s3.put_object(Bucket=bucket, Key="web/2026-11/notes.txt", Body=b"not the bundle's")
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web.manifest.xml", "--endpoint-url", aws_env)
    status, _, err = amidsl(capsys, "download-bundle", *where, "--destination", str(tmp_path / "down"))
    assert status == 0, err
    for file in local_bundle.parent.iterdir():
        assert (tmp_path / "down" / file.name).read_bytes() == file.read_bytes()
    status, _out, err = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0, err
    assert keys_in(s3, bucket) == ["web/2026-11/notes.txt"]


def test_delete_bundle_dry_run_lists_each_object_and_deletes_nothing(
    capsys, aws_env, s3, bucket, local_bundle
):
    upload(capsys, aws_env, bucket, local_bundle)
    before = keys_in(s3, bucket)
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web.manifest.xml", "--endpoint-url", aws_env)
    status, out, _ = amidsl(capsys, "delete-bundle", *where, "--dry-run")
    assert status == 0
    assert sorted(line.split()[-1] for line in out.splitlines()) == [f"s3://{bucket}/{k}" for k in before]
    assert keys_in(s3, bucket) == before


def test_delete_bundle_off_a_terminal_without_yes_deletes_nothing(
    capsys, monkeypatch, aws_env, s3, bucket, local_bundle
):
    upload(capsys, aws_env, bucket, local_bundle)
    before = keys_in(s3, bucket)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web.manifest.xml", "--endpoint-url", aws_env)
    status, _, err = amidsl(capsys, "delete-bundle", *where)
    assert status == 2 and "give --yes" in err
    assert keys_in(s3, bucket) == before


def test_delete_bundle_partial_deletes_the_parts_a_failed_upload_left_and_nothing_else(
    capsys, aws_env, s3, bucket
):
    for key in ("web/web.part.0", "web/web.part.2", "web/web.part.notes", "web/webby.part.0", "web/x.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    where = ("-b", f"{bucket}/web", "-p", "web", "--partial", "--endpoint-url", aws_env)
    status, out, err = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0, err
    assert "2 part(s) (its manifest was not there)" in out
    assert keys_in(s3, bucket) == ["web/web.part.notes", "web/webby.part.0", "web/x.txt"]
    status, out, _ = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0 and "nothing to delete" in out
    odd = ("-b", f"{bucket}/web", "-m", "web.xml", "--partial", "--yes", "--endpoint-url", aws_env)
    status, _, err = amidsl(capsys, "delete-bundle", *odd)
    assert status == 2 and "give --prefix PREFIX" in err  # a usage error, found before S3 is asked
    assert keys_in(s3, bucket) == ["web/web.part.notes", "web/webby.part.0", "web/x.txt"]


def test_delete_bundle_refuses_a_manifest_it_cannot_parse(capsys, aws_env, s3, bucket):
    s3.put_object(Bucket=bucket, Key="web/web.manifest.xml", Body=b"this is not xml")
    s3.put_object(Bucket=bucket, Key="web/web.part.0", Body=b"part")
    status, _, err = amidsl(
        capsys,
        "delete-bundle",
        "-b",
        f"{bucket}/web",
        "-m",
        "web.manifest.xml",
        "--yes",
        "--endpoint-url",
        aws_env,
    )
    assert status == 1
    assert f"manifest s3://{bucket}/web/web.manifest.xml" in err and "Traceback" not in err
    assert keys_in(s3, bucket) == ["web/web.manifest.xml", "web/web.part.0"]


# -- images and delete ------------------------------------------------------------------------------


def register(endpoint, name, location, built_by_amidsl=True):
    """Register an image in moto as EC2 would hold an S3-backed one (moto drops ImageLocation)."""
    ec2 = client("ec2", endpoint, IMAGES_REGION)
    image_id = ec2.register_image(Name=name, ImageLocation=location, Architecture="x86_64")["ImageId"]
    ami = get_backend("ec2")[ACCOUNT][IMAGES_REGION].amis[image_id]
    ami.image_location, ami.root_device_type = location, "instance-store"
    if built_by_amidsl:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": BUILT_BY_TAG, "Value": "amidsl"}])
    return image_id


@pytest.fixture
def uploaded(capsys, aws_env, s3, bucket, local_bundle):
    """The local bundle uploaded; returns its ImageLocation."""
    assert upload(capsys, aws_env, bucket, local_bundle)[0] == 0
    return f"{bucket}/web/2026-11/web.manifest.xml"


def test_images_lists_only_the_images_amidsl_built_with_their_bundles(capsys, aws_env, uploaded):
    ours = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    theirs = register(aws_env, f"other-{uuid.uuid4().hex[:8]}", uploaded, built_by_amidsl=False)
    status, out, err = amidsl(
        capsys, "images", "--region", IMAGES_REGION, "--endpoint-url", aws_env, "--json"
    )
    assert status == 0, err
    document = json.loads(out)
    assert document["schema"] == "amidsl.images/1"
    listed = {i["image_id"]: i for i in document["images"]}
    assert ours in listed and theirs not in listed
    assert listed[ours]["image_location"] == uploaded
    status, out, _ = amidsl(capsys, "images", "--region", IMAGES_REGION, "--endpoint-url", aws_env)
    assert any(line.startswith(ours) and line.endswith(uploaded) for line in out.splitlines())
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=ours)
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=theirs)


def test_images_prints_a_header_line_over_its_table(capsys, aws_env, uploaded):
    ours = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    status, out, err = amidsl(capsys, "images", "--region", IMAGES_REGION, "--endpoint-url", aws_env)
    assert status == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["IMAGE", "STATE", "CREATED", "BACKING", "NAME", "BUNDLE/SNAPSHOT"]
    (row,) = [row for row in rows if row.startswith(ours)]
    assert row.index(" available ") + 1 == header.index("STATE")  # the columns line up
    assert row.index(" instance-store ") + 1 == header.index("BACKING")
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=ours)


def test_delete_dry_run_shows_the_image_and_each_bundle_object_and_changes_nothing(
    capsys, aws_env, s3, bucket, uploaded
):
    image_id = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    before = keys_in(s3, bucket)
    options = ("--region", IMAGES_REGION, "--endpoint-url", aws_env)
    status, out, err = amidsl(capsys, "delete", image_id, "--dry-run", *options)
    assert status == 0, err
    assert f"would deregister {image_id}" in out
    assert sorted(line.split()[-1] for line in out.splitlines()[1:]) == [f"s3://{bucket}/{k}" for k in before]
    assert client("ec2", aws_env, IMAGES_REGION).describe_images(ImageIds=[image_id])["Images"]
    assert keys_in(s3, bucket) == before
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=image_id)


def test_delete_yes_deregisters_the_image_and_deletes_its_bundle(capsys, aws_env, s3, bucket, uploaded):
    name = f"web-{uuid.uuid4().hex[:8]}"
    image_id = register(aws_env, name, uploaded)
    s3.put_object(Bucket=bucket, Key="web/2026-11/notes.txt", Body=b"kept")
    status, out, err = amidsl(
        capsys, "delete", name, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 0, err
    assert f"deregistered {image_id}" in out
    images = client("ec2", aws_env, IMAGES_REGION).describe_images(Owners=["self"])["Images"]
    assert image_id not in [i["ImageId"] for i in images]
    assert keys_in(s3, bucket) == ["web/2026-11/notes.txt"]


def test_delete_keeps_a_bundle_another_image_still_uses(capsys, aws_env, s3, bucket, uploaded):
    first = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    second = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    before = keys_in(s3, bucket)
    status, out, err = amidsl(
        capsys, "delete", first, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 0, err
    assert f"the bundle is kept: {second} still use(s) it" in out
    assert keys_in(s3, bucket) == before
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=second)


def test_delete_off_a_terminal_without_yes_changes_nothing(
    capsys, monkeypatch, aws_env, s3, bucket, uploaded
):
    image_id = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    status, _, err = amidsl(capsys, "delete", image_id, "--region", IMAGES_REGION, "--endpoint-url", aws_env)
    assert status == 2 and "give --yes" in err
    assert client("ec2", aws_env, IMAGES_REGION).describe_images(ImageIds=[image_id])["Images"]
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=image_id)


def test_delete_of_an_unknown_image_names_it_and_the_region(capsys, aws_env):
    status, _, err = amidsl(
        capsys,
        "delete",
        "ami-0123456789abcdef0",
        "--yes",
        "--region",
        IMAGES_REGION,
        "--endpoint-url",
        aws_env,
    )
    assert status == 1
    assert "no image 'ami-0123456789abcdef0'" in err and "Traceback" not in err


def test_upload_refuses_a_bucket_with_acls_disabled_before_sending_anything(
    capsys, aws_env, s3, bucket, local_bundle
):
    s3.put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    status, _, err = upload(capsys, aws_env, bucket, local_bundle)
    assert status == 1
    assert "ACLs disabled" in err and f"put-bucket-ownership-controls --bucket {bucket}" in err
    assert keys_in(s3, bucket) == []


def test_bash_completion_offers_the_new_commands_and_their_options():
    import subprocess

    script = subprocess.run(
        ["amidsl", "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout

    def complete(*words: str) -> list[str]:
        line = " ".join(f'"{w}"' for w in ("amidsl", *words))
        shell = f'{script}COMP_WORDS=({line}); COMP_CWORD={len(words)}; _amidsl; echo "${{COMPREPLY[@]}}"'
        return subprocess.run(["bash", "-c", shell], capture_output=True, text=True).stdout.split()

    assert complete("delete-b") == ["delete-bundle"]
    assert complete("delete-bundle", "--d") == ["--dry-run"]
    assert "--ec2-certificates" in complete("migrate-manifest", "--ec")


@pytest.mark.parametrize(("answer", "status", "gone"), [("y", 0, True), ("n", 1, False), ("", 1, False)])
def test_on_a_terminal_delete_asks_and_only_yes_goes_ahead(
    capsys, monkeypatch, aws_env, s3, bucket, uploaded, answer, status, gone
):
    image_id = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    count = len(keys_in(s3, bucket))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    questions = []
    monkeypatch.setattr("builtins.input", lambda question: questions.append(question) or answer)
    result = amidsl(capsys, "delete", image_id, "--region", IMAGES_REGION, "--endpoint-url", aws_env)
    assert result[0] == status
    assert questions == [f"Deregister {image_id} and delete {count} object(s)? [y/N] "]
    assert (keys_in(s3, bucket) == []) is gone
    images = client("ec2", aws_env, IMAGES_REGION).describe_images(Owners=["self"])["Images"]
    assert (image_id not in [i["ImageId"] for i in images]) is gone
    if not gone:
        client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=image_id)


def test_delete_refuses_an_image_that_has_no_bundle(capsys, aws_env):
    ec2 = client("ec2", aws_env, IMAGES_REGION)
    image_id = ec2.register_image(Name=f"ebs-{uuid.uuid4().hex[:8]}", Architecture="x86_64")["ImageId"]
    status, _, err = amidsl(
        capsys, "delete", image_id, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 1
    assert "has no ImageLocation: it is not an S3-backed image" in err
    assert ec2.describe_images(ImageIds=[image_id])["Images"]
    ec2.deregister_image(ImageId=image_id)


def test_without_a_region_the_ec2_commands_say_how_to_give_one(capsys, monkeypatch, aws_env):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    status, _, err = amidsl(capsys, "images", "--endpoint-url", aws_env)
    assert status == 2
    assert "no AWS region: give --region" in err


def test_delete_refuses_an_image_whose_manifest_does_not_parse_and_deregisters_nothing(
    capsys, aws_env, s3, bucket, uploaded
):
    image_id = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    s3.put_object(Bucket=bucket, Key="web/2026-11/web.manifest.xml", Body=b"<manifest>")
    status, _, err = amidsl(
        capsys, "delete", image_id, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 1
    assert f"manifest s3://{bucket}/web/2026-11/web.manifest.xml is truncated" in err
    assert client("ec2", aws_env, IMAGES_REGION).describe_images(ImageIds=[image_id])["Images"]
    assert len(keys_in(s3, bucket)) > 1
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=image_id)


def test_a_bundle_in_s3_is_named_by_its_manifest_or_its_prefix(capsys, aws_env, s3, bucket, local_bundle):
    upload(capsys, aws_env, bucket, local_bundle)
    where = ("-b", f"{bucket}/web/2026-11", "--endpoint-url", aws_env)
    status, _, err = amidsl(capsys, "delete-bundle", *where, "--dry-run")
    assert status == 2 and "--manifest NAME (e.g. image.manifest.xml) or --prefix PREFIX" in err
    by_manifest = amidsl(capsys, "delete-bundle", *where, "-m", "web.manifest.xml", "--dry-run")
    by_prefix = amidsl(capsys, "delete-bundle", *where, "-p", "web", "--dry-run")
    assert by_prefix == by_manifest and by_prefix[0] == 0


# -- parts another manifest names ------------------------------------------------------------------


def copy_beside(s3, bucket, name):
    """A copy of the uploaded manifest beside it under another file name (as a migrated manifest is
    uploaded), naming the same parts; returns its key."""
    key = f"web/2026-11/{name}"
    s3.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "web/2026-11/web.manifest.xml"}
    )
    return key


def part_keys(s3, bucket):
    return [key for key in keys_in(s3, bucket) if ".part." in key]


def test_delete_keeps_the_parts_another_images_manifest_names_and_says_which(
    capsys, aws_env, s3, bucket, uploaded
):
    first = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    copy = copy_beside(s3, bucket, "web-copy.manifest.xml")
    second = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", f"{bucket}/{copy}")
    parts = part_keys(s3, bucket)
    status, out, err = amidsl(
        capsys, "delete", second, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 0, err
    assert keys_in(s3, bucket) == sorted([*parts, "web/2026-11/web.manifest.xml"])
    for part in parts:
        assert (
            f"will keep s3://{bucket}/{part}: also named by s3://{bucket}/web/2026-11/web.manifest.xml "
            f"(image {first})"
        ) in out.splitlines()
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=first)


def test_delete_dry_run_shows_the_parts_it_would_keep_and_the_manifest_it_would_delete(
    capsys, aws_env, s3, bucket, uploaded
):
    first = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    copy = copy_beside(s3, bucket, "web-copy.manifest.xml")
    second = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", f"{bucket}/{copy}")
    before = keys_in(s3, bucket)
    options = ("--region", IMAGES_REGION, "--endpoint-url", aws_env)
    status, out, err = amidsl(capsys, "delete", second, "--dry-run", *options)
    assert status == 0, err
    lines = out.splitlines()
    assert [line for line in lines if "would delete" in line] == [f"would delete s3://{bucket}/{copy}"]
    kept = [line.split()[2].rstrip(":") for line in lines if line.startswith("would keep")]
    assert kept == [f"s3://{bucket}/{part}" for part in part_keys(s3, bucket)]
    assert all(f"(image {first})" in line for line in lines if line.startswith("would keep"))
    assert keys_in(s3, bucket) == before
    for image_id in (first, second):
        client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=image_id)


def test_delete_bundle_keeps_the_parts_another_manifest_beside_it_names(
    capsys, aws_env, s3, bucket, uploaded
):
    copy_beside(s3, bucket, "web-copy.manifest.xml")
    parts = part_keys(s3, bucket)
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web-copy.manifest.xml", "--endpoint-url", aws_env)
    status, out, err = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0, err
    assert keys_in(s3, bucket) == sorted([*parts, "web/2026-11/web.manifest.xml"])
    for part in parts:
        assert f"keep s3://{bucket}/{part}: also named by s3://{bucket}/web/2026-11/web.manifest.xml" in out
    assert f"0 part(s) and its manifest; kept {len(parts)} part(s) other manifests name" in out


def test_delete_bundle_partial_keeps_the_parts_another_manifest_beside_it_names(
    capsys, aws_env, s3, bucket, uploaded
):
    copy = copy_beside(s3, bucket, "web-copy.manifest.xml")
    parts = part_keys(s3, bucket)
    where = ("-b", f"{bucket}/web/2026-11", "-p", "web", "--partial", "--endpoint-url", aws_env)
    status, out, _ = amidsl(capsys, "delete-bundle", *where, "--dry-run")
    assert status == 0
    assert [line for line in out.splitlines() if "would delete" in line] == [
        f"would delete s3://{bucket}/web/2026-11/web.manifest.xml"
    ]
    assert all(
        f"would keep s3://{bucket}/{part}: also named by s3://{bucket}/{copy}" in out for part in parts
    )
    status, _, err = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0, err
    assert keys_in(s3, bucket) == sorted([*parts, copy])


@pytest.fixture
def uploaded_beside_images(capsys, aws_env, local_bundle):
    """The local bundle uploaded to a bucket in the images' region (EC2 registers bundles from its own
    region's buckets only); returns (bucket, ImageLocation)."""
    name = f"bundles-{uuid.uuid4().hex[:12]}"
    where = {"LocationConstraint": IMAGES_REGION}
    client("s3", aws_env, IMAGES_REGION).create_bucket(Bucket=name, CreateBucketConfiguration=where)
    assert upload(capsys, aws_env, name, local_bundle)[0] == 0
    return name, f"{name}/web/2026-11/web.manifest.xml"


def test_delete_bundle_names_the_images_registered_from_the_manifest_that_keeps_a_part(
    capsys, aws_env, uploaded_beside_images
):
    bucket, location = uploaded_beside_images
    s3 = client("s3", aws_env, IMAGES_REGION)
    holder = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", location)
    copy_beside(s3, bucket, "web-copy.manifest.xml")
    parts = part_keys(s3, bucket)
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web-copy.manifest.xml", "--endpoint-url", aws_env)
    try:
        for verb, option in (("would", "--dry-run"), ("will", "--yes")):
            status, out, err = amidsl(capsys, "delete-bundle", *where, option)
            assert status == 0, err
            for part in parts:
                assert (
                    f"{verb} keep s3://{bucket}/{part}: also named by s3://{location} (image {holder})"
                ) in out.splitlines()
    finally:
        client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=holder)
    assert keys_in(s3, bucket) == sorted([*parts, "web/2026-11/web.manifest.xml"])


def test_delete_bundle_that_may_not_look_at_images_still_keeps_the_parts_and_says_so(
    capsys, monkeypatch, aws_env, uploaded_beside_images
):
    bucket, location = uploaded_beside_images
    s3 = client("s3", aws_env, IMAGES_REGION)
    copy_beside(s3, bucket, "web-copy.manifest.xml")
    parts = part_keys(s3, bucket)
    ec2 = client("ec2", aws_env, IMAGES_REGION)
    refusing = Stubber(ec2)
    refusing.add_client_error("describe_images", "UnauthorizedOperation", "You are not authorized")
    refusing.activate()
    real_client = AwsClients.client
    monkeypatch.setattr(
        AwsClients,
        "client",
        lambda self, service, *args, **kw: (
            ec2 if service == "ec2" else real_client(self, service, *args, **kw)
        ),
    )
    where = ("-b", f"{bucket}/web/2026-11", "-m", "web-copy.manifest.xml", "--endpoint-url", aws_env)
    status, out, err = amidsl(capsys, "delete-bundle", *where, "--yes")
    assert status == 0, err
    for part in parts:
        assert f"will keep s3://{bucket}/{part}: also named by s3://{location}" in out.splitlines()
    (note,) = [line for line in out.splitlines() if "could not name the images" in line]
    assert "registered from those manifests" in note and "UnauthorizedOperation" in note
    assert keys_in(s3, bucket) == sorted([*parts, "web/2026-11/web.manifest.xml"])


def test_delete_keeps_the_parts_a_registered_manifest_names_whatever_its_file_name(
    capsys, aws_env, s3, bucket, uploaded
):
    copy = copy_beside(s3, bucket, "web-copy.xml")  # not *.manifest.xml, but registered
    holder = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", f"{bucket}/{copy}")
    doomed = register(aws_env, f"web-{uuid.uuid4().hex[:8]}", uploaded)
    parts = part_keys(s3, bucket)
    status, out, err = amidsl(
        capsys, "delete", doomed, "--yes", "--region", IMAGES_REGION, "--endpoint-url", aws_env
    )
    assert status == 0, err
    assert keys_in(s3, bucket) == sorted([*parts, copy])
    assert f"also named by s3://{bucket}/{copy} (image {holder})" in out
    client("ec2", aws_env, IMAGES_REGION).deregister_image(ImageId=holder)


# -- arguments are checked before any AWS call; unreachable endpoints are one clear line --------------


@pytest.fixture
def no_aws(monkeypatch):
    """Credentials in the environment, but any boto3 session fails the test: nothing may reach AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def session(*args, **kwargs):
        raise AssertionError("AWS was called")

    monkeypatch.setattr(boto3.session, "Session", session)


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that refuses connections: its port is held bound, not listening, so no
    other process (a test beside this one under pytest -n) can start listening there meanwhile."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("-b", "My_Bucket"), "--bucket: 'My_Bucket' is not a valid S3 bucket name"),
        (("-b", "my-bucket", "--concurrency", "0"), "--concurrency 0: "),
        (("-b", "my-bucket", "--concurrency", "17"), "--concurrency 17: "),
        (("-b", "my-bucket", "--retries", "-1"), "--retries -1: "),
        (("-b", "my-bucket", "--endpoint-url", "ftp://x"), "--endpoint-url: 'ftp://x' is not an http"),
    ],
)
def test_upload_bundle_refuses_bad_arguments_before_any_aws_call(
    capsys, no_aws, local_bundle, args, expected
):
    status, out, err = amidsl(capsys, "upload-bundle", "-m", str(local_bundle), *args)
    assert (status, out) == (2, "")
    assert expected in err and "Traceback" not in err


def test_upload_bundle_refuses_a_manifest_file_that_is_no_manifest_before_any_aws_call(
    capsys, no_aws, tmp_path, identities
):
    certificate = tmp_path / "signing-cert.pem"
    certificate.write_bytes(identities[0].cert_pem)
    status, out, err = amidsl(capsys, "upload-bundle", "-b", "my-bucket", "-m", str(certificate))
    assert (status, out) == (2, "")
    assert f"--manifest {certificate}: " in err and "is not a bundle manifest" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("delete-bundle", "-b", "my-bucket", "-m", "foo.txt"), "--manifest foo.txt: "),
        (("delete-bundle", "-b", "my-bucket", "-m", "web.xml", "--partial"), "give --prefix PREFIX"),
        (("delete-bundle", "-b", "My_Bucket", "-p", "web"), "not a valid S3 bucket name"),
        (
            ("delete-bundle", "-b", "my-bucket", "-m", "web.manifest.xml", "-p", "web"),
            "give one of --manifest or --prefix, not both",
        ),
        (("download-bundle", "-b", "my-bucket", "-p", "web", "--concurrency", "0"), "--concurrency 0: "),
        (("download-bundle", "-b", "my-bucket", "-m", "foo.txt"), "--manifest foo.txt: "),
    ],
)
def test_the_bundle_commands_in_s3_refuse_bad_arguments_before_any_aws_call(capsys, no_aws, args, expected):
    status, out, err = amidsl(capsys, *args)
    assert (status, out) == (2, "")
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["upload-bundle", "download-bundle", "delete-bundle"])
def test_an_endpoint_nothing_listens_on_is_named_with_the_fix(
    capsys, monkeypatch, tmp_path, local_bundle, command, refusing_endpoint
):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries with back-off: the port refuses at once
    endpoint = refusing_endpoint
    which = ("-m", str(local_bundle)) if command == "upload-bundle" else ("-p", "web", "--yes")
    if command == "download-bundle":
        which = ("-p", "web", "--destination", str(tmp_path / "down"))
    args = (command, "-b", "my-bucket", *which, "--region", "eu-west-1", "--endpoint-url", endpoint)
    status, out, err = amidsl(capsys, *args)
    assert status == 1 and out == ""
    assert f"cannot connect to --endpoint-url {endpoint}" in err
    assert "internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
