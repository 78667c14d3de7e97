"""AWS on boto3: generic calls, the common failures explained, and the checks of `validate --live`."""

from __future__ import annotations

import http.server
import threading

import botocore.exceptions
import pytest
from botocore.stub import Stubber

from amidsl.crate import ami_register
from amidsl.live.aws import Aws, AwsError, check_aws_side, check_public_sharing, snake_case
from amidsl.live.settings import LiveSettings
from amidsl.model.actions import AwsCall
from amidsl.run.publish import PublishFailed, wait_for_image
from amidsl.settings import MAX_UPLOAD_CONCURRENCY, SettingsError, resolve
from tests.live.node_settings import ACCOUNT, BUCKET, aws_client


@pytest.fixture
def settings(raw_settings):
    keys = {"access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    return resolve(raw_settings | keys | {"region": "us-east-1", "user_id": ACCOUNT, "s3_bucket": BUCKET})


def stubbed(settings, service: str) -> tuple[Aws, Stubber]:
    """An Aws whose client for `service` answers from a botocore Stubber (no network at all)."""
    aws = Aws(settings, LiveSettings())
    stubber = Stubber(aws.client(service))
    stubber.activate()
    return aws, stubber


def test_operation_names_become_boto3_methods():
    assert snake_case("RegisterImage") == "register_image"
    assert snake_case("GetBucketLocation") == "get_bucket_location"
    assert snake_case("DescribeImages") == "describe_images"


@pytest.mark.parametrize("endpoint_url", [None, "http://127.0.0.1:5000"])
def test_a_client_keeps_a_connection_for_each_upload_thread_at_the_highest_concurrency(
    settings, endpoint_url
):
    # The EBS upload's threads share the build's client: with fewer pooled connections than threads,
    # each put beyond them would open (and discard) a connection of its own.
    aws = Aws(settings, LiveSettings(endpoint_url=endpoint_url))
    assert aws.client("ebs").meta.config.max_pool_connections >= MAX_UPLOAD_CONCURRENCY


def test_the_ebs_client_makes_one_request_per_call_and_leaves_retrying_to_the_upload(settings):
    # The upload retries each EBS call itself, with waits Ctrl-C ends (run/ebs_upload.py); botocore's
    # own retries would multiply its tries and sleep in the put threads, where Ctrl-C never reaches.
    requests = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"message": "busy"}'
            self.send_response(503)
            self.send_header("x-amzn-ErrorType", "ServiceUnavailableException")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        ebs = Aws(settings, LiveSettings(endpoint_url=endpoint)).client("ebs")
        with pytest.raises(botocore.exceptions.ClientError):
            ebs.start_snapshot(VolumeSize=1)
        server.shutdown()
    assert requests == ["/snapshots"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InvalidAMIName.Duplicate", "an image named 'web-server-2026-11' already exists in this account"),
        ("AccessDenied", "give the credentials (access_key / [live] profile) permission for RegisterImage"),
        ("UnauthorizedOperation", "the credentials are not allowed to call RegisterImage"),
        (
            "ExpiredToken",
            "the session token has expired (ExpiredToken). Fix: renew the temporary credentials",
        ),
        ("InvalidManifest", "check that ami-upload finished and that the bucket is in us-east-1"),
    ],
)
def test_register_image_failures_are_explained_with_the_fix(settings, code, expected):
    aws, stubber = stubbed(settings, "ec2")
    stubber.add_client_error("register_image", service_error_code=code, service_message="refused")
    action = ami_register(settings)[0]
    assert isinstance(action, AwsCall)
    with pytest.raises(AwsError) as caught:
        aws.call_action(action, dict(action.params))
    assert expected in str(caught.value)
    assert "wJalrXUtnFEMI" not in str(caught.value)


def test_a_bucket_in_another_region_is_explained(settings):
    aws, stubber = stubbed(settings, "s3")
    stubber.add_client_error("get_bucket_location", service_error_code="PermanentRedirect")
    with pytest.raises(
        AwsError, match=r"the bucket 'amidsl-offline-bundles' is in another region than us-east-1"
    ):
        aws.call("s3", "GetBucketLocation", {"Bucket": BUCKET})


