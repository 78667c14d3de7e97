"""AWS on boto3: one session per build, generic API calls for AwsCall actions, clear failure messages.

The session comes from the settings' keys (and token) or, without them, from the default credential
chain or the `[live]` profile. `endpoint_url` points every client at an S3/EC2-compatible endpoint (tests
use moto's server). Errors from AWS are turned into one message naming the setting and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from amidsl.bundle.s3 import acl_fix, object_ownership
from amidsl.live.settings import LiveSettings
from amidsl.model.actions import AwsCall
from amidsl.secrets import Secret
from amidsl.settings import MAX_UPLOAD_CONCURRENCY, AmiSettings, Problem, SettingsError
from amidsl.strategies import strategy_of


class AwsError(Exception):
    """An AWS call failed; the message says what it means for the build and how to fix it."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}. Fix: {fix}")
        self.what = what
        self.fix = fix


@dataclass(frozen=True)
class AwsCredentials:
    """The resolved credentials the node's tools get at run time (the secret parts stay hidden)."""

    access_key: str = field(repr=False)  # shown nowhere, as the secret key
    secret_key: Secret
    session_token: Secret | None = None


def snake_case(operation: str) -> str:
    """boto3's method name for an API operation (`RegisterImage` -> `register_image`)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", operation).lower()


# ClientError codes -> (what happened, fix). `{...}` fields are filled from the settings.
_EXPLANATIONS: dict[str, tuple[str, str]] = {
    "InvalidAMIName.Duplicate": (
        "an image named {image_name!r} already exists in this account and region ({region})",
        "choose another image_name, deregister the old image first, or set force_deregister = true",
    ),
    "AccessDenied": (
        "access denied",
        "give the credentials (access_key / [live] profile) permission for {operation}, or use others",
    ),
    "UnauthorizedOperation": (
        "the credentials are not allowed to call {operation}",
        "give the credentials (access_key / [live] profile) permission for {operation}",
    ),
    "ExpiredToken": (
        "the session token has expired",
        "renew the temporary credentials (access_key, secret_key, session_token) and run again",
    ),
    "RequestExpired": (
        "the request or the temporary credentials expired",
        "renew the temporary credentials and check the controller's clock",
    ),
    "InvalidClientTokenId": (
        "AWS does not know the access key",
        "check access_key and secret_key (or the [live] profile)",
    ),
    "AuthFailure": (
        "AWS rejected the credentials",
        "check access_key and secret_key (or the [live] profile)",
    ),
    "SignatureDoesNotMatch": (
        "the secret key does not match the access key",
        "check secret_key (or the [live] profile)",
    ),
    "InvalidAccessKeyId": ("AWS does not know the access key", "check access_key (or the [live] profile)"),
    "NoSuchBucket": (
        "the bucket {s3_bucket!r} does not exist",
        "create it in {region} or set s3_bucket to an existing bucket",
    ),
    "PermanentRedirect": (
        "the bucket {s3_bucket!r} is in another region than {region}",
        "set region to the bucket's region, or use a bucket in {region}",
    ),
    "AuthorizationHeaderMalformed": (
        "the bucket {s3_bucket!r} is in another region than {region}",
        "set region to the bucket's region, or use a bucket in {region}",
    ),
    "InvalidManifest": (
        "EC2 could not read the bundle manifest {s3_manifest_path!r}",
        "check that ami-upload finished and that the bucket is in {region}",
    ),
}
_EXPLANATIONS["AccessDeniedException"] = _EXPLANATIONS["AccessDenied"]
_EXPLANATIONS["ExpiredTokenException"] = _EXPLANATIONS["ExpiredToken"]


def explain(error: Exception, operation: str, settings: AmiSettings) -> AwsError:
    """An AwsError for a failed AWS call: what it means (with the AWS code) and the fix."""
    fields = {
        "operation": operation,
        "image_name": settings.image_name,
        "region": settings.region,
        "s3_bucket": settings.s3_bucket,
        "s3_manifest_path": settings.s3_manifest_path,
    }
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        detail = error.response.get("Error", {}).get("Message", "")
        known = _EXPLANATIONS.get(code)
        if known is None:
            return AwsError(
                f"{operation} failed: {code}: {detail}", "see the AWS documentation of that error"
            )
        what, fix = (text.format(**fields) for text in known)
        return AwsError(f"{operation} failed: {what} ({code})", fix)
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return AwsError(
            f"{operation}: no AWS credentials found",
            "set access_key and secret_key in [ami], a profile in [live], or the AWS_* environment variables",
        )
    if isinstance(error, botocore.exceptions.ProfileNotFound):
        return AwsError(f"{operation}: {error}", "set profile in [live] to a profile of your AWS config")
    if isinstance(error, botocore.exceptions.EndpointConnectionError):
        return AwsError(
            f"{operation}: cannot reach {error.kwargs.get('endpoint_url')}",
            "check the network, the region and endpoint_url",
        )
    return AwsError(f"{operation} failed: {error}", "see the message above")


class Aws:
    """One boto3 session for a build: clients per service, generic calls, credentials for the node."""

    def __init__(
        self,
        settings: AmiSettings,
        live: LiveSettings,
        session_factory: Callable[..., Any] = boto3.session.Session,
    ) -> None:
        self.settings = settings
        self.live = live
        if settings.access_key and settings.secret_key:
            self.session = session_factory(
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key.reveal(),
                aws_session_token=settings.session_token.reveal() if settings.session_token else None,
                region_name=settings.region,
            )
        else:
            try:
                self.session = session_factory(profile_name=live.profile, region_name=settings.region)
            except botocore.exceptions.ProfileNotFound as err:
                raise explain(err, "AWS session", settings) from None
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str | None = None) -> Any:
        """The boto3 client for a service (one per service and region, on the endpoint if set)."""
        key = (service, region or self.settings.region)
        if key not in self._clients:
            # The EBS upload's threads (upload_concurrency) share this client: a pooled connection
            # each, else every put beyond the pool's 10 opens a connection (a TLS handshake) and drops it.
            config = Config(max_pool_connections=MAX_UPLOAD_CONCURRENCY)
            if self.live.endpoint_url:
                # S3-compatible endpoints (and addresses) rarely serve bucket subdomains: use path style.
                config = config.merge(Config(s3={"addressing_style": "path"}))
            if service == "ebs":
                # The snapshot upload retries each EBS call itself, with waits Ctrl-C ends
                # (run/ebs_upload.py); botocore's retries would multiply the tries, sleeping in the put
                # threads, which Ctrl-C never reaches.
                config = config.merge(Config(retries={"total_max_attempts": 1}))
            self._clients[key] = self.session.client(
                service, region_name=key[1], endpoint_url=self.live.endpoint_url, config=config
            )
        return self._clients[key]

    def credentials(self) -> AwsCredentials:
        """The session's resolved credentials, for the node's tools (ec2-upload-bundle)."""
        found = self.session.get_credentials()
        if found is None:
            raise explain(botocore.exceptions.NoCredentialsError(), "AWS credentials", self.settings)
        frozen = found.get_frozen_credentials()
        return AwsCredentials(
            access_key=frozen.access_key,
            secret_key=Secret(frozen.secret_key),
            session_token=Secret(frozen.token) if frozen.token else None,
        )

    def call(self, service: str, operation: str, params: dict[str, Any], region: str | None = None) -> dict:
        """Call one API operation; AWS errors become AwsError with an explanation."""
        try:
            method = getattr(self.client(service, region), snake_case(operation))
        except AttributeError:
            raise AwsError(
                f"{service} has no operation {operation}", "fix the AwsCall action's operation name"
            ) from None
        try:
            result = method(**params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise explain(err, operation, self.settings) from None
        result.pop("ResponseMetadata", None)
        return result

    def call_action(self, action: AwsCall, params: dict[str, Any]) -> dict:
        """Carry out an AwsCall action in its region (waiting for an image is a WaitForImage action)."""
        return self.call(action.service, action.operation, params, action.region)


def check_aws_side(settings: AmiSettings, aws: Aws, image_name_must_be_free: bool = True) -> list[str]:
    """Before any node work: credentials valid, bucket exists in the region, image name free.

    Returns what was checked; raises SettingsError listing every problem found.
    """
    problems: list[Problem] = []
    checked: list[str] = []
    try:
        identity = aws.call("sts", "GetCallerIdentity", {})
    except AwsError as err:
        raise SettingsError([Problem("credentials", err.what, err.fix)], origin="AWS") from None
    account = identity.get("Account", "")
    checked.append(f"credentials valid for account {account} ({identity.get('Arn', '?')})")
    if account and settings.user_id and account != settings.user_id:
        problems.append(
            Problem(
                "user_id",
                f"{settings.user_id!r} is not the account of the credentials ({account})",
                "set user_id to the account that owns the bucket and will own the image",
            )
        )
    if strategy_of(settings).uses_bucket:
        _check_bucket(settings, aws, problems, checked)
    else:
        checked.append("EBS-backed: no S3 bundle, so the bucket is not used")
    if image_name_must_be_free:
        _check_image_name_free(settings, aws, problems, checked)
    if settings.public_image:
        check_public_sharing(settings, aws, problems, checked)
    if settings.kms_key_id:
        _check_kms_key("kms_key_id", settings.kms_key_id, settings.region, aws, problems, checked)
    for region, key in settings.copy_kms_key_ids:
        _check_kms_key(f"copy_kms_key_ids.{region}", key, region, aws, problems, checked)
    if not strategy_of(settings).uses_bucket and not settings.encrypted:
        _check_encryption_by_default(settings, aws, problems, checked)
    if problems:
        raise SettingsError(problems, origin="AWS")
    return checked


def _check_bucket(settings: AmiSettings, aws: Aws, problems: list[Problem], checked: list[str]) -> None:
    """The bucket is in the build's region and takes the ACL every bundle part needs."""
    try:
        location = aws.call("s3", "GetBucketLocation", {"Bucket": settings.s3_bucket})
    except AwsError as err:
        problems.append(Problem("s3_bucket", err.what, err.fix))
    else:
        # us-east-1 answers with no constraint; the oldest Irish buckets answer "EU".
        region = location.get("LocationConstraint") or "us-east-1"
        region = "eu-west-1" if region == "EU" else region
        if region != settings.region:
            problems.append(
                Problem(
                    "s3_bucket",
                    f"bucket {settings.s3_bucket!r} is in {region}, not in {settings.region}",
                    f"set region = {region!r}, or use a bucket in {settings.region} (EC2 only registers "
                    "bundles from a bucket in its own region)",
                )
            )
        else:
            checked.append(f"bucket {settings.s3_bucket} exists in {region}")
            _check_bucket_accepts_acls(settings, aws, problems, checked)


