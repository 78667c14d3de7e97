"""The EBS direct APIs and EBS-backed RegisterImage as AWS checks them, on top of moto's state.

moto 5 keeps the blocks of a snapshot but checks nothing: it reports a block size of 512 bytes, takes any
checksum, completes a snapshot with any block count, ignores ClientToken and Timeout, leaves a volume
behind for every snapshot, says `completed` in DescribeSnapshots from the start, and registers any image
with one made-up root mapping. `EbsDirect` answers StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
ListSnapshotBlocks and GetSnapshotBlock as the EBS direct APIs reference describes them (block size
524288, SHA-256 checksums, the LINEAR aggregate, idempotent ClientToken, Timeout), with the API's error
codes and reasons (the ValidationException reasons of the service model); the messages are the
simulator's own. `register_ebs_image` registers an image from snapshots, refusing what RegisterImage
refuses. Every check cites its source in a comment: "API ref" is the EBS direct APIs reference for the
operation, "EC2 ref" the EC2 API reference for RegisterImage and its BlockDeviceMapping/EbsBlockDevice.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from moto.backends import get_backend

_MOTO_ACCOUNT = "123456789012"  # moto keeps the simulated account's state under its own account id
BLOCK_SIZE = 524288  # API ref: "A block index is a logical index in units of 512 KiB blocks"
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
MAX_VOLUME_GIB = 65536  # API ref, StartSnapshot VolumeSize: "The maximum size is 65536 GiB (64 TiB)"
DEFAULT_TIMEOUT_MINUTES = 60  # API ref, StartSnapshot Timeout: "defaults to 60 minutes"
LIST_PAGE_DEFAULT = 10000  # API ref, ListSnapshotBlocks MaxResults: 100 to 10000

# EC2 ref, EbsBlockDevice VolumeType; st1 and sc1 exist but cannot be a boot volume (EBS user guide,
# "Amazon EBS volume types": "cannot be used as boot volumes").
VOLUME_TYPES = ("standard", "io1", "io2", "gp2", "sc1", "st1", "gp3")
BOOT_VOLUME_TYPES = ("standard", "io1", "io2", "gp2", "gp3")
# EC2 ref, EbsBlockDevice VolumeSize: the largest volume of each type, GiB.
MAX_SIZE_GIB = {"standard": 1024, "gp2": 16384, "gp3": 16384, "io1": 16384, "io2": 65536}
ARCHITECTURES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")  # EC2 ref, Architecture
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")  # EC2 ref, BootMode
DEVICE_NAME = re.compile(r"/dev/(sd[a-z]{1,2}[0-9]{0,2}|xvd[a-z]{1,2}[0-9]{0,2})")
SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]+")  # API ref: SnapshotId pattern ^snap-[0-9a-f]+$
CHECKSUM = re.compile(r"[A-Za-z0-9+/=]{1,64}")  # API ref: Checksum pattern, at most 64 characters
KMS_KEY_ARN = re.compile(r"arn:aws[a-z\-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+")
HTTP_STATUS = {"ValidationException": 400, "ResourceNotFoundException": 404, "ConflictException": 409}


def ebs_error(code: str, message: str, operation: str, reason: str = "") -> ClientError:
    """The exception boto3 raises for an EBS direct API error (a ValidationException has a Reason)."""
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "Message": message,
        "ResponseMetadata": {"HTTPStatusCode": HTTP_STATUS.get(code, 400)},
    }
    if reason:
        response["Reason"] = reason
    return ClientError(response, operation)  # type: ignore[arg-type]


def ec2_error(code: str, message: str, operation: str = "RegisterImage") -> ClientError:
    """The exception boto3 raises for an EC2 API error."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def aws_managed_key(region: str, account_id: str) -> str:
    """The ARN of the account's AWS managed key for EBS (alias aws/ebs) in `region`: one made-up key id
    per account and region, as EC2 reports it for snapshots encrypted without a key of their own."""
    key_id = uuid.uuid5(uuid.NAMESPACE_URL, f"aws/ebs:{account_id}:{region}")
    return f"arn:aws:kms:{region}:{account_id}:key/{key_id}"


