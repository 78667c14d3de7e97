"""The controller side of native builds: requests on stdin, presigning, refresh on expiry, failures."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from amidsl.model.actions import NodeProgram, PlanWarning, PresignParts
from amidsl.settings import resolve
from amidsl.strategies import native
from amidsl.strategies.native_controller import (
    ControllerStepFailed,
    report_lines,
    run_controller_step,
    secret_values,
)

BUCKET = "acme-ami-bundles"


class FakeBackend:
    """Answers node-program runs from a script of (status, report) and keeps every request it sent."""

    def __init__(self, s3, answers):
        self.s3 = s3
        self.answers = list(answers)
        self.requests = []

    def run_node_program(self, action, request):
        self.requests.append(json.loads(request))
        status, report = self.answers.pop(0)
        return status, json.dumps(report) + "\n", "progress line\n"

    def s3_client(self):
        return self.s3

    def presign_client(self):
        return self.s3

    def ec2_certificate(self):
        raise AssertionError("not needed here")


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def part(name, data):
    return {
        "filename": name,
        "size": len(data),
        "sha1": hashlib.sha1(data).hexdigest(),
        "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
    }


def upload_action(s):
    return next(a for a in native.ami_upload(s) if isinstance(a, NodeProgram))


def presign_action(s):
    return next(a for a in native.ami_upload(s) if isinstance(a, PresignParts))


@pytest.fixture
def settings(raw_settings):
    return resolve(raw_settings | {"bundler": "native", "region": "us-east-1"})


def test_parts_already_in_s3_with_the_right_md5_are_not_presigned_again(s3, settings):
    s3.put_object(Bucket=BUCKET, Key="web/2026-11/image.part.0", Body=b"first")
    s3.put_object(Bucket=BUCKET, Key="web/2026-11/image.part.1", Body=b"stale")
    results = {
        "bundle": {"prefix": "image", "parts": [part("image.part.0", b"first"), part("image.part.1", b"new")]}
    }
    output = run_controller_step(presign_action(settings), settings, FakeBackend(s3, []), results)
    assert [p["filename"] for p in results["presigned"]["parts"]] == ["image.part.1"]
    assert "skipped: image.part.0" in output


def test_each_presigned_url_signs_the_exec_read_acl(s3, settings):
    results = {"bundle": {"prefix": "image", "parts": [part("image.part.0", b"data")]}}
    run_controller_step(presign_action(settings), settings, FakeBackend(s3, []), results)
    (presigned,) = results["presigned"]["parts"]
    assert presigned["headers"]["x-amz-acl"] == "aws-exec-read"
    query = parse_qs(urlsplit(presigned["url"]).query)
    signed = query.get("X-Amz-SignedHeaders", [""])[0].split(";") + list(query)
    assert "x-amz-acl" in signed


def test_expired_urls_are_presigned_again_and_only_those_parts_are_sent_again(s3, settings):
    parts = [part(f"image.part.{i}", bytes([i])) for i in range(3)]
    results = {"bundle": {"prefix": "image", "parts": parts}}
    backend = FakeBackend(
        s3,
        [
            (3, {"uploaded": ["image.part.0"], "failed": [], "expired": ["image.part.1", "image.part.2"]}),
            (0, {"uploaded": ["image.part.1", "image.part.2"], "failed": [], "expired": []}),
        ],
    )
    run_controller_step(presign_action(settings), settings, backend, results)
    run_controller_step(upload_action(settings), settings, backend, results)
    first, second = backend.requests
    assert [p["filename"] for p in first["parts"]] == ["image.part.0", "image.part.1", "image.part.2"]
    assert [p["filename"] for p in second["parts"]] == ["image.part.1", "image.part.2"]
    assert results["upload"]["uploaded"] == ["image.part.1", "image.part.2"]


def test_a_permanent_upload_failure_names_the_part_and_says_nothing_was_registered(s3, settings):
    results = {"bundle": {"prefix": "image", "parts": [part("image.part.0", b"x")]}}
    failed = {
        "uploaded": [],
        "failed": [{"filename": "image.part.0", "status": 403, "reason": "AccessDenied"}],
    }
    backend = FakeBackend(s3, [(1, failed | {"expired": []})])
    run_controller_step(presign_action(settings), settings, backend, results)
    with pytest.raises(ControllerStepFailed) as raised:
        run_controller_step(upload_action(settings), settings, backend, results)
    message = str(raised.value)
    assert "image.part.0 (403: AccessDenied)" in message and "Nothing was registered" in message
    # A re-run makes a new AES key: its parts differ, so none of these is skipped.
    assert "a re-run bundles the volume again with a new key, so it sends every part again" in message
    for secret in secret_values(results):
        assert secret not in message


def test_the_bundle_request_carries_key_and_iv_made_on_the_controller(s3, settings):
    results = {}
    key_step, program = [a for a in native.ami_bundle(settings) if not isinstance(a, PlanWarning)][1:3]
    backend = FakeBackend(s3, [(0, {"prefix": "image", "parts": []})])
    run_controller_step(key_step, settings, backend, results)
    run_controller_step(program, settings, backend, results)
    (request,) = backend.requests
    assert request["key"] == results["bundle_key"].hex() and request["iv"] == results["bundle_iv"].hex()
    assert request["volume"] == "/" and "/var/lib/amidsl" in request["exclude"]
    assert set(secret_values(results)) == {request["key"], request["iv"]}


def test_a_resumed_upload_without_the_bundle_report_says_to_run_the_phases_together(s3, settings):
    with pytest.raises(ControllerStepFailed, match="run ami-bundle and the phases after it in one build"):
        run_controller_step(presign_action(settings), settings, FakeBackend(s3, []), {})


def test_the_node_uploads_as_many_parts_at_once_as_upload_concurrency_says(raw_settings):
    s = resolve(raw_settings | {"bundler": "native", "upload_concurrency": 12})
    assert dict(upload_action(s).request)["concurrency"] == 12


def test_a_live_build_says_what_a_disk_bundle_made_not_parts():
    disk = {"disk": "/tmp/image.disk", "image_size": 332_000_000, "blocks": 509, "left_out": []}
    assert report_lines("bundle", disk)[0] == "made a 332.0 MB disk in /tmp/image.disk: 509 blocks hold data"