def _check_kms_key(
    name: str, key: str, region: str, aws: Aws, problems: list[Problem], checked: list[str]
) -> None:
    """A key setting (`name`): a key KMS in `region` knows, enabled, symmetric and for encryption (what
    EBS encrypts with)."""
    try:
        found = aws.call("kms", "DescribeKey", {"KeyId": key}, region)["KeyMetadata"]
    except AwsError as err:
        if "NotFoundException" in err.what:
            problems.append(Problem(name, f"KMS has no key {key}", f"give the ARN of a key in {region}"))
        else:
            problems.append(Problem(name, err.what, err.fix))
        return
    spec, usage, state = found.get("KeySpec", ""), found.get("KeyUsage", ""), found.get("KeyState", "")
    if (spec, usage) != ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"):
        problems.append(
            Problem(
                name,
                f"{key} is a {spec} key for {usage}, and EBS encrypts only with a symmetric encryption key",
                "give a SYMMETRIC_DEFAULT key for ENCRYPT_DECRYPT",
            )
        )
    elif state != "Enabled":
        problems.append(
            Problem(
                name,
                f"{key} is {state}: nothing can be encrypted with it",
                f"enable it (`aws kms enable-key --region {region} --key-id {key}`) or give another key",
            )
        )
    else:
        checked.append(f"KMS key {key} is enabled and encrypts ({spec})")