def block_checksum(data: bytes) -> str:
    """Base64 SHA-256 of a block, as PutSnapshotBlock's Checksum."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def linear_checksum(checksums_by_index: dict[int, str]) -> str:
    """The LINEAR aggregate: SHA-256 over the blocks' SHA-256 digests in ascending block index, Base64.

    API ref (CompleteSnapshot Checksum): arrange the blocks' checksums in ascending order of block index,
    concatenate them, and take SHA-256 of the whole; the digests are concatenated as bytes, which is what
    awslabs' coldsnap sends and the service accepts.
    """
    total = hashlib.sha256()
    for index in sorted(checksums_by_index):
        total.update(base64.b64decode(checksums_by_index[index]))
    return base64.b64encode(total.digest()).decode("ascii")


@functools.cache
def registered_ebs_ami() -> type:
    """The class RegisteredEbsAmi: moto's image with the block device mappings it was registered with
    (moto makes one up). Made on first use: moto's EC2 takes a third of a second to load, which a
    simulation spends while the node program bundles."""
    from moto.ec2.models.amis import Ami

    class RegisteredEbsAmi(Ami):
        registered_mappings: list[dict[str, Any]]  # set on registration

        @property
        def block_device_mappings(self) -> list[dict[str, Any]]:  # type: ignore[override]
            """What DescribeImages reports: the mappings as registered, with EC2's defaults filled in."""
            return self.registered_mappings

    return RegisteredEbsAmi


@dataclass
class PendingSnapshot:
    """What the EBS direct APIs keep about a snapshot beyond moto's blocks."""

    checksums: dict[int, str] = field(default_factory=dict)  # block index -> Base64 SHA-256
    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES
    last_activity: float = 0.0  # the simulated clock's minute of the last start or put


