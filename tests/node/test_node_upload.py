"""The node program's upload command: parts PUT in parallel to presigned URLs (moto on loopback)."""

from __future__ import annotations

import datetime
import http.server
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.node.conftest import run_node

BUCKET = "node-upload-bucket"
ACL_HEADERS = {"x-amz-acl": "aws-exec-read"}


def s3_client(endpoint: str):
    """An S3 client that presigns with SigV4, as the controller does (session tokens need it)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4"),
    )


@pytest.fixture(scope="module")
def s3(aws_endpoint: str):
    client = s3_client(aws_endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def parts(tmp_path: Path) -> list[str]:
    """Four part files of random bytes."""
    names = [f"image.part.{i}" for i in range(4)]
    for name in names:
        (tmp_path / name).write_bytes(os.urandom(300_000))
    return names


def presigned(s3, key: str, expires: int = 600) -> str:
    return s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": BUCKET, "Key": key, "ACL": "aws-exec-read"},
        ExpiresIn=expires,
    )


def upload_request(directory: Path, entries: list[dict], **overrides: object) -> dict:
    request = {"destination_dir": str(directory), "parts": entries, "concurrency": 4, "retries": 5}
    request.update(overrides)
    return request


def test_every_part_is_put_with_the_acl(s3, tmp_path, parts):
    entries = [{"filename": n, "url": presigned(s3, f"a/{n}"), "headers": ACL_HEADERS} for n in parts]
    run = run_node("upload", upload_request(tmp_path, entries))
    assert run.returncode == 0, run.stderr
    assert run.result == {"uploaded": parts, "failed": [], "expired": []}
    s3.put_object(Bucket=BUCKET, Key="reference", Body=b"x", ACL="aws-exec-read")
    expected_grants = s3.get_object_acl(Bucket=BUCKET, Key="reference")["Grants"]
    for name in parts:
        assert s3.get_object(Bucket=BUCKET, Key=f"a/{name}")["Body"].read() == (tmp_path / name).read_bytes()
        assert s3.get_object_acl(Bucket=BUCKET, Key=f"a/{name}")["Grants"] == expected_grants
    assert "X-Amz-SignedHeaders=host%3Bx-amz-acl" in entries[0]["url"]  # the header is signed
    assert "X-Amz-Signature" not in run.stdout + run.stderr


def test_a_part_that_does_not_match_its_digest_is_not_sent(s3, tmp_path, parts):
    entry = {"filename": parts[0], "url": presigned(s3, "b/0"), "headers": ACL_HEADERS, "sha1": "0" * 40}
    run = run_node("upload", upload_request(tmp_path, [entry]))
    assert run.returncode == 1
    assert "does not match its SHA-1 digest" in run.stderr
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="b/0")


class S3Front(http.server.BaseHTTPRequestHandler):
    """In front of moto: fails the first `failures` PUTs with 503 and, as S3 does (moto does
    not), refuses presigned URLs past their X-Amz-Date + X-Amz-Expires; forwards the rest."""

    failures = 0
    upstream = ""
    seen = 0
    lock = threading.Lock()

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with S3Front.lock:
            S3Front.seen += 1
            fail = S3Front.seen <= S3Front.failures
        if fail:
            return self.answer(
                503, b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            )
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        signed = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
        expires = signed.replace(tzinfo=datetime.timezone.utc) + datetime.timedelta(
            seconds=int(query["X-Amz-Expires"][0])
        )
        if datetime.datetime.now(datetime.timezone.utc) > expires:
            return self.answer(
                403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(self.upstream + self.path, data=body, headers=headers, method="PUT")
        with urllib.request.urlopen(request) as response:
            self.answer(response.status, response.read())
        return None

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def s3_front(aws_endpoint: str) -> Iterator[str]:
    """The S3 stand-in's address, with no failures planned."""
    S3Front.upstream, S3Front.failures, S3Front.seen = aws_endpoint, 0, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), S3Front)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_burst_of_503s_is_retried_until_every_part_is_in(s3, s3_front, tmp_path, parts):
    S3Front.failures = 6
    # The host is signed, so URLs are presigned for the front's address and forwarded unchanged.
    front = s3_client(s3_front)
    entries = [{"filename": n, "url": presigned(front, f"c/{n}"), "headers": ACL_HEADERS} for n in parts]
    run = run_node("upload", upload_request(tmp_path, entries, retry_pause=0.05))
    assert run.returncode == 0, run.stderr
    assert run.result["uploaded"] == parts
    assert S3Front.seen == 6 + len(parts)
    assert "HTTP 503 SlowDown" in run.stderr
    for name in parts:
        assert s3.get_object(Bucket=BUCKET, Key=f"c/{name}")["Body"].read() == (tmp_path / name).read_bytes()


def test_expired_urls_are_reported_with_exit_status_3(s3, s3_front, tmp_path, parts):
    front = s3_client(s3_front)
    fresh = {"filename": parts[0], "url": presigned(front, "d/0"), "headers": ACL_HEADERS}
    stale = [
        {"filename": n, "url": presigned(front, f"d/{n}", expires=1), "headers": ACL_HEADERS}
        for n in parts[1:]
    ]
    time.sleep(2)
    run = run_node("upload", upload_request(tmp_path, [fresh, *stale]))
    assert run.returncode == 3, run.stderr
    assert run.result == {"uploaded": [parts[0]], "failed": [], "expired": parts[1:]}
    assert run.stderr.splitlines()[-1] == (
        "amidsl-node: error: the upload URLs of 3 parts expired; presign them again"
    )


def test_a_permanent_failure_exits_1_naming_the_part(s3, aws_endpoint, tmp_path, parts):
    entry = {
        "filename": parts[2],
        "url": f"{aws_endpoint}/no-such-bucket/x?X-Amz-Signature=abc",
        "headers": {},
    }
    run = run_node("upload", upload_request(tmp_path, [entry]))
    assert run.returncode == 1
    assert run.result["failed"][0]["filename"] == parts[2]
    assert run.result["failed"][0]["status"] == 404
    assert f"amidsl-node: error: part {parts[2]} could not be uploaded (HTTP 404: NoSuchBucket" in run.stderr
    assert "X-Amz-Signature" not in run.stderr


def test_a_missing_part_file_is_refused_before_any_upload(tmp_path):
    entry = {"filename": "image.part.9", "url": "http://127.0.0.1:9/x", "headers": {}}
    run = run_node("upload", upload_request(tmp_path, [entry]))
    assert run.returncode == 1
    assert run.stderr.splitlines()[1:] == [
        f"amidsl-node: error: part image.part.9 is not a regular file in {tmp_path}; bundle first"
    ]