class StubbedBackend:
    """The two things amidsl.run.publish needs from the live back-end, over a stubbed Aws."""

    def __init__(self, aws: Aws) -> None:
        self.call_aws = aws.call_action
        self.pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def test_waiting_polls_until_the_image_is_available_and_says_how_it_goes(settings):
    aws, stubber = stubbed(settings, "ec2")
    for state in ("pending", "pending", "available"):
        stubber.add_response(
            "describe_images", {"Images": [{"ImageId": "ami-0123456789abcdef0", "State": state}]}
        )
    backend, lines = StubbedBackend(aws), []
    said = wait_for_image(backend, "ami-0123456789abcdef0", "us-east-1", 600, lines.append)
    assert said == "ami-0123456789abcdef0 is available in us-east-1 (after about 20 s)"
    assert backend.pauses == [10, 10]
    assert lines == [
        "    image ami-0123456789abcdef0 in us-east-1: pending (0 s of at most 600 s)",
        "    image ami-0123456789abcdef0 is available in us-east-1 (after about 20 s)",
    ]
    stubber.assert_no_pending_responses()


def test_a_failed_image_stops_the_wait_with_ec2s_state_reason(settings):
    aws, stubber = stubbed(settings, "ec2")
    reason = {"Code": "Client.InvalidManifest", "Message": "Failed to decrypt the bundle key"}
    stubber.add_response(
        "describe_images",
        {"Images": [{"ImageId": "ami-0123456789abcdef0", "State": "failed", "StateReason": reason}]},
    )
    with pytest.raises(PublishFailed) as caught:
        wait_for_image(StubbedBackend(aws), "ami-0123456789abcdef0", "us-east-1", 600, print)
    assert "is failed: Failed to decrypt the bundle key (Client.InvalidManifest)" in str(caught.value)
    assert "aws ec2 deregister-image --region us-east-1 --image-id ami-0123456789abcdef0" in str(caught.value)


def test_an_image_still_pending_at_the_timeout_is_reported_with_what_to_do(settings):
    aws, stubber = stubbed(settings, "ec2")
    for _ in range(4):  # at 0, 10, 20 and 25 s
        stubber.add_response(
            "describe_images", {"Images": [{"ImageId": "ami-0123456789abcdef0", "State": "pending"}]}
        )
    backend = StubbedBackend(aws)
    with pytest.raises(
        PublishFailed, match=r"still pending after 25 s\. It stays registered.*image_wait_seconds"
    ):
        wait_for_image(backend, "ami-0123456789abcdef0", "us-east-1", 25, print)
    assert backend.pauses == [10, 10, 5]


def test_the_controller_gets_the_session_credentials(settings, raw_settings):
    token = resolve(
        raw_settings
        | {
            "bundler": "native",
            "access_key": "ASIAIOSFODNN7EXAMPLE",
            "secret_key": "secret-value-1",
            "session_token": "token-value-1",
        }
    )
    credentials = Aws(token, LiveSettings()).credentials()
    assert credentials.access_key == "ASIAIOSFODNN7EXAMPLE"
    assert (credentials.secret_key.reveal(), credentials.session_token.reveal()) == (
        "secret-value-1",
        "token-value-1",
    )
    assert "secret-value-1" not in repr(credentials) and "ASIAIOSFODNN7EXAMPLE" not in repr(credentials)