class EbsDirect:
    """The strict EBS direct APIs of one simulated account, all regions."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.snapshots: dict[str, PendingSnapshot] = {}
        # ClientToken -> (the request's parameters without the token, the first answer).
        self.tokens: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self.minutes = 0.0  # a simulated clock for Timeout; it moves only in let_minutes_pass

    # -- moto's state ------------------------------------------------------------------------------

    @staticmethod
    def _moto_ebs(region: str) -> Any:
        return get_backend("ebs")[_MOTO_ACCOUNT][region]

    @staticmethod
    def _moto_ec2(region: str) -> Any:
        return get_backend("ec2")[_MOTO_ACCOUNT][region]

    def _snapshot(self, snapshot_id: str, region: str, operation: str) -> Any:
        if not SNAPSHOT_ID.fullmatch(snapshot_id or ""):
            raise ebs_error(
                "ValidationException",
                f"Invalid snapshot id {snapshot_id!r}: give an id like snap-0123456789abcdef0",
                operation,
                "INVALID_SNAPSHOT_ID",
            )
        found = self._moto_ebs(region).snapshots.get(snapshot_id)
        if found is None or snapshot_id not in self._moto_ec2(region).snapshots:
            raise ebs_error(
                "ResourceNotFoundException",
                f"The snapshot {snapshot_id} does not exist in {region}",
                operation,
                "SNAPSHOT_NOT_FOUND",
            )
        return found

    def _set_state(self, snapshot_id: str, region: str, state: str) -> None:
        """The snapshot's status in the EBS direct APIs and its State in EC2's DescribeSnapshots."""
        self._moto_ebs(region).snapshots[snapshot_id].status = state
        ec2_snapshot = self._moto_ec2(region).snapshots.get(snapshot_id)
        if ec2_snapshot is not None:
            ec2_snapshot.status = state

    # -- the operations ----------------------------------------------------------------------------

    def call(
        self, operation: str, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """One EBS direct API operation; `moto_call(**params)` makes moto's own call of it."""
        method = {
            "StartSnapshot": self.start_snapshot,
            "PutSnapshotBlock": self.put_snapshot_block,
            "CompleteSnapshot": self.complete_snapshot,
            "ListSnapshotBlocks": self.list_snapshot_blocks,
            "GetSnapshotBlock": self.get_snapshot_block,
        }.get(operation)
        if method is None:
            raise ebs_error(
                "ValidationException",
                f"the simulated region does not model the EBS direct API {operation}",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        self._expire(region)
        return method(params, region, moto_call)

    def start_snapshot(
        self, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """StartSnapshot: a new pending snapshot of VolumeSize GiB (the same one again for a ClientToken)."""
        operation = "StartSnapshot"
        token = str(params.get("ClientToken") or "")
        request = {key: value for key, value in params.items() if key != "ClientToken"}
        if token:
            # API ref / user guide "Idempotency for StartSnapshot": the same token with the same
            # parameters returns the first result; with other parameters, ConflictException.
            if len(token) > 64:
                raise ebs_error(
                    "ValidationException",
                    "ClientToken is longer than 64 characters",
                    operation,
                    "INVALID_PARAMETER_VALUE",
                )
            earlier = self.tokens.get((region, token))
            if earlier is not None:
                if earlier[0] != request:
                    raise ebs_error(
                        "ConflictException",
                        "The request uses the same client token as a previous, but non-identical request",
                        operation,
                    )
                return dict(earlier[1])
        size = params.get("VolumeSize")
        if not isinstance(size, int) or not 1 <= size <= MAX_VOLUME_GIB:
            raise ebs_error(
                "ValidationException",
                f"VolumeSize {size!r} is not a size in GiB from 1 to {MAX_VOLUME_GIB}",
                operation,
                "INVALID_VOLUME_SIZE",
            )
        timeout = params.get("Timeout", DEFAULT_TIMEOUT_MINUTES)
        if not isinstance(timeout, int) or not 10 <= timeout <= 4320:  # API ref: Timeout 10 to 4320
            raise ebs_error(
                "ValidationException",
                f"Timeout {timeout!r} is not a number of minutes from 10 to 4320",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        if len(str(params.get("Description", ""))) > 255:  # API ref: Description at most 255
            raise ebs_error(
                "ValidationException",
                "Description is longer than 255 characters",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        for tag in params.get("Tags", []):
            key = str(tag.get("Key", ""))
            if not key or len(key) > 127 or key.startswith("aws:") or len(str(tag.get("Value", ""))) > 255:
                raise ebs_error(
                    "ValidationException",
                    f"Invalid tag {tag!r}: a key of 1 to 127 characters not starting with aws:, "
                    "a value of at most 255",
                    operation,
                    "INVALID_TAG",
                )
        if params.get("ParentSnapshotId"):
            # Not modelled: refuse rather than pretend (a green simulation must mean AWS would agree).
            raise ebs_error(
                "ValidationException",
                "the simulated region does not model ParentSnapshotId",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        kms_key = self._encryption_key(params, region, operation)
        # moto takes neither Encrypted nor KmsKeyArn: the snapshot's encryption is set below.
        answer = moto_call(
            **{key: value for key, value in request.items() if key not in ("Encrypted", "KmsKeyArn")}
        )
        answer.pop("ResponseMetadata", None)
        snapshot_id = answer["SnapshotId"]
        moto_ebs = self._moto_ebs(region).snapshots[snapshot_id]
        moto_ebs.block_size = BLOCK_SIZE
        ec2 = self._moto_ec2(region)
        # moto makes a volume for the snapshot; the EBS direct APIs make none, and EC2 reports such a
        # snapshot's VolumeId as vol-ffffffff.
        volume = ec2.volumes.pop(ec2.snapshots[snapshot_id].volume.id, None)
        if volume is not None:
            volume.id = "vol-ffffffff"
        if kms_key:
            ec2.snapshots[snapshot_id].encrypted = True
            ec2.snapshots[snapshot_id].kms_key_id = kms_key
        self._set_state(snapshot_id, region, "pending")
        self.snapshots[snapshot_id] = PendingSnapshot(timeout_minutes=timeout, last_activity=self.minutes)
        answer["BlockSize"] = BLOCK_SIZE
        answer["Status"] = "pending"
        if token:
            self.tokens[(region, token)] = (request, dict(answer))
        return answer

    def _encryption_key(self, params: dict[str, Any], region: str, operation: str) -> str:
        """The key ARN StartSnapshot's Encrypted/KmsKeyArn encrypt with, or "" for an unencrypted snapshot.

        EBS user guide, "Encryption outcomes for EBS direct APIs", no parent snapshot (encryption by
        default, an account setting, is not modelled: off): Encrypted true encrypts with KmsKeyArn or
        else the AWS managed key aws/ebs; a KmsKeyArn without Encrypted true fails. What the simulator
        cannot check: that the key exists, is enabled and symmetric, and that the caller may use it.
        """
        encrypted, key = params.get("Encrypted"), params.get("KmsKeyArn")
        if not _bool_or_absent(encrypted):
            raise ebs_error(
                "ValidationException", "Encrypted must be true or false", operation, "INVALID_PARAMETER_VALUE"
            )
        if key is None:
            return aws_managed_key(region, self.account_id) if encrypted else ""
        if not encrypted:
            raise ebs_error(
                "ValidationException",
                "KmsKeyArn is given without Encrypted true: give Encrypted true to encrypt with the key",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        parts = str(key).split(":")
        # API ref, KmsKeyArn pattern arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*; a KMS key is regional.
        if not KMS_KEY_ARN.fullmatch(str(key)) or parts[3] != region:
            raise ebs_error(
                "ValidationException",
                f"KmsKeyArn {key!r} is not the ARN of a KMS key in {region}",
                operation,
                "INVALID_CUSTOMER_KEY",
            )
        return str(key)

    def put_snapshot_block(
        self, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """PutSnapshotBlock: one 512 KiB block of a pending snapshot, its SHA-256 checked."""
        operation = "PutSnapshotBlock"
        snapshot_id = str(params.get("SnapshotId", ""))
        moto_snapshot = self._snapshot(snapshot_id, region, operation)
        if moto_snapshot.status != "pending":  # API ref: "The target snapshot must be in the pending state"
            raise ebs_error(
                "ValidationException",
                f"The snapshot {snapshot_id} is {moto_snapshot.status}, not pending: blocks can only be "
                "written to a pending snapshot",
                operation,
                "INVALID_SNAPSHOT_ID",
            )
        data = params.get("BlockData", b"")
        if hasattr(data, "read"):
            data = data.read()
        index = params.get("BlockIndex")
        blocks = moto_snapshot.volume_size * BLOCKS_PER_GIB
        if not isinstance(index, int) or not 0 <= index < blocks:
            raise ebs_error(
                "ValidationException",
                f"Block index {index!r} is outside the snapshot's {moto_snapshot.volume_size} GiB "
                f"(blocks 0 to {blocks - 1})",
                operation,
                "INVALID_BLOCK",
            )
        # API ref, DataLength: "Currently, the only supported size is 524288 bytes."
        if params.get("DataLength") != BLOCK_SIZE or len(data) != BLOCK_SIZE:
            raise ebs_error(
                "ValidationException",
                f"DataLength {params.get('DataLength')!r} with {len(data)} bytes of data: both must be "
                f"{BLOCK_SIZE}",
                operation,
                "INVALID_BLOCK",
            )
        if params.get("ChecksumAlgorithm") != "SHA256":  # API ref: "the only supported algorithm is SHA256"
            raise ebs_error(
                "ValidationException",
                f"ChecksumAlgorithm {params.get('ChecksumAlgorithm')!r}: only SHA256 is supported",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        progress = params.get("Progress", 0)
        if not isinstance(progress, int) or not 0 <= progress <= 100:  # API ref: Progress 0 to 100
            raise ebs_error(
                "ValidationException",
                f"Progress {progress!r} is not a percentage",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        checksum = str(params.get("Checksum", ""))
        # API ref / user guide "Use EBS direct APIs checksums": the checksum is validated against one
        # generated by Amazon EBS; "If the checksums do not correspond, the request fails."
        if not CHECKSUM.fullmatch(checksum) or checksum != block_checksum(data):
            raise ebs_error(
                "ValidationException",
                f"The checksum of block {index} does not match its data: give the Base64 SHA-256 of "
                "the block's 524288 bytes",
                operation,
                "INVALID_BLOCK",
            )
        answer = moto_call(**{**params, "BlockData": data})
        answer.pop("ResponseMetadata", None)
        state = self.snapshots.setdefault(snapshot_id, PendingSnapshot())
        state.checksums[index] = checksum
        state.last_activity = self.minutes
        return answer

    def complete_snapshot(
        self, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """CompleteSnapshot: seal a pending snapshot whose block count (and aggregate) is right."""
        operation = "CompleteSnapshot"
        snapshot_id = str(params.get("SnapshotId", ""))
        moto_snapshot = self._snapshot(snapshot_id, region, operation)
        if moto_snapshot.status != "pending":
            raise ebs_error(
                "ValidationException",
                f"The snapshot {snapshot_id} is {moto_snapshot.status}, not pending",
                operation,
                "INVALID_SNAPSHOT_ID",
            )
        state = self.snapshots.setdefault(snapshot_id, PendingSnapshot())
        count = params.get("ChangedBlocksCount")
        written = len(state.checksums)
        # API ref: ChangedBlocksCount (required) "The number of blocks that were written to the snapshot."
        if count != written:
            raise ebs_error(
                "ValidationException",
                f"ChangedBlocksCount is {count!r}, but {written} block(s) were written to {snapshot_id}",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        checksum = params.get("Checksum")
        if checksum is not None:
            if params.get("ChecksumAlgorithm") != "SHA256" or params.get("ChecksumAggregationMethod") != (
                "LINEAR"
            ):
                raise ebs_error(
                    "ValidationException",
                    "an aggregate Checksum needs ChecksumAlgorithm SHA256 and ChecksumAggregationMethod "
                    "LINEAR (the only ones supported)",
                    operation,
                    "INVALID_PARAMETER_VALUE",
                )
            if checksum != linear_checksum(state.checksums):
                raise ebs_error(
                    "ValidationException",
                    f"The aggregate checksum does not match the {written} block(s) written to "
                    f"{snapshot_id}: give the Base64 SHA-256 of their SHA-256 digests in block order",
                    operation,
                    "INVALID_PARAMETER_VALUE",
                )
        answer = moto_call(SnapshotId=snapshot_id, ChangedBlocksCount=count)
        answer.pop("ResponseMetadata", None)
        self._set_state(snapshot_id, region, "completed")
        return {"Status": "completed"}

    def _readable(self, snapshot_id: str, region: str, operation: str) -> Any:
        moto_snapshot = self._snapshot(snapshot_id, region, operation)
        if moto_snapshot.status != "completed":
            raise ebs_error(
                "ValidationException",
                f"The snapshot {snapshot_id} is {moto_snapshot.status}: only a completed snapshot is read",
                operation,
                "INVALID_SNAPSHOT_ID",
            )
        return moto_snapshot

    def list_snapshot_blocks(
        self, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """ListSnapshotBlocks: the written blocks in ascending index, a page at a time (moto: any order)."""
        operation = "ListSnapshotBlocks"
        snapshot_id = str(params.get("SnapshotId", ""))
        moto_snapshot = self._readable(snapshot_id, region, operation)
        page = params.get("MaxResults", LIST_PAGE_DEFAULT)
        if not isinstance(page, int) or not 100 <= page <= 10000:
            raise ebs_error(
                "ValidationException",
                f"MaxResults {page!r} is not from 100 to 10000",
                operation,
                "INVALID_PARAMETER_VALUE",
            )
        start = int(params.get("StartingBlockIndex", 0))
        token = params.get("NextToken")
        if token is not None:
            if not re.fullmatch(r"block-[0-9]+", str(token)):
                raise ebs_error("ValidationException", "Invalid NextToken", operation, "INVALID_PAGE_TOKEN")
            start = max(start, int(str(token).split("-")[1]))
        indexes = sorted(index for index in moto_snapshot.blocks if index >= start)
        answer: dict[str, Any] = {
            "Blocks": [
                {"BlockIndex": index, "BlockToken": moto_snapshot.blocks[index].block_token}
                for index in indexes[:page]
            ],
            "VolumeSize": moto_snapshot.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if len(indexes) > page:
            answer["NextToken"] = f"block-{indexes[page]}"
        return answer

    def get_snapshot_block(
        self, params: dict[str, Any], region: str, moto_call: Callable[..., dict[str, Any]]
    ) -> dict[str, Any]:
        """GetSnapshotBlock: one written block, by the token ListSnapshotBlocks gave for it."""
        operation = "GetSnapshotBlock"
        snapshot_id = str(params.get("SnapshotId", ""))
        moto_snapshot = self._readable(snapshot_id, region, operation)
        index = params.get("BlockIndex")
        block = moto_snapshot.blocks.get(index)
        if block is None or params.get("BlockToken") != block.block_token:
            raise ebs_error(
                "ValidationException",
                f"Block {index!r} of {snapshot_id} has no such token: list the blocks for their tokens",
                operation,
                "INVALID_BLOCK_TOKEN",
            )
        answer = moto_call(**params)
        answer.pop("ResponseMetadata", None)
        return answer

    # -- CopyImage's snapshot copies ---------------------------------------------------------------

    def copy_snapshot(
        self, snapshot_id: str, source_region: str, region: str, kms_key: str, description: str
    ) -> str:
        """A completed copy of a completed snapshot in `region` (as CopyImage makes for each of an
        image's snapshots), encrypted with `kms_key` if one is given; its id."""
        source = self._moto_ebs(source_region).snapshots[snapshot_id]
        copy = self._moto_ebs(region).start_snapshot(
            volume_size=source.volume_size, tags=None, description=description
        )
        copy.block_size = BLOCK_SIZE
        copy.blocks = dict(source.blocks)  # blocks are never changed once written
        ec2 = self._moto_ec2(region)
        ec2.volumes.pop(ec2.snapshots[copy.snapshot_id].volume.id, None)
        ec2.snapshots[copy.snapshot_id].volume.id = "vol-ffffffff"
        if kms_key:
            ec2.snapshots[copy.snapshot_id].encrypted = True
            ec2.snapshots[copy.snapshot_id].kms_key_id = kms_key
        self._set_state(copy.snapshot_id, region, "completed")
        return copy.snapshot_id

    # -- Timeout -----------------------------------------------------------------------------------

    def let_minutes_pass(self, minutes: float) -> None:
        """Move the simulated clock on (every region): pending snapshots idle past Timeout end in error."""
        self.minutes += minutes

    def _expire(self, region: str) -> None:
        # API ref, StartSnapshot Timeout: the snapshot is cancelled if no block is written, or it is not
        # completed after the last block, within Timeout minutes.
        for snapshot_id, state in self.snapshots.items():
            moto_snapshot = self._moto_ebs(region).snapshots.get(snapshot_id)
            if moto_snapshot is None or moto_snapshot.status != "pending":
                continue
            if self.minutes - state.last_activity >= state.timeout_minutes:
                self._set_state(snapshot_id, region, "error")


# -- RegisterImage from snapshots -------------------------------------------------------------------


def _bool_or_absent(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def check_ebs_registration(params: dict[str, Any], region: str, account_id: str) -> list[dict[str, Any]]:
    """Refuse an EBS-backed RegisterImage as EC2 would; the block device mappings as DescribeImages will
    show them (EC2's defaults filled in)."""
    ec2 = get_backend("ec2")[_MOTO_ACCOUNT][region]
    if params.get("ImageLocation"):
        raise ec2_error(
            "InvalidParameterCombination",
            "ImageLocation registers an instance-store image from a manifest; an EBS-backed image is "
            "registered from snapshots in BlockDeviceMappings, without ImageLocation",
        )
    root = str(params.get("RootDeviceName", ""))
    if not root:  # EC2 ref / user guide "Create an AMI from a snapshot": the root device name is given
        raise ec2_error(
            "MissingParameter",
            "RootDeviceName is required to register an image from a snapshot (e.g. /dev/xvda)",
        )
    mappings = list(params.get("BlockDeviceMappings", []))
    names = [str(mapping.get("DeviceName", "")) for mapping in mappings]
    if root not in names:
        raise ec2_error(
            "InvalidBlockDeviceMapping",
            f"The root device name {root} has no block device mapping: map it to the root snapshot",
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ec2_error(
            "InvalidBlockDeviceMapping", f"The device name(s) {', '.join(duplicates)} are mapped twice"
        )
    described = []
    for mapping in mappings:
        device = str(mapping.get("DeviceName", ""))
        if not DEVICE_NAME.fullmatch(device):
            raise ec2_error(
                "InvalidBlockDeviceMapping",
                f"Invalid device name {device!r}: use /dev/sd[a-z] or /dev/xvd[a-z] names "
                "(NVMe names are what an instance sees, not what a mapping says)",
            )
        ebs = mapping.get("Ebs")
        if device == root and not (ebs and ebs.get("SnapshotId")):
            raise ec2_error(
                "InvalidBlockDeviceMapping",
                f"The root device {root} must be an EBS volume from a snapshot (Ebs.SnapshotId)",
            )
        if ebs is None:
            if mapping.get("VirtualName") is None and mapping.get("NoDevice") is None:
                raise ec2_error(
                    "InvalidBlockDeviceMapping",
                    f"The mapping of {device} gives none of Ebs, VirtualName or NoDevice",
                )
            described.append(dict(mapping))
            continue
        described.append(
            {"DeviceName": device, "Ebs": _check_ebs_device(ebs, device, device == root, ec2, account_id)}
        )
    architecture = params.get("Architecture", "i386")  # EC2 ref: the default for EBS-backed is i386
    if architecture not in ARCHITECTURES:
        raise ec2_error("InvalidParameterValue", f"Invalid value {architecture!r} for Architecture")
    virtualization = params.get("VirtualizationType", "paravirtual")  # EC2 ref: default paravirtual
    if virtualization not in ("hvm", "paravirtual"):
        raise ec2_error("InvalidParameterValue", f"Invalid value {virtualization!r} for VirtualizationType")
    boot_mode = params.get("BootMode")
    if boot_mode is not None and boot_mode not in BOOT_MODES:
        raise ec2_error(
            "InvalidParameterValue",
            f"Invalid value {boot_mode!r} for BootMode: give legacy-bios, uefi or uefi-preferred",
        )
    if params.get("ImdsSupport") not in (None, "v2.0"):  # EC2 ref: ImdsSupport v2.0
        raise ec2_error("InvalidParameterValue", "ImdsSupport can only be v2.0")
    if params.get("TpmSupport") not in (None, "v2.0"):
        raise ec2_error("InvalidParameterValue", "TpmSupport can only be v2.0")
    if params.get("TpmSupport") and boot_mode != "uefi":  # user guide "NitroTPM": UEFI boot mode only
        raise ec2_error("InvalidParameterCombination", "TpmSupport v2.0 needs BootMode uefi")
    if not _bool_or_absent(params.get("EnaSupport")):
        raise ec2_error("InvalidParameterValue", "EnaSupport must be true or false")
    if virtualization != "hvm" and (params.get("EnaSupport") or params.get("BootMode")):
        # EC2 ref, EnaSupport: "This option is supported only for HVM AMIs"; UEFI boot is HVM only.
        raise ec2_error(
            "InvalidParameterCombination",
            "EnaSupport and BootMode are for HVM images: give VirtualizationType hvm",
        )
    if len(str(params.get("Description", ""))) > 255:
        raise ec2_error("InvalidParameterValue", "Description is longer than 255 characters")
    for spec in params.get("TagSpecifications", []):
        if spec.get("ResourceType") != "image":  # EC2 ref, TagSpecifications: ResourceType image
            raise ec2_error(
                "InvalidParameterValue",
                f"TagSpecifications ResourceType {spec.get('ResourceType')!r}: RegisterImage tags only "
                "the image",
            )
    return described


def _check_ebs_device(
    ebs: dict[str, Any], device: str, is_root: bool, ec2: Any, account_id: str
) -> dict[str, Any]:
    """One Ebs mapping checked as EC2 checks it; with EC2's defaults filled in."""
    snapshot_id = ebs.get("SnapshotId")
    snapshot_size = None
    encrypted = bool(ebs.get("Encrypted", False))  # a new empty volume: as asked, unencrypted by default
    if snapshot_id:
        snapshot = ec2.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.owner_id != account_id:
            # Another account's snapshot shared with this one is not modelled.
            raise ec2_error("InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
        if snapshot.status != "completed":
            raise ec2_error(
                "IncorrectState",
                f"Snapshot {snapshot_id} is {snapshot.status}: register an image only from a completed "
                "snapshot (CompleteSnapshot, then wait for DescribeSnapshots to say completed)",
            )
        snapshot_size = snapshot.volume.size
        encrypted = bool(snapshot.encrypted)  # a volume from a snapshot is encrypted as the snapshot is
        if ebs.get("Encrypted") is not None or ebs.get("KmsKeyId"):
            # EC2 ref, BlockDeviceMappings: with a snapshot id "you can't specify the encryption state".
            raise ec2_error(
                "InvalidParameterCombination",
                f"The mapping of {device} names a snapshot and Encrypted/KmsKeyId: leave encryption out",
            )
    volume_type = ebs.get("VolumeType", "gp2")
    if volume_type not in VOLUME_TYPES:
        raise ec2_error("InvalidParameterValue", f"Invalid value {volume_type!r} for VolumeType of {device}")
    if is_root and volume_type not in BOOT_VOLUME_TYPES:
        raise ec2_error(
            "InvalidBlockDeviceMapping",
            f"A {volume_type} volume cannot be the root device {device}: use gp3, gp2, io1, io2 or standard",
        )
    size = ebs.get("VolumeSize", snapshot_size)
    if size is None:
        raise ec2_error(
            "InvalidBlockDeviceMapping", f"The mapping of {device} needs a VolumeSize or a SnapshotId"
        )
    if not isinstance(size, int) or size < 1:
        raise ec2_error("InvalidParameterValue", f"Invalid VolumeSize {size!r} for {device}")
    if snapshot_size is not None and size < snapshot_size:
        raise ec2_error(
            "InvalidBlockDeviceMapping",
            f"Volume of size {size} GiB is smaller than snapshot '{snapshot_id}', expect size >= "
            f"{snapshot_size} GiB",
        )
    if volume_type in MAX_SIZE_GIB and size > MAX_SIZE_GIB[volume_type]:
        raise ec2_error(
            "InvalidParameterValue",
            f"Volume size {size} GiB is more than a {volume_type} volume takes ({MAX_SIZE_GIB[volume_type]})",
        )
    if volume_type in ("io1", "io2") and not ebs.get("Iops"):
        raise ec2_error("InvalidParameterCombination", f"A {volume_type} volume ({device}) needs Iops")
    if ebs.get("Iops") and volume_type not in ("io1", "io2", "gp3"):
        raise ec2_error(
            "InvalidParameterCombination", f"Iops is not supported for {volume_type} volumes ({device})"
        )
    if ebs.get("Throughput") and volume_type != "gp3":
        raise ec2_error(
            "InvalidParameterCombination", f"Throughput is only for gp3 volumes ({device} is {volume_type})"
        )
    if not _bool_or_absent(ebs.get("DeleteOnTermination")):
        raise ec2_error("InvalidParameterValue", f"DeleteOnTermination of {device} must be true or false")
    described: dict[str, Any] = {
        "DeleteOnTermination": ebs.get("DeleteOnTermination", True),
        "VolumeSize": size,
        "VolumeType": volume_type,
        "Encrypted": encrypted,
    }
    if snapshot_id:
        described["SnapshotId"] = snapshot_id
    for key in ("Iops", "Throughput"):
        if key in ebs:
            described[key] = ebs[key]
    return described


def copy_encryption_key(params: dict[str, Any], region: str, account_id: str, encrypted: bool) -> str:
    """The key CopyImage encrypts the copy's snapshots with ("" for none), refusing what EC2 refuses.

    EC2 ref, CopyImage: a copy of an encrypted snapshot is encrypted; Encrypted true encrypts a copy of
    an unencrypted one; the key is KmsKeyId, which needs Encrypted true, or else the AWS managed key
    for EBS of the destination region. The simulator takes a KmsKeyId only as a key ARN of that region.
    """
    key = params.get("KmsKeyId")
    if key is not None and params.get("Encrypted") is not True:
        raise ec2_error(
            "InvalidParameterCombination",
            "KmsKeyId needs Encrypted true: a key is given only to encrypt the copy",
            "CopyImage",
        )
    if key is not None and not (KMS_KEY_ARN.fullmatch(str(key)) and str(key).split(":")[3] == region):
        raise ec2_error(
            "InvalidParameterValue",
            f"KmsKeyId {key!r}: the simulated region takes only the ARN of a key in {region}",
            "CopyImage",
        )
    if not (encrypted or params.get("Encrypted")):
        return ""
    return str(key) if key is not None else aws_managed_key(region, account_id)


def copied_mappings(
    ebs: EbsDirect, source: Any, source_region: str, region: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """CopyImage of an EBS-backed image: a completed copy of each of its snapshots in `region`, and the
    copy's block device mappings on them (encrypted as the copies are)."""
    mappings = []
    for mapping in source.registered_mappings:
        described = mapping.get("Ebs")
        if not (described and described.get("SnapshotId")):
            mappings.append(dict(mapping))
            continue
        key = copy_encryption_key(params, region, ebs.account_id, bool(described.get("Encrypted")))
        snapshot_id = ebs.copy_snapshot(
            described["SnapshotId"],
            source_region,
            region,
            key,
            f"Copied from {described['SnapshotId']} in {source_region} for {params.get('Name', '')}",
        )
        mappings.append({**mapping, "Ebs": {**described, "SnapshotId": snapshot_id, "Encrypted": bool(key)}})
    return mappings
