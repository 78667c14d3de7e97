"""FakeRegion: moto (in-process) for S3, EC2 and IAM state, plus the checks real EC2 makes.

moto's RegisterImage accepts a manifest that does not exist; EC2 does not. Before an S3-backed image is
registered, the region reads the manifest at ImageLocation and checks it as EC2 does: it parses, its
signature verifies against one of the account's signing certificates, the EC2 copy of key and IV opens
with this region's own EC2 key, every part exists with its SHA-1 and the sizes add up, the manifest's
user is the account, the name is well-formed and unused, and the bucket is in this region. Each
violation raises the botocore ClientError with the code EC2 uses.

After registration it models what moto does not: an image is `pending` for a few polls (a fault) and can
end `failed` with a state reason; CopyImage copies only an available image and refuses a name already
used in the destination region; launch permissions must have one of EC2's four shapes; RegisterImage
keeps the optional attributes it was given. Calls may name another region of the same account (moto keeps
one state per region).

EBS: the EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks,
GetSnapshotBlock) and RegisterImage from snapshots are checked as AWS checks them (simulator.ebs); a
snapshot in use by a registered image cannot be deleted. `strict_client` gives a boto3-like client
whose calls go through these checks, for controller code that takes a client.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from moto.backends import get_backend
from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server

from amidsl.bundle import BundleError, Manifest, parse_manifest
from amidsl.bundle.keys import decrypt_with_key
from amidsl.bundle.verify import check_part_digests, check_part_list, check_signature_of
from amidsl.keypairs import self_signed_pair
from amidsl.settings import ORGANIZATION_ARN, OU_ARN
from amidsl.strategies.ec2_certificate import certificate_file
from simulator.ebs import (
    EbsDirect,
    check_ebs_registration,
    copied_mappings,
    copy_encryption_key,
    registered_ebs_ami,
)
from simulator.node import FakeNode

ACCOUNT_ID = "123456789012"  # moto's account, and the simulated account unless one is given
# The credentials the simulated account accepts by default (moto accepts any; the region's own upload
# check does not). Set `FakeRegion.credentials` to accept others (simulator.executor.prepare sets the
# user's, where the settings give keys).
ACCESS_KEY = "SIMULATEDACCESSKEYID"
SECRET_KEY = "simulated-secret-access-key"
AMI_NAME = re.compile(r"[A-Za-z0-9()\[\]./\-'@_ ]{3,128}")
# The shapes of a launch permission EC2 takes: exactly one of these keys, with a value like this.
LAUNCH_PERMISSION_SHAPES = {
    "UserId": re.compile(r"\d{12}"),
    "Group": re.compile(r"all"),
    "OrganizationArn": ORGANIZATION_ARN,
    "OrganizationalUnitArn": OU_ARN,
}
# RegisterImage's optional attributes the region keeps, and the DescribeImages field each comes back as.
KEPT_ATTRIBUTES = ("BootMode", "ImdsSupport", "EnaSupport", "SriovNetSupport", "BlockDeviceMappings")


def _moto_request_handler() -> dict[str, Any]:
    """How moto's own threaded server serves: with its request handler from moto 5.2, with werkzeug's
    before (moto 5.1 is the last for Python 3.9)."""
    try:
        from moto.server import MotoRequestHandler
    except ImportError:
        return {}
    return {"request_handler": MotoRequestHandler}


@contextlib.contextmanager
def without_public_images() -> Iterator[None]:
    """While it lasts, the regions moto makes hold none of Amazon's public images (thousands in each
    region, over half a second to make): a build reads only the account's own. moto reads it from the
    environment, so this is for a process that runs one simulation (the `simulate` command); regions
    opened and closed out of order inside it are fine."""
    with mock.patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}):
        yield


@functools.cache
def simulated_ec2_key(certificate: str) -> rsa.RSAPrivateKey:
    """The simulated EC2's private key for one of its certificates (`certificate_file`: one for every
    commercial region, others for GovCloud and China), made once per process: making a 2048-bit key
    costs a tenth of a second. Kept as a key, not PEM: parsing PEM again checks the key anew, tens of
    milliseconds each time."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def client_error(code: str, message: str, operation: str = "RegisterImage") -> ClientError:
    """The exception boto3 raises for an API error."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class RegionFaults:
    """Faults injected into the region's APIs."""

    fail_put_number: int | None = None  # this S3 PUT fails once; its retry succeeds
    s3_5xx_burst: int = 0  # this many PUT requests in a row answer 503 SlowDown
    fail_object: str | None = None  # every PUT of the key ending in this name fails, retries included
    refuse_part: int | None = None  # every PUT of the part with this index is refused (403 AccessDenied)
    expire_urls_at: int | None = None  # at this S3 PUT, every URL presigned so far has expired
    reject_register: str | None = None  # RegisterImage fails with this error code
    pending_polls: int = 0  # each new image (registered or copied) is pending for this many DescribeImages
    fail_image_in: dict[str, str] = field(default_factory=dict)  # region -> state reason of new images there
    # The faults that answered a request, by field name (fail_image_in:REGION): one set but not here
    # never met what it acts on.
    fired: set[str] = field(default_factory=set)


