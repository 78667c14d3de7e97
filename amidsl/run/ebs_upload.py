"""Write a disk's blocks to a new EBS snapshot with the EBS direct APIs, from the controller.

No helper instance and no volume: StartSnapshot makes a pending snapshot of the disk's size, each
non-zero 512 KiB block goes up with PutSnapshotBlock (Base64 SHA-256 of the block beside it, since the
block itself is not covered by the request signature), CompleteSnapshot seals it with the number of
blocks written and the LINEAR aggregate of their digests, and EC2's DescribeSnapshots says when it is
`completed` and can be registered. Blocks the caller does not give are zero on every volume made from
the snapshot.

Puts run on `concurrency` threads with at most `concurrency` x 2 blocks read and not yet written, so
memory stays bounded whatever the disk's size. The threads share the client given: its connection pool
(botocore's max_pool_connections, 10 unless set) should hold `concurrency` connections, else the puts
beyond it open a connection each and drop it. Throttling, server errors and lost connections are
retried here with exponential backoff (the client's own retries are off); StartSnapshot carries a
ClientToken, so a retried start returns the snapshot the first attempt made instead of a second one.
Any failure after the start raises SnapshotUploadError, whose message names the snapshot left behind
and the command that deletes it (messages carry AWS's error text, never credentials).
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.exceptions

from amidsl.node.amidsl_node import EBS_BLOCK_SIZE
from amidsl.settings import DEFAULT_UPLOAD_CONCURRENCY
from amidsl.snapshots import delete_snapshots_command

BLOCK_SIZE = EBS_BLOCK_SIZE  # the EBS direct APIs' block: 512 KiB, whatever a service reports
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
DEFAULT_TIMEOUT_MINUTES = 60  # how long AWS keeps a pending snapshot that sees no write
DEFAULT_ATTEMPTS = 6  # tries of one request, the first included
BACKOFF_SECONDS = 0.5  # the first wait before a retry; doubled each time, at most BACKOFF_CAP_SECONDS
BACKOFF_CAP_SECONDS = 20.0
POLL_SECONDS = 5  # between two DescribeSnapshots while waiting for `completed`
DEFAULT_WAIT_SECONDS = 1800
# The live EBS client makes one request per call (live/aws.py), so these are the only retries of the
# EBS calls: what botocore's standard retry mode retries (botocore/retries/standard.py), and the EBS
# direct APIs' own throttle on concurrent requests. Never a refusal of the request itself
# (ValidationException, as on a block whose checksum does not match, AccessDeniedException,
# ServiceQuotaExceededException...): its retry is refused the same way.
RETRYABLE_CODES = frozenset(
    {
        # Throttling: botocore's list of the codes AWS services throttle with, and EBS direct's own.
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
        "ConcurrentLimitExceededException",
        # Transient trouble on AWS's side, whatever the HTTP status says.
        "InternalServerException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
THROTTLED_STATUS = 429  # retried, as is every 5xx (botocore: 500, 502, 503, 504 and 509)
# A connection that could not be made or broke mid-request: botocore's ConnectionError (SSLError,
# ProxyConnectionError, EndpointConnectionError, ConnectTimeoutError) and HTTPClientError
# (ConnectionClosedError, ReadTimeoutError, ResponseStreamingError).
CONNECTION_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

T = TypeVar("T")


class SnapshotUploadError(Exception):
    """Uploading a snapshot failed; the message names the snapshot left (if any) and how to delete it."""

    def __init__(
        self, what: str, snapshot_id: str | None = None, region: str = "", completing: bool = False
    ) -> None:
        self.what = what  # what failed, without the advice on the snapshot
        # CompleteSnapshot succeeded: the snapshot holds the whole disk and is worth keeping.
        self.completing = completing
        if snapshot_id:
            where = f" in {region}" if region else ""
            what = (
                f"{what}. The snapshot {snapshot_id} is left{where}; delete it with "
                f"`{delete_snapshots_command([snapshot_id], region)}`"
            )
        super().__init__(what)
        self.snapshot_id = snapshot_id


class SnapshotUploadInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a closed output) stopped an upload: the snapshot it leaves (a KeyboardInterrupt still).

    snapshot_id is None when StartSnapshot had not answered; no PutSnapshotBlock runs any more.
    `completion` is "done" once CompleteSnapshot succeeded (the snapshot holds the whole disk), "sent"
    when Ctrl-C came during that request (it may have), else "". `note` says what became of the snapshot
    and `resume` how to go on, once the caller has dealt with it."""

    def __init__(self, snapshot_id: str | None, region: str, completion: str = "") -> None:
        super().__init__(f"interrupted while uploading into {snapshot_id or 'a snapshot being started'}")
        self.snapshot_id = snapshot_id
        self.region = region
        self.completion = completion
        self.note = ""
        self.resume = ""

    @property
    def completing(self) -> bool:
        """CompleteSnapshot was sent: the snapshot is worth keeping."""
        return bool(self.completion)


