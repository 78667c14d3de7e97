"""A registration that fails after a real upload (sshd node, moto's S3): the bundle left in S3 is named
with the command that removes it, and --on-error cleanup-all removes it."""

from __future__ import annotations

import pytest

from amidsl.live.aws import Aws, AwsError
from amidsl.live.build import build_on_host
from amidsl.live.settings import resolve_live
from amidsl.run.runner import BuildError
from tests.live.node_settings import BUCKET, aws_client, build_settings


@pytest.fixture
def refused_registration(monkeypatch):
    passed_on = Aws.call_action

    def refuse_register(self, action, params):
        if action.operation == "RegisterImage":
            raise AwsError("InvalidManifest: the manifest was refused (injected)", "fix the bundle")
        return passed_on(self, action, params)

    monkeypatch.setattr(Aws, "call_action", refuse_register)


def bundle_keys(endpoint: str, path: str) -> list[str]:
    listed = aws_client("s3", endpoint).list_objects_v2(Bucket=BUCKET, Prefix=f"{path}/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.mark.parametrize("on_error", ["cleanup", "cleanup-all"])
def test_a_refused_registration_names_or_removes_the_bundle_left_in_s3(
    on_error, refused_registration, node, fake_tools, aws_endpoint, bucket, credentials, tmp_path
):
    config = build_settings(tmp_path, node, fake_tools, credentials, "root", aws_endpoint)
    path = config["ami"]["s3_path"]
    with pytest.raises(BuildError) as caught:
        build_on_host(
            "127.0.0.1",
            config["ami"],
            live=resolve_live(config["live"]),
            phases=["install", "configure", "ami-bundle", "ami-upload", "ami-register"],
            on_error=on_error,
        )
    message = str(caught.value)
    assert caught.value.phase == "ami-register"
    place = f"s3://{BUCKET}/{path}/"
    if on_error == "cleanup":
        assert bundle_keys(aws_endpoint, path) == [f"{path}/image.manifest.xml", f"{path}/image.part.0"]
        assert f"left in S3: {place}image.manifest.xml, {place}image.part.0" in message
        command = f"amidsl delete-bundle -b {BUCKET}/{path} -p image --partial --region us-east-1"
        assert command in message
    else:
        assert bundle_keys(aws_endpoint, path) == []
        assert f"The bundle was removed from S3 (2 object(s) under {place})" in message