class FakeRegion:
    """One simulated AWS region and account: S3, EC2 (with strict RegisterImage) and IAM."""

    def __init__(
        self,
        name: str = "us-east-1",
        node_factory: Callable[[], FakeNode] | None = None,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self.name = name
        # The account RegisterImage checks manifests against (moto keeps its state under ACCOUNT_ID).
        self.account_id = account_id
        self.credentials = (ACCESS_KEY, SECRET_KEY, None)
        self.faults = RegionFaults()
        self.node_factory = node_factory
        self.nodes: dict[str, FakeNode] = {}
        self.put_requests = 0
        self.parts_put: set[int] = set()  # the index of every part a PUT asked for
        # The signatures of the URLs presigned here, and those a fault has made expire.
        self.presigned_signatures: set[str] = set()
        self.expired_signatures: set[str] = set()
        self._presign: PresignClient | None = None
        # Canned ACLs by (bucket, key): moto stores aws-exec-read without the grant to EC2 it implies.
        self.object_acls: dict[tuple[str, str], str] = {}
        self._mock = mock_aws()
        self._mock.start()
        self._server: FaultyS3Server | None = None  # S3 over HTTP on loopback, for presigned URLs
        self._session = boto3.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=name
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self.s3 = self.client("s3")
        self.iam = self.client("iam")
        # What moto does not keep about images: polls left while pending, state reasons of failed ones,
        # and the optional RegisterImage attributes.
        self.pending: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        # The EBS direct APIs' own state (checksums, client tokens, timeouts) beside moto's blocks.
        self.ebs_direct = EbsDirect(account_id)
        # EC2's key pair: bundles encrypt a copy of their key for its certificate.
        self._ec2_key = simulated_ec2_key(certificate_file(name))
        _, self.ec2_cert_pem = self_signed_pair(f"EC2 {name} (simulated)", key=self._ec2_key)

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client of the simulated account, in this region unless another is named."""
        key = (service, region or self.name)
        if key not in self._clients:
            # The user's AWS_ENDPOINT_URL or a profile's endpoint_url would send the simulated
            # account's calls past moto, to a real endpoint.
            config = Config(ignore_configured_endpoint_urls=True)
            self._clients[key] = self._session.client(service, region_name=key[1], config=config)
        return self._clients[key]

    @property
    def ec2(self) -> Any:
        """The account's EC2 client in this region, made on first use (a simulation first uses it while
        the node program bundles, and loads moto's EC2 then)."""
        return self.client("ec2")

    def strict_client(self, service: str, region: str | None = None) -> StrictClient:
        """A boto3-like client whose calls go through `call`, with the region's strict checks."""
        return StrictClient(self, service, region or self.name)

    def close(self) -> None:
        """Stop the region's moto mock and every node it launched."""
        for node in self.nodes.values():
            node.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._presign = None
        self._mock.stop()

    # -- what a user sets up before a build -------------------------------------------------------

    def create_bucket(self, bucket: str, region: str | None = None, acls_disabled: bool = False) -> None:
        """Create a bucket (in this region unless told otherwise); `acls_disabled` as S3 now makes a
        bucket whose creator says nothing about Object Ownership (BucketOwnerEnforced, since 2023)."""
        where = region or self.name
        if where == "us-east-1":
            self.s3.create_bucket(Bucket=bucket)
        else:
            self.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": where})
        if acls_disabled:
            rules = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
            self.s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=rules)

    def acls_disabled(self, bucket: str) -> bool:
        """Whether the bucket refuses ACLs (Object Ownership BucketOwnerEnforced); moto does not check."""
        try:
            rules = self.s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        except ClientError:
            return False
        return any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules)

    def register_signing_certificate(self, cert_pem: str, user_name: str = "amidsl") -> None:
        """Upload an X.509 signing certificate for the account, as the ami-tools require."""
        try:
            self.iam.create_user(UserName=user_name)
        except ClientError as err:
            if err.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
        self.iam.upload_signing_certificate(UserName=user_name, CertificateBody=cert_pem)

    def signing_certificates(self) -> list[str]:
        """The account's active signing certificates (PEM)."""
        bodies = []
        for user in self.iam.list_users()["Users"]:
            for cert in self.iam.list_signing_certificates(UserName=user["UserName"])["Certificates"]:
                if cert["Status"] == "Active":
                    bodies.append(cert["CertificateBody"])
        return bodies

    def bucket_region(self, bucket: str) -> str | None:
        """The region a bucket lives in, or None if there is no such bucket."""
        try:
            location = self.s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        except ClientError:
            return None
        return location or "us-east-1"

    # -- S3 as ec2-upload-bundle uses it -----------------------------------------------------------

    def injected_put_error(self, key: str, signature: str = "") -> tuple[int, str, str] | None:
        """Count one S3 PUT; the (HTTP status, code, message) an injected fault answers it with, or None."""
        self.put_requests += 1
        faults = self.faults
        name = key.rsplit("/", 1)[-1]
        part = re.fullmatch(r".+\.part\.(\d+)", name)
        if part:
            self.parts_put.add(int(part[1]))
        if self.put_requests == faults.expire_urls_at:
            # URLs presigned together expire together: every one issued so far, not those issued later.
            self.expired_signatures |= self.presigned_signatures
            faults.fired.add("expire_urls_at")
        if signature and signature in self.expired_signatures:
            return 403, "AccessDenied", "Request has expired"
        if faults.s3_5xx_burst > 0:
            faults.s3_5xx_burst -= 1
            faults.fired.add("s3_5xx_burst")
            return 503, "SlowDown", "Please reduce your request rate."
        if self.put_requests == faults.fail_put_number or name == faults.fail_object:
            faults.fired.add(
                "fail_put_number" if self.put_requests == faults.fail_put_number else "fail_object"
            )
            return 500, "InternalError", "We encountered an internal error. Please try again."
        if part and int(part[1]) == faults.refuse_part:
            faults.fired.add("refuse_part")
            return 403, "AccessDenied", "Access Denied"
        return None

    def upload_object(
        self, bucket: str, key: str, data: bytes, region: str, credentials: tuple[str, str, str | None]
    ) -> str | None:
        """PUT one object with ACL aws-exec-read; None on success, else the S3 error text."""
        access_key, secret_key, token = credentials
        if access_key != self.credentials[0]:
            return "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
        if secret_key != self.credentials[1] or token != self.credentials[2]:
            return "SignatureDoesNotMatch: The request signature we calculated does not match yours."
        injected = self.injected_put_error(key)
        if injected is not None:
            status, code, message = injected
            return f"{code} ({status}): {message}"
        located = self.bucket_region(bucket)
        if located is None:
            return f"NoSuchBucket: The specified bucket {bucket} does not exist"
        if located != region:
            return f"PermanentRedirect: bucket {bucket} is in {located}, not {region}"
        if self.acls_disabled(bucket):
            return "AccessControlListNotSupported: The bucket does not allow ACLs"
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ACL="aws-exec-read")
        self.object_acls[(bucket, key)] = "aws-exec-read"
        return None

    def presign_client(self) -> PresignClient:
        """An S3 client whose presigned URLs reach this region's S3 over HTTP on 127.0.0.1.

        The server shares the in-process moto state, so what a node PUTs there is what the region sees;
        the region's faults answer PUTs before moto does.
        """
        if self._presign is None:
            # The server's request log would print every presigned URL, signature included.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._server = FaultyS3Server(self)
            self._server.start()
            host, port = self._server.get_host_and_port()
            # Signed with the region's own keys, whatever keys it accepts: a user's never go into a URL.
            client = boto3.client(
                "s3",
                region_name=self.name,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                endpoint_url=f"http://{host}:{port}",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
            self._presign = PresignClient(client, self.presigned_signatures)
        return self._presign

    # -- the API calls plans make ------------------------------------------------------------------

    def call(
        self, service: str, operation: str, params: dict[str, Any], region: str | None = None
    ) -> dict[str, Any]:
        """Make an API call as boto3 would (in `region`, default this one), with EC2's strict checks
        where moto has none."""
        region = region or self.name
        if service == "ebs":
            moto_call = getattr(self.client("ebs", region), _snake_case(operation))
            return self.ebs_direct.call(operation, params, region, moto_call)
        if (service, operation) == ("ec2", "DeleteSnapshot"):
            self._check_snapshot_unused(str(params.get("SnapshotId", "")), region)
        if service == "ec2" and operation in ("RegisterImage", "RunInstances", "TerminateInstances"):
            if region != self.name:
                raise client_error("Unsupported", f"the simulated account runs {operation} in {self.name}")
            method = {
                "RegisterImage": self.register_image,
                "RunInstances": self.run_instances,
                "TerminateInstances": self.terminate_instances,
            }[operation]
            return method(params)
        if (service, operation) == ("ec2", "CopyImage"):
            return self.copy_image(params, region)
        if (service, operation) == ("ec2", "DescribeImages"):
            return self.describe_images(params, region)
        if (service, operation) == ("ec2", "EnableImageDeprecation"):
            return self.enable_image_deprecation(params, region)
        if (service, operation) == ("ec2", "ModifyImageAttribute"):
            self._check_launch_permission(params.get("LaunchPermission", {}))
            self._check_not_public_if_encrypted(params, region)
        return getattr(self.client(service, region), _snake_case(operation))(**params)

    # -- images after registration -----------------------------------------------------------------

    def _new_image(self, image_id: str, region: str) -> None:
        """Start a new image's life: pending for the polls the faults say, then available or failed."""
        if self.faults.pending_polls:
            self.pending[image_id] = self.faults.pending_polls
            self.faults.fired.add("pending_polls")
        if region in self.faults.fail_image_in:
            self.failed[image_id] = self.faults.fail_image_in[region]
            self.faults.fired.add(f"fail_image_in:{region}")

    def state(self, image_id: str) -> str:
        """The image's state as EC2 would report it now (without counting a poll)."""
        if self.pending.get(image_id, 0) > 0:
            return "pending"
        return "failed" if image_id in self.failed else "available"

    def describe_images(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        """DescribeImages: moto's answer with each image's modelled state and kept attributes."""
        answer = self.client("ec2", region).describe_images(**params)
        for image in answer.get("Images", []):
            image_id = image["ImageId"]
            image["State"] = self.state(image_id)
            if image_id in self.pending:
                self.pending[image_id] -= 1
            if image["State"] == "failed":
                image["StateReason"] = {"Code": "Client.SimulatedFault", "Message": self.failed[image_id]}
            image.pop("BootMode", None)  # moto says "uefi" for every image; EC2 only what was given
            image.update(self.attributes.get(image_id, {}))
        return answer

    def copy_image(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        """CopyImage into `region`: only from an available image, only to a name free there."""
        source_id, source_region = params.get("SourceImageId", ""), params.get("SourceRegion", "")
        try:
            self.client("ec2", source_region).describe_images(ImageIds=[source_id])
        except ClientError as err:
            raise client_error(
                "InvalidAMIID.NotFound", f"The image id '[{source_id}]' does not exist in {source_region}"
            ) from err
        state = self.state(source_id)
        if state != "available":
            raise client_error(
                "IncorrectState",
                f"Image {source_id} is {state}: only an available image can be copied",
                "CopyImage",
            )
        name = str(params.get("Name", ""))
        taken = self.client("ec2", region).describe_images(
            Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
        )["Images"]
        if taken:
            raise client_error(
                "InvalidAMIName.Duplicate",
                f"AMI name {name} is already in use by AMI {taken[0]['ImageId']} in {region}",
                "CopyImage",
            )
        source = get_backend("ec2")[ACCOUNT_ID][source_region].amis.get(source_id)
        from_snapshots = isinstance(source, registered_ebs_ami())
        if from_snapshots:
            copy_encryption_key(params, region, self.account_id, encrypted=False)  # refused before any copy
        specs = list(params.get("TagSpecifications", []))
        for spec in specs:
            if spec.get("ResourceType") not in ("image", "snapshot"):  # EC2 ref, CopyImage TagSpecifications
                raise client_error(
                    "InvalidParameterValue",
                    f"TagSpecifications ResourceType {spec.get('ResourceType')!r}: CopyImage tags only the "
                    "image and its snapshots",
                    "CopyImage",
                )
        moto_params = {
            key: value
            for key, value in params.items()
            if key not in ("Encrypted", "KmsKeyId", "TagSpecifications")
        }
        answer = self.client("ec2", region).copy_image(**moto_params)
        answer.pop("ResponseMetadata", None)
        self._new_image(answer["ImageId"], region)
        # A copy keeps what RegisterImage set; its deprecation time is its own.
        kept = self.attributes.get(source_id, {})
        self.attributes[answer["ImageId"]] = {key: kept[key] for key in KEPT_ATTRIBUTES if key in kept}
        snapshots: list[str] = []
        if from_snapshots:  # on snapshots of its own in its region
            mappings = self._make_ebs_copy(source, answer["ImageId"], source_region, region, params)
            self.attributes[answer["ImageId"]]["BlockDeviceMappings"] = mappings
            snapshots = [m["Ebs"]["SnapshotId"] for m in mappings if (m.get("Ebs") or {}).get("SnapshotId")]
        for spec in specs:
            resources = [answer["ImageId"]] if spec["ResourceType"] == "image" else snapshots
            if resources and spec.get("Tags"):
                self.client("ec2", region).create_tags(Resources=resources, Tags=list(spec["Tags"]))
        return answer

    def enable_image_deprecation(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        """EnableImageDeprecation (moto has none): EC2's limits, then DescribeImages shows the time."""
        image_id, text = params.get("ImageId", ""), str(params.get("DeprecateAt", ""))
        operation = "EnableImageDeprecation"
        try:
            self.client("ec2", region).describe_images(ImageIds=[image_id])
        except ClientError as err:
            raise client_error(
                "InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist", operation
            ) from err
        try:
            when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            raise client_error("InvalidParameterValue", f"Invalid DeprecateAt: {text}", operation) from None
        now = datetime.datetime.now(datetime.timezone.utc)
        permissions = self.client("ec2", region).describe_image_attribute(
            ImageId=image_id, Attribute="launchPermission"
        )["LaunchPermissions"]
        years = 2 if {"Group": "all"} in permissions else 10
        if not now < when <= now + datetime.timedelta(days=365 * years):
            raise client_error(
                "InvalidParameterValue",
                f"DeprecateAt must be in the future and at most {years} years from now",
                operation,
            )
        # EC2 rounds to the minute and reports milliseconds.
        minute = (when + datetime.timedelta(seconds=30)).replace(second=0)
        self.attributes.setdefault(image_id, {})["DeprecationTime"] = minute.strftime(
            "%Y-%m-%dT%H:%M:00.000Z"
        )
        return {"Return": True}

    @staticmethod
    def _check_not_public_if_encrypted(params: dict[str, Any], region: str) -> None:
        """EC2 makes no image with encrypted snapshots public (AMI user guide, "Make your AMI public").
        The error code is not documented; the simulator's is InvalidParameter."""
        if {"Group": "all"} not in params.get("LaunchPermission", {}).get("Add", []):
            return
        ami = get_backend("ec2")[ACCOUNT_ID][region].amis.get(str(params.get("ImageId", "")))
        mappings = getattr(ami, "registered_mappings", [])
        if any((mapping.get("Ebs") or {}).get("Encrypted") for mapping in mappings):
            raise client_error(
                "InvalidParameter",
                f"{params['ImageId']} has encrypted snapshots: an image with encrypted snapshots cannot be "
                "made public",
                "ModifyImageAttribute",
            )

    @staticmethod
    def _check_launch_permission(permission: dict[str, Any]) -> None:
        for entry in [*permission.get("Add", []), *permission.get("Remove", [])]:
            keys = list(entry)
            shape = LAUNCH_PERMISSION_SHAPES.get(keys[0]) if len(keys) == 1 else None
            if shape is None or not shape.fullmatch(str(entry[keys[0]])):
                raise client_error(
                    "InvalidAMIAttributeItemValue",
                    f"Invalid attribute item value {entry!r} for launchPermission: give one of UserId "
                    "(12 digits), Group (all), OrganizationArn or OrganizationalUnitArn",
                    "ModifyImageAttribute",
                )

    def register_image(self, params: dict[str, Any]) -> dict[str, Any]:
        """RegisterImage for an S3 bundle or from EBS snapshots, refusing what EC2 refuses."""
        if self.faults.reject_register:
            self.faults.fired.add("reject_register")
            raise client_error(self.faults.reject_register, "the request was rejected (injected fault)")
        name = str(params.get("Name", ""))
        if not AMI_NAME.fullmatch(name):
            raise client_error("InvalidAMIName.Malformed", f"AMI name {name!r} is not valid")
        existing = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
        if existing["Images"]:
            raise client_error(
                "InvalidAMIName.Duplicate",
                f"AMI name {name} is already in use by AMI {existing['Images'][0]['ImageId']}",
            )
        from_snapshots = any(
            (m.get("Ebs") or {}).get("SnapshotId") for m in params.get("BlockDeviceMappings", [])
        )
        if from_snapshots or (params.get("RootDeviceName") and not params.get("ImageLocation")):
            return self._register_ebs_image(name, params)
        location = str(params.get("ImageLocation", ""))
        manifest = self._check_bundle(location)
        image_id = self.ec2.register_image(
            Name=name, **({"Description": params["Description"]} if params.get("Description") else {})
        )["ImageId"]
        ami = get_backend("ec2")[ACCOUNT_ID][self.name].amis[image_id]
        ami.image_location = location
        ami.root_device_type = "instance-store"
        ami.architecture = params.get("Architecture", manifest.architecture)
        ami.virtualization_type = params.get("VirtualizationType", "paravirtual")
        ami.kernel_id = params.get("KernelId", manifest.kernel_id)
        self.attributes[image_id] = {key: params[key] for key in KEPT_ATTRIBUTES if key in params}
        # DescribeImages shows the mappings RegisterImage gave, or none (moto would show an EBS root).
        self.attributes[image_id]["BlockDeviceMappings"] = [
            dict(mapping) for mapping in params.get("BlockDeviceMappings", ())
        ]
        self._new_image(image_id, self.name)
        return {"ImageId": image_id}

    def _register_ebs_image(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """RegisterImage from snapshots: checked as EC2 checks it, then an EBS-backed image in moto."""
        mappings = check_ebs_registration(params, self.name, ACCOUNT_ID)
        description = {"Description": params["Description"]} if params.get("Description") else {}
        image_id = self.ec2.register_image(Name=name, **description)["ImageId"]
        tags = [tag for spec in params.get("TagSpecifications", []) for tag in spec.get("Tags", [])]
        if tags:  # moto's RegisterImage drops TagSpecifications
            self.ec2.create_tags(Resources=[image_id], Tags=tags)
        ami = _on_snapshots(image_id, self.name, mappings, params["RootDeviceName"])
        ami.architecture = params.get("Architecture", "i386")
        ami.virtualization_type = params.get("VirtualizationType", "paravirtual")
        self.attributes[image_id] = {key: params[key] for key in KEPT_ATTRIBUTES if key in params}
        # DescribeImages shows the mappings with the values EC2 fills in (size, type, encryption).
        self.attributes[image_id]["BlockDeviceMappings"] = mappings
        self._new_image(image_id, self.name)
        return {"ImageId": image_id}

    def _make_ebs_copy(
        self, source: Any, image_id: str, source_region: str, region: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The copy moto made of an EBS-backed image, on copies of the source's snapshots in `region`."""
        mappings = copied_mappings(self.ebs_direct, source, source_region, region, params)
        _on_snapshots(image_id, region, mappings, source.root_device_name)
        return mappings

    def _check_snapshot_unused(self, snapshot_id: str, region: str) -> None:
        """DeleteSnapshot: EC2 refuses while a registered image's mappings use the snapshot."""
        for image_id, ami in get_backend("ec2")[ACCOUNT_ID][region].amis.items():
            used = [(m.get("Ebs") or {}).get("SnapshotId") for m in getattr(ami, "registered_mappings", [])]
            if snapshot_id in used:
                raise client_error(
                    "InvalidSnapshot.InUse",
                    f"The snapshot {snapshot_id} is currently in use by {image_id}",
                    "DeleteSnapshot",
                )

    def _check_bundle(self, location: str) -> Manifest:
        bucket, _, key = location.partition("/")
        located = self.bucket_region(bucket) if bucket else None
        if located is None:
            raise client_error(
                "InvalidManifest", f"Failed to read the manifest {location}: no bucket {bucket!r}"
            )
        if located != self.name:
            raise client_error(
                "InvalidManifest",
                f"The bucket {bucket} of the manifest is in {located}; register images in {located} "
                f"or upload the bundle to a bucket in {self.name}",
            )
        try:
            text = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except ClientError:
            raise client_error(
                "InvalidManifest", f"Failed to read the manifest {location}: it does not exist"
            ) from None
        try:
            manifest = parse_manifest(text, source=location)
        except (BundleError, UnicodeDecodeError) as err:
            raise client_error("InvalidManifest", f"The manifest {location} is unparsable: {err}") from None
        if manifest.user != self.account_id:
            raise client_error(
                "AuthFailure", f"The manifest's user {manifest.user} is not this account ({self.account_id})"
            )
        if not any(self._signed_by(manifest, cert) for cert in self.signing_certificates()):
            raise client_error(
                "InvalidManifest",
                "The manifest signature does not verify against any signing certificate of the account",
            )
        for field_name in ("ec2_encrypted_key", "ec2_encrypted_iv"):
            plain = decrypt_with_key(self._ec2_key, bytes.fromhex(getattr(manifest.keys, field_name)))
            if not plain or not re.fullmatch(rb"[0-9a-f]{32}", plain):
                raise client_error(
                    "InvalidManifest",
                    f"The manifest's {field_name} does not open with the EC2 key of "
                    f"{self.name}: the bundle was made with another region's EC2 certificate",
                )
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        with tempfile.TemporaryDirectory(prefix="amidsl-register-") as tmp:
            for part in manifest.parts:
                part_key = f"{folder}/{part.filename}" if folder else part.filename
                try:
                    body = self.s3.get_object(Bucket=bucket, Key=part_key)["Body"].read()
                except ClientError:
                    continue  # missing: check_part_list names it below
                (Path(tmp) / part.filename).write_bytes(body)
            try:
                check_part_list(manifest, Path(tmp))
                check_part_digests(manifest, Path(tmp))
            except BundleError as err:
                raise client_error(
                    "InvalidManifest", f"The bundle's parts are not as the manifest says: {err}"
                ) from None
        return manifest

    @staticmethod
    def _signed_by(manifest: Manifest, cert_pem: str) -> bool:
        try:
            check_signature_of(manifest, cert_pem)
        except BundleError:
            return False
        return True

    # -- nodes -------------------------------------------------------------------------------------

    def run_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        """RunInstances: moto's record, plus a new FakeNode for each instance."""
        if self.node_factory is None:
            raise client_error(
                "Unsupported", "this region has no node template to launch from", "RunInstances"
            )
        reservation = self.ec2.run_instances(**params)
        for instance in reservation["Instances"]:
            node = self.node_factory()
            node.hostname = instance["InstanceId"]
            node.region = self
            self.nodes[instance["InstanceId"]] = node
        return reservation

    def terminate_instances(self, params: dict[str, Any]) -> dict[str, Any]:
        """TerminateInstances: moto's record, and the nodes end."""
        result = self.ec2.terminate_instances(**params)
        for instance_id in params.get("InstanceIds", []):
            node = self.nodes.pop(instance_id, None)
            if node is not None:
                node.close()
        return result

    def node(self, instance_id: str) -> FakeNode:
        """The FakeNode behind a running instance."""
        return self.nodes[instance_id]


def _on_snapshots(image_id: str, region: str, mappings: list[dict[str, Any]], root_device: str) -> Any:
    """Make moto's image `image_id` the EBS-backed image these mappings describe; moto's image."""
    backend = get_backend("ec2")[ACCOUNT_ID][region]
    ami = backend.amis[image_id]
    # moto makes a root snapshot for every image it registers or copies; this one has the mappings'.
    backend.snapshots.pop(ami.ebs_snapshot.id, None)
    ami.__class__ = registered_ebs_ami()
    ami.registered_mappings = mappings
    ami.root_device_type = "ebs"
    ami.root_device_name = root_device
    for mapping in mappings:
        snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
        if snapshot_id:
            backend.snapshots[snapshot_id].from_ami = image_id  # moto refuses to delete it then
    return ami


def _snake_case(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class StrictClient:
    """A boto3 client's interface over FakeRegion.call: `client.put_snapshot_block(**params)` makes the
    region's checked PutSnapshotBlock. `meta` is the boto3 client's (region name, service model)."""

    def __init__(self, region: FakeRegion, service: str, region_name: str) -> None:
        self._region = region
        self._service = service
        self._region_name = region_name
        self.meta = region.client(service, region_name).meta

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        operation = self.meta.method_to_api_mapping.get(method)
        if operation is None:
            raise AttributeError(f"{self._service} has no operation {method}")

        def call(**params: Any) -> dict[str, Any]:
            return self._region.call(self._service, operation, params, self._region_name)

        return call


class PresignClient:
    """A boto3 S3 client's presigning, remembering each URL's signature (so a fault can expire it)."""

    def __init__(self, client: Any, signatures: set[str]) -> None:
        self.client = client
        self.signatures = signatures

    def generate_presigned_url(self, operation: str, **kwargs: Any) -> str:
        """A presigned URL, as boto3 makes it, and never one issued before.

        X-Amz-Date has whole seconds: an object presigned again within the same second would get the
        very URL it had, where a real refresh comes later and gets a new one.
        """
        while True:
            url = self.client.generate_presigned_url(operation, **kwargs)
            signature = _signature(urllib.parse.urlsplit(url).query)
            if signature not in self.signatures:
                self.signatures.add(signature)
                return url
            time.sleep(0.05)


def _signature(query: str) -> str:
    return urllib.parse.parse_qs(query).get("X-Amz-Signature", [""])[0]


class FaultyS3Server(ThreadedMotoServer):
    """moto's S3 over HTTP, answering presigned PUTs with the region's injected faults first."""

    def __init__(self, region: FakeRegion) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.region = region

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, self._with_faults(app), True, **_moto_request_handler()
        )
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.02)  # stop() waits up to one interval (default 0.5 s)

    def _with_faults(self, app: Any) -> Any:
        def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ["REQUEST_METHOD"] == "PUT":
                key = environ.get("PATH_INFO", "").lstrip("/").partition("/")[2]
                signature = _signature(environ.get("QUERY_STRING", ""))
                injected = self.region.injected_put_error(key, signature)
                if injected is not None:
                    # Read the body first: a client still sending it would see a reset, not the answer.
                    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                    status, code, message = injected
                    body = (
                        f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code>"
                        f"<Message>{message}</Message><RequestId>SIMULATED</RequestId></Error>"
                    ).encode()
                    reason = HTTPStatus(status).phrase
                    start_response(f"{status} {reason}", [("Content-Type", "application/xml")])
                    return [body]
            return app(environ, start_response)

        return answer