@dataclass(frozen=True)
class SnapshotUpload:
    """A completed snapshot: its id, its size, the blocks written and their LINEAR aggregate checksum."""

    snapshot_id: str
    volume_size_gib: int
    blocks_written: int
    checksum: str


def block_checksum(digest: bytes) -> str:
    """PutSnapshotBlock's Checksum of a block whose SHA-256 digest this is (Base64)."""
    return base64.b64encode(digest).decode("ascii")


def linear_checksum(digests: Mapping[int, bytes]) -> str:
    """CompleteSnapshot's LINEAR aggregate: SHA-256 of the blocks' SHA-256 digests in ascending block
    index, Base64."""
    total = hashlib.sha256()
    for index in sorted(digests):
        total.update(digests[index])
    return base64.b64encode(total.digest()).decode("ascii")


def _error_text(err: BaseException) -> str:
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        message = error.get("Message", "")
        return f"{error.get('Code', 'Unknown')}{': ' + message if message else ''}"
    return f"{type(err).__name__}: {err}"


def _retryable(err: BaseException) -> bool:
    if isinstance(err, CONNECTION_ERRORS):
        return True
    if isinstance(err, botocore.exceptions.ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = err.response.get("Error", {}).get("Code")
        return code in RETRYABLE_CODES or status == THROTTLED_STATUS or status >= 500
    return False


def with_retries(call: Callable[[], T], attempts: int, pause: Callable[[float], None]) -> T:
    """`call()`, tried again after throttling, a 5xx or a lost connection, waiting longer each time."""
    for attempt in range(attempts):
        try:
            return call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            if attempt == attempts - 1 or not _retryable(err):
                raise
        # Full jitter: threads throttled together do not all come back together.
        pause(random.uniform(0.5, 1.0) * min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2**attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


class _Stopped(Exception):
    """A put's wait before its next try was ended (by Ctrl-C, or by the upload's first failure): it
    tries no more."""


def _pause_unless_stopped(
    pause: Callable[[float], None], stopping: threading.Event
) -> Callable[[float], None]:
    """`pause` for the put threads, which Ctrl-C does not reach (Python raises it in the main thread
    only, which then sets `stopping`, as does the upload's first failure): the wait runs on a thread of
    its own, and _Stopped ends it at once."""

    def wait(seconds: float) -> None:
        waiting = threading.Thread(target=pause, args=(seconds,), name="ebs-put-pause", daemon=True)
        waiting.start()
        while waiting.is_alive() and not stopping.is_set():
            waiting.join(0.02)
        if stopping.is_set():
            raise _Stopped

    return wait


def upload_snapshot(
    client: Any,
    blocks: Iterable[tuple[int, bytes]],
    *,
    ec2: Any,
    volume_size_gib: int,
    tags: Iterable[tuple[str, str]] = (),
    description: str = "",
    concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
    encryption: Mapping[str, object] | None = None,
    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES,
    attempts: int = DEFAULT_ATTEMPTS,
    client_token: str | None = None,
    wait_seconds: int = DEFAULT_WAIT_SECONDS,
    progress: Callable[[str], None] = lambda line: None,
    pause: Callable[[float], None] = time.sleep,
) -> SnapshotUpload:
    """Write `blocks` ((index, 524288 bytes) of the non-zero blocks, ascending) to a new snapshot of
    `volume_size_gib` GiB through `client` (EBS), complete it and wait (through `ec2`) until it is
    completed."""
    if not isinstance(volume_size_gib, int) or volume_size_gib < 1:
        raise ValueError(
            f"volume_size_gib must be a whole number of GiB, at least 1 (not {volume_size_gib!r})"
        )
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (not {concurrency})")
    region = getattr(getattr(client, "meta", None), "region_name", "") or ""
    start: dict[str, Any] = {
        "VolumeSize": volume_size_gib,
        "Timeout": timeout_minutes,
        # The same token on every attempt: a start whose answer was lost returns its snapshot again.
        "ClientToken": client_token or uuid.uuid4().hex,
    }
    if description:
        start["Description"] = description
    start.update(encryption or {})  # Encrypted, KmsKeyArn
    tag_list = [{"Key": key, "Value": value} for key, value in tags]
    if tag_list:
        start["Tags"] = tag_list
    try:
        started = with_retries(lambda: client.start_snapshot(**start), attempts, pause)
    except KeyboardInterrupt:
        raise SnapshotUploadInterrupted(None, region) from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise SnapshotUploadError(
            f"StartSnapshot failed in {region or 'the region'}: {_error_text(err)}. No snapshot id came "
            "back; if AWS made one anyway, it stays pending and ends in error after "
            f"{timeout_minutes} minutes"
        ) from None
    snapshot_id = started["SnapshotId"]
    try:
        progress(f"    snapshot {snapshot_id} started ({volume_size_gib} GiB)")
        digests = _put_blocks(
            client, blocks, snapshot_id, region, volume_size_gib, concurrency, attempts, pause, progress
        )
    except KeyboardInterrupt:  # every put has ended: the unfinished snapshot can go
        raise SnapshotUploadInterrupted(snapshot_id, region) from None
    try:
        aggregate = _complete(client, ec2, snapshot_id, region, digests, attempts, pause)
    except KeyboardInterrupt:
        # The request may have reached AWS: the snapshot may hold the whole disk, so it is kept.
        raise SnapshotUploadInterrupted(snapshot_id, region, completion="sent") from None
    try:
        _wait_until_completed(ec2, snapshot_id, region, wait_seconds, pause, progress)
    except KeyboardInterrupt:
        # The snapshot holds the whole disk, or will once EC2 says completed: it is kept.
        raise SnapshotUploadInterrupted(snapshot_id, region, completion="done") from None
    return SnapshotUpload(snapshot_id, volume_size_gib, len(digests), aggregate)


def _put_blocks(
    client: Any,
    blocks: Iterable[tuple[int, bytes]],
    snapshot_id: str,
    region: str,
    volume_size_gib: int,
    concurrency: int,
    attempts: int,
    pause: Callable[[float], None],
    progress: Callable[[str], None],
) -> dict[int, bytes]:
    """PutSnapshotBlock for every block on `concurrency` threads; the SHA-256 digest of each by index.

    Ctrl-C (KeyboardInterrupt, in the calling thread only) stops reading blocks, drops the puts not
    begun and waits for those under way before it goes on: the snapshot must not be deleted under them.
    The first failure (a put failed for good, a block unreadable or not as promised) stops reading
    blocks too, and ends the other puts' waits before their next tries: the upload has failed."""
    digests: dict[int, bytes] = {}
    failures: list[str] = []
    lock = threading.Lock()
    # Set on Ctrl-C or the first failure: a put waiting to try again ends its wait and stops, a put not
    # begun is not sent.
    stopping = threading.Event()
    put_pause = _pause_unless_stopped(pause, stopping)

    def fail(message: str) -> None:
        with lock:
            failures.append(message)
        stopping.set()

    # A slot per block read and not yet written: taken before the next block is read, so at most
    # concurrency x 2 blocks are in memory.
    slots = threading.BoundedSemaphore(concurrency * 2)
    last_block = volume_size_gib * BLOCKS_PER_GIB - 1

    def put(index: int, data: bytes) -> None:
        with lock:
            under_way[0] += 1
        try:
            if stopping.is_set():
                return  # queued before the upload stopped
            digest = hashlib.sha256(data).digest()
            request = {
                "SnapshotId": snapshot_id,
                "BlockIndex": index,
                "BlockData": data,
                "DataLength": BLOCK_SIZE,
                "Checksum": block_checksum(digest),
                "ChecksumAlgorithm": "SHA256",
            }
            with_retries(lambda: client.put_snapshot_block(**request), attempts, put_pause)
            with lock:
                digests[index] = digest
        except _Stopped:
            pass  # Ctrl-C or a failure: the main thread reports the snapshot it leaves
        except Exception as err:  # reported below, with the snapshot it leaves
            fail(f"writing block {index} to {snapshot_id} failed: {_error_text(err)}")
        finally:
            with lock:
                under_way[0] -= 1
            slots.release()

    previous = -1
    reported = 0  # the thousands of blocks written said so far
    source = iter(blocks)
    under_way = [0]  # puts running now
    threads = f"ebs-put-{uuid.uuid4().hex[:12]}"  # this pool's threads' names start so
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=threads)
    futures: list[Future[None]] = []
    try:
        while not failures:
            slots.acquire()
            try:
                index, data = next(source)
            except StopIteration:
                slots.release()
                break
            except Exception as err:  # the disk could not be read: the snapshot is left, say which
                slots.release()
                fail(f"reading the disk's blocks failed: {_error_text(err)}")
                break
            problem = _block_problem(index, data, previous, last_block)
            if problem:
                slots.release()
                fail(problem)
                break
            previous = index
            futures = [future for future in futures if not future.done()]
            futures.append(pool.submit(put, index, data))
            # Said from this thread only: progress may raise (OutputClosed), which must stop the upload.
            written = len(digests) // 1000
            if written > reported:
                reported = written
                progress(f"    snapshot {snapshot_id}: {written * 1000} block(s) written")
        wait(futures)
    except KeyboardInterrupt:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        _wait_for_puts(threads, under_way[0], progress)
        raise
    finally:
        pool.shutdown(wait=False)  # every put has ended: the threads end as they find no more work
    if failures:
        raise SnapshotUploadError(failures[0], snapshot_id, region)
    return digests


def _wait_for_puts(threads: str, under_way: int, progress: Callable[[str], None]) -> None:
    """Wait until the pool's threads (named `threads`...) have ended, their queued puts cancelled and
    those under way finished, whatever Ctrl-C comes meanwhile: the snapshot must not be deleted under a
    put."""
    try:
        plural = "" if under_way == 1 else "s"
        progress(f"    stopping: waiting for {under_way} block upload{plural} in flight")
    except KeyboardInterrupt:
        pass  # the output is gone (OutputClosed), or another Ctrl-C: the puts are waited for all the same
    # The threads, not the futures: Ctrl-C may come between a submit and keeping its future, with the
    # put already running. Polled, not joined: a join that Ctrl-C cuts short may take a running thread
    # for ended.
    while True:
        try:
            if not any(t.is_alive() for t in threading.enumerate() if t.name.startswith(threads)):
                return
            time.sleep(0.02)
        except KeyboardInterrupt:
            continue  # a put under way ends within its retries; deleting the snapshot must wait for it


def _block_problem(index: Any, data: Any, previous: int, last_block: int) -> str:
    """Why a block given to upload_snapshot cannot be written ("" when it can)."""
    if not isinstance(index, int) or not previous < index <= last_block:
        return (
            f"block index {index!r} is not after {previous} and within the volume's blocks 0 to "
            f"{last_block}: blocks must come in ascending index order, each once"
        )
    if len(data) != BLOCK_SIZE:
        return f"block {index} has {len(data)} bytes: every block is {BLOCK_SIZE} bytes"
    return ""


def _complete(
    client: Any,
    ec2: Any,
    snapshot_id: str,
    region: str,
    digests: Mapping[int, bytes],
    attempts: int,
    pause: Callable[[float], None],
) -> str:
    """CompleteSnapshot with the block count and the LINEAR aggregate; returns the aggregate."""
    aggregate = linear_checksum(digests)
    request: dict[str, Any] = {"SnapshotId": snapshot_id, "ChangedBlocksCount": len(digests)}
    if digests:  # an aggregate of no blocks means nothing: send none
        request.update(Checksum=aggregate, ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    try:
        with_retries(lambda: client.complete_snapshot(**request), attempts, pause)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        # A retry after a completion whose answer was lost finds the snapshot completed already.
        if _snapshot_state(ec2, snapshot_id)[0] != "completed":
            raise SnapshotUploadError(
                f"CompleteSnapshot of {snapshot_id} ({len(digests)} block(s)) failed: {_error_text(err)}",
                snapshot_id,
                region,
            ) from None
    return aggregate


def _snapshot_state(ec2: Any, snapshot_id: str) -> tuple[str, str]:
    """The snapshot's State and StateMessage in EC2 ("" when EC2 does not know it)."""
    try:
        found = ec2.describe_snapshots(SnapshotIds=[snapshot_id]).get("Snapshots", [])
    except botocore.exceptions.ClientError:
        return "", ""
    if not found:
        return "", ""
    return found[0].get("State", ""), found[0].get("StateMessage", "")


def _wait_until_completed(
    ec2: Any,
    snapshot_id: str,
    region: str,
    wait_seconds: int,
    pause: Callable[[float], None],
    progress: Callable[[str], None],
) -> None:
    """Poll DescribeSnapshots until the snapshot is completed; raise if it ends in error or time runs out."""
    waited = 0.0
    while True:
        state, reason = _snapshot_state(ec2, snapshot_id)
        if state == "completed":
            progress(f"    snapshot {snapshot_id} is completed")
            return
        if state not in ("pending", ""):
            said = f": {reason}" if reason else ""
            raise SnapshotUploadError(f"the snapshot {snapshot_id} ended {state}{said}", snapshot_id, region)
        if waited >= wait_seconds:
            raise SnapshotUploadError(
                f"the snapshot {snapshot_id} is still {state or 'not visible'} after {wait_seconds} s",
                snapshot_id,
                region,
                completing=True,
            )
        pause(POLL_SECONDS)
        waited += POLL_SECONDS


def download_snapshot(client: Any, snapshot_id: str, path: str, size: int | None = None) -> int:
    """Write a completed snapshot's blocks into a sparse file at `path` (the blocks never written stay
    holes, as they read as zeros); `size` cuts the file to the disk's own size. Returns the blocks read."""
    listed = {"SnapshotId": snapshot_id, "MaxResults": 10000}
    count = 0
    with open(path, "wb") as disk:
        while True:
            page = client.list_snapshot_blocks(**listed)
            for block in page.get("Blocks", []):
                data = client.get_snapshot_block(
                    SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
                )["BlockData"].read()
                disk.seek(block["BlockIndex"] * BLOCK_SIZE)
                disk.write(data)
                count += 1
            if "NextToken" not in page:
                break
            listed["NextToken"] = page["NextToken"]
        disk.truncate(size if size is not None else page["VolumeSize"] * 1024**3)
    return count