def _check_encryption_by_default(
    settings: AmiSettings, aws: Aws, problems: list[Problem], checked: list[str]
) -> None:
    """An EBS-backed build that does not ask for encryption still gets it where the account encrypts new
    EBS snapshots by default (the image, or its copy in a copy region): EC2 then makes no such image
    public, and the accounts it is shared with need the default key, which cannot be aws/ebs."""
    for region in (settings.region, *settings.copy_to_regions):
        try:
            found = aws.call("ec2", "GetEbsEncryptionByDefault", {}, region)
        except AwsError as err:
            checked.append(f"could not read whether {region} encrypts EBS by default ({err.what})")
            continue
        if not found.get("EbsEncryptionByDefault"):
            checked.append(f"{region} does not encrypt new EBS snapshots by default")
            continue
        image = "the image" if region == settings.region else "its copy there"
        said = f"the account encrypts new EBS snapshots by default in {region}, so {image} will be encrypted"
        if settings.public_image:
            problems.append(
                Problem(
                    "public_image",
                    f"{said}, and EC2 does not make an image with encrypted snapshots public",
                    f"remove public_image, or run `aws ec2 disable-ebs-encryption-by-default --region "
                    f"{region}` if the image is to be public",
                )
            )
        elif settings.launch_permissions:
            _check_default_key_shareable(settings, aws, region, said, problems, checked)
        else:
            checked.append(f"{said} with its default EBS key")