def test_validate_live_checks_credentials_bucket_region_and_name(settings, aws_endpoint, bucket):
    live = LiveSettings(endpoint_url=aws_endpoint)
    checked = check_aws_side(settings, Aws(settings, live))
    assert checked[1:] == [
        f"bucket {BUCKET} exists in us-east-1",
        f"bucket {BUCKET} accepts ACLs (no object ownership controls)",
        "image name 'web-server-2026-11' is free in us-east-1",
    ]
    aws_client("s3", aws_endpoint).create_bucket(
        Bucket="amidsl-dublin-bundles", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    aws_client("ec2", aws_endpoint).register_image(Name="taken-name")
    wrong = settings.with_values(
        s3_bucket="amidsl-dublin-bundles", image_name="taken-name", user_id="210987654321"
    )
    with pytest.raises(SettingsError) as caught:
        check_aws_side(wrong, Aws(wrong, live))
    shown = [str(p) for p in caught.value.problems]
    assert shown[0].startswith("user_id: '210987654321' is not the account of the credentials (123456789012)")
    assert "bucket 'amidsl-dublin-bundles' is in eu-west-1, not in us-east-1" in shown[1]
    assert shown[2].startswith("image_name: 'taken-name' is already the name of ami-")


def test_validate_live_checks_the_name_in_every_copy_region_unless_force_deregister(
    settings, aws_endpoint, bucket
):
    live = LiveSettings(endpoint_url=aws_endpoint)
    oregon = aws_client("ec2", aws_endpoint, "us-west-2")
    taken = oregon.register_image(Name="taken-in-oregon")["ImageId"]
    copied = settings.with_values(image_name="taken-in-oregon", copy_to_regions=("us-west-2",))
    with pytest.raises(SettingsError) as caught:
        check_aws_side(copied, Aws(copied, live))
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(f"image_name: 'taken-in-oregon' is already the name of {taken} in us-west-2")
    assert problem.endswith("or set force_deregister = true.")
    forced = copied.with_values(force_deregister=True)
    assert check_aws_side(forced, Aws(forced, live))[-1] == (
        "force_deregister: an image named 'taken-in-oregon' is replaced, if there is one"
    )


def test_validate_live_refuses_a_bucket_with_acls_disabled_and_says_how_to_fix_it(
    settings, aws_endpoint, bucket
):
    s3 = aws_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="amidsl-enforced-bundles")
    s3.put_bucket_ownership_controls(
        Bucket="amidsl-enforced-bundles",
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    enforced = settings.with_values(s3_bucket="amidsl-enforced-bundles")
    with pytest.raises(SettingsError) as caught:
        check_aws_side(enforced, Aws(enforced, LiveSettings(endpoint_url=aws_endpoint)))
    (problem,) = [str(p) for p in caught.value.problems]
    assert "ACLs disabled (Object Ownership BucketOwnerEnforced)" in problem
    assert "put-bucket-ownership-controls --bucket amidsl-enforced-bundles" in problem
    assert "BucketOwnerPreferred" in problem


def test_a_public_image_is_refused_before_the_build_where_the_account_blocks_public_amis(settings):
    public = settings.with_values(public_image=True, copy_to_regions=("us-west-2",))
    aws = Aws(public, LiveSettings())
    for region, state in (("us-east-1", "unblocked"), ("us-west-2", "block-new-sharing")):
        stubber = Stubber(aws.client("ec2", region))
        stubber.add_response("get_image_block_public_access_state", {"ImageBlockPublicAccessState": state})
        stubber.activate()
    problems, checked = [], []
    check_public_sharing(public, aws, problems, checked)
    assert checked == ["us-east-1 allows public AMIs (block public access: unblocked)"]
    assert [str(p) for p in problems] == [
        "public_image: the account blocks public sharing of AMIs in us-west-2 (EC2's block public access "
        "for AMIs). Fix: run `aws ec2 disable-image-block-public-access --region us-west-2` "
        "if the image is to be public, or remove public_image."
    ]


# -- EBS-backed builds ------------------------------------------------------------------------------


def test_validate_live_leaves_the_bucket_alone_for_an_ebs_build(settings, aws_endpoint, bucket):
    s3 = aws_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="amidsl-enforced-bundles")
    s3.put_bucket_ownership_controls(
        Bucket="amidsl-enforced-bundles",
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    ebs = settings.with_values(backing="ebs", bundler="native", s3_bucket="amidsl-enforced-bundles")
    checked = check_aws_side(ebs, Aws(ebs, LiveSettings(endpoint_url=aws_endpoint)))
    assert not [line for line in checked if line.startswith("bucket ")]
    assert "EBS-backed: no S3 bundle, so the bucket is not used" in checked


def test_validate_live_asks_kms_whether_the_key_can_encrypt_the_snapshot(settings, aws_endpoint, bucket):
    kms = aws_client("kms", aws_endpoint)
    symmetric = {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT"}
    usable = kms.create_key(Description="builds", **symmetric)["KeyMetadata"]["Arn"]
    old = kms.create_key(Description="old", **symmetric)["KeyMetadata"]
    kms.disable_key(KeyId=old["KeyId"])
    disabled = old["Arn"]
    signing = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    live = LiveSettings(endpoint_url=aws_endpoint)
    ebs = settings.with_values(backing="ebs", bundler="native", encrypted=True)
    good = ebs.with_values(kms_key_id=usable)
    assert f"KMS key {usable} is enabled and encrypts (SYMMETRIC_DEFAULT)" in check_aws_side(
        good, Aws(good, live)
    )
    for key, says in (
        (disabled, "is Disabled"),
        (signing, "is a RSA_2048 key for SIGN_VERIFY"),
        (usable[: -len("abcd")] + "abcd", "KMS has no key"),
    ):
        bad = ebs.with_values(kms_key_id=key)
        with pytest.raises(SettingsError) as caught:
            check_aws_side(bad, Aws(bad, live))
        (problem,) = [str(p) for p in caught.value.problems]
        assert problem.startswith("kms_key_id: ") and says in problem, problem


def test_validate_live_asks_kms_in_each_copy_region_for_the_copys_key(settings, aws_endpoint, bucket):
    symmetric = {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT"}
    home = aws_client("kms", aws_endpoint).create_key(**symmetric)["KeyMetadata"]["Arn"]
    eu = aws_client("kms", aws_endpoint, "eu-west-1").create_key(**symmetric)["KeyMetadata"]["Arn"]
    live = LiveSettings(endpoint_url=aws_endpoint)
    ebs = settings.with_values(
        backing="ebs", bundler="native", encrypted=True, kms_key_id=home, copy_to_regions=("eu-west-1",)
    )
    good = ebs.with_values(copy_kms_key_ids=(("eu-west-1", eu),))
    assert f"KMS key {eu} is enabled and encrypts (SYMMETRIC_DEFAULT)" in check_aws_side(
        good, Aws(good, live)
    )
    elsewhere = home.replace("us-east-1", "eu-west-1")  # the key's id, but KMS in eu-west-1 has no such key
    bad = ebs.with_values(copy_kms_key_ids=(("eu-west-1", elsewhere),))
    with pytest.raises(SettingsError) as caught:
        check_aws_side(bad, Aws(bad, live))
    assert [str(p) for p in caught.value.problems] == [
        f"copy_kms_key_ids.eu-west-1: KMS has no key {elsewhere}. Fix: give the ARN of a key in eu-west-1."
    ]


def test_a_shared_ebs_image_is_refused_where_the_account_encrypts_new_snapshots_by_default(
    settings, aws_endpoint, bucket
):
    live = LiveSettings(endpoint_url=aws_endpoint)
    shared = settings.with_values(backing="ebs", bundler="native", launch_permissions=("222233334444",))
    checked = check_aws_side(shared, Aws(shared, live))
    assert "us-east-1 does not encrypt new EBS snapshots by default" in checked

    def stubbed_ec2(s, answers):
        aws = Aws(s, live)
        for region, by_default, key in answers:
            stubber = Stubber(aws.client("ec2", region))
            stubber.add_response("get_ebs_encryption_by_default", {"EbsEncryptionByDefault": by_default})
            if key:
                stubber.add_response("get_ebs_default_kms_key_id", {"KmsKeyId": key})
            stubber.activate()
        return aws

    # Encrypted by default with aws/ebs: the accounts could not launch it.
    aws = stubbed_ec2(shared, [("us-east-1", True, "alias/aws/ebs")])
    with pytest.raises(SettingsError) as caught:
        check_aws_side(shared, aws, image_name_must_be_free=False)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(
        "launch_permissions: the account encrypts new EBS snapshots by default in us-east-1, so the image "
        "will be encrypted with the AWS managed key aws/ebs, which cannot be shared"
    )
    assert "modify-ebs-default-kms-key-id --region us-east-1" in problem
    # With a customer managed key as the default, it is said, not refused.
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    checked = check_aws_side(
        shared, stubbed_ec2(shared, [("us-east-1", True, key)]), image_name_must_be_free=False
    )
    assert f"with the default EBS key {key}: the accounts it is shared with need it too" in checked[-1]
    # A public image whose copy region encrypts by default: refused for that region.
    public = settings.with_values(
        backing="ebs", bundler="native", public_image=True, copy_to_regions=("us-west-2",)
    )
    aws = Aws(public, live)
    for region, by_default in (("us-east-1", False), ("us-west-2", True)):
        stubber = Stubber(aws.client("ec2", region))
        stubber.add_response(
            "get_image_block_public_access_state", {"ImageBlockPublicAccessState": "unblocked"}
        )
        stubber.add_response("get_ebs_encryption_by_default", {"EbsEncryptionByDefault": by_default})
        stubber.activate()
    with pytest.raises(SettingsError) as caught:
        check_aws_side(public, aws, image_name_must_be_free=False)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(
        "public_image: the account encrypts new EBS snapshots by default in us-west-2, so its copy there"
    )
    assert "disable-ebs-encryption-by-default --region us-west-2" in problem