def _check_default_key_shareable(
    settings: AmiSettings, aws: Aws, region: str, said: str, problems: list[Problem], checked: list[str]
) -> None:
    """A shared image encrypted by default: the accounts need the default key, which aws/ebs cannot be."""
    try:
        key = str(aws.call("ec2", "GetEbsDefaultKmsKeyId", {}, region).get("KmsKeyId") or "alias/aws/ebs")
    except AwsError as err:
        checked.append(f"{said}; could not read its default EBS key ({err.what})")
        return
    if key.endswith("alias/aws/ebs"):
        problems.append(
            Problem(
                "launch_permissions",
                f"{said} with the AWS managed key aws/ebs, which cannot be shared, so the accounts it is "
                "shared with could not launch it",
                "set encrypted = true with kms_key_id, a customer managed key those accounts may use, or "
                f"make such a key the default (`aws ec2 modify-ebs-default-kms-key-id --region {region} "
                "--kms-key-id KEY`)",
            )
        )
    else:
        checked.append(f"{said} with the default EBS key {key}: the accounts it is shared with need it too")


def _check_bucket_accepts_acls(
    settings: AmiSettings, aws: Aws, problems: list[Problem], checked: list[str]
) -> None:
    """Bundles are uploaded with the ACL aws-exec-read: a bucket with ACLs disabled refuses every part."""
    try:
        ownership = object_ownership(aws.client("s3"), settings.s3_bucket)
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        problems.append(
            Problem(
                "s3_bucket",
                f"cannot read the bucket's object ownership ({code})",
                "allow s3:GetBucketOwnershipControls, or check the bucket by hand",
            )
        )
        return
    except botocore.exceptions.BotoCoreError as err:
        problems.append(
            Problem(
                "s3_bucket",
                f"cannot read the bucket's object ownership ({err})",
                "check the network and the endpoint",
            )
        )
        return
    if not ownership:
        checked.append(f"bucket {settings.s3_bucket} accepts ACLs (no object ownership controls)")
    elif ownership == "BucketOwnerEnforced":
        problems.append(
            Problem(
                "s3_bucket",
                f"bucket {settings.s3_bucket!r} has ACLs disabled (Object Ownership BucketOwnerEnforced), "
                "so it refuses the aws-exec-read ACL every bundle part needs for EC2 to read it",
                acl_fix(settings.s3_bucket),
            )
        )
    else:
        checked.append(f"bucket {settings.s3_bucket} accepts ACLs (Object Ownership {ownership})")


def _check_image_name_free(
    settings: AmiSettings, aws: Aws, problems: list[Problem], checked: list[str]
) -> None:
    """The name is free in the build's region and in every region the image is copied to."""
    if settings.force_deregister:
        checked.append(
            f"force_deregister: an image named {settings.image_name!r} is replaced, if there is one"
        )
        return
    for region in (settings.region, *settings.copy_to_regions):
        try:
            images = aws.call(
                "ec2",
                "DescribeImages",
                {"Owners": ["self"], "Filters": [{"Name": "name", "Values": [settings.image_name]}]},
                region,
            )
        except AwsError as err:
            problems.append(Problem("image_name", err.what, err.fix))
            continue
        taken = [image["ImageId"] for image in images.get("Images", [])]
        if taken:
            problems.append(
                Problem(
                    "image_name",
                    f"{settings.image_name!r} is already the name of {', '.join(taken)} in {region}",
                    "choose another image_name, deregister the old image, or set force_deregister = true",
                )
            )
        else:
            checked.append(f"image name {settings.image_name!r} is free in {region}")


def check_public_sharing(
    settings: AmiSettings, aws: Aws, problems: list[Problem], checked: list[str]
) -> None:
    """public_image: EC2's block public access for AMIs must be off in every region the image goes to."""
    for region in (settings.region, *settings.copy_to_regions):
        try:
            answer = aws.call("ec2", "GetImageBlockPublicAccessState", {}, region)
        except AwsError as err:
            checked.append(f"could not read whether {region} blocks public AMIs ({err.what}): not checked")
            continue
        state = answer.get("ImageBlockPublicAccessState", "")
        if state == "block-new-sharing":
            problems.append(
                Problem(
                    "public_image",
                    f"the account blocks public sharing of AMIs in {region} "
                    "(EC2's block public access for AMIs)",
                    f"run `aws ec2 disable-image-block-public-access --region {region}` "
                    "if the image is to be public, or remove public_image",
                )
            )
        else:
            checked.append(f"{region} allows public AMIs (block public access: {state or 'unblocked'})")
