"""Uploading a disk's blocks to an EBS snapshot (amidsl.run.ebs_upload), against the strict FakeRegion and
against plain moto."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from botocore.retries.standard import ThrottledRetryableChecker, TransientRetryableChecker

from amidsl.run.ebs_upload import BLOCK_SIZE, SnapshotUploadError, SnapshotUploadInterrupted, upload_snapshot
from amidsl.run.progress import OutputClosed
from simulator import FakeRegion
from simulator.region import SECRET_KEY


@pytest.fixture
def region():
    made = FakeRegion("us-east-1")
    yield made
    made.close()


def blocks_of(*indexes: int) -> list[tuple[int, bytes]]:
    """Non-zero blocks, each filled with a byte of its own."""
    return [(index, bytes([index % 251 + 1]) * BLOCK_SIZE) for index in indexes]


def throttled(operation: str) -> ClientError:
    response = {
        "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


class Meddling:
    """A client that passes calls on, after `before[method](params)` may change or refuse them."""

    def __init__(self, client, **before):
        self.client, self.before, self.meta = client, before, client.meta
        self.calls: list[str] = []

    def __getattr__(self, method):
        def call(**params):
            self.calls.append(method)
            if method in self.before:
                params = self.before[method](params) or params
            return getattr(self.client, method)(**params)

        return call


def upload(region, blocks, client=None, **options):
    options = {"volume_size_gib": 1, "concurrency": 2, "pause": lambda seconds: None} | options
    return upload_snapshot(
        client or region.strict_client("ebs"), blocks, ec2=region.strict_client("ec2"), **options
    )


def read_back(region, snapshot_id: str) -> dict[int, bytes]:
    ebs = region.strict_client("ebs")
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    return {
        b["BlockIndex"]: ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )["BlockData"].read()
        for b in listed
    }


def snapshot(region, snapshot_id: str) -> dict:
    return region.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]


def test_the_blocks_given_make_a_completed_snapshot_that_reads_back_the_same(region):
    blocks = blocks_of(0, 1, 5, 2047)
    done = upload(
        region, blocks, tags=[("amidsl:built-by", "amidsl")], description="root of web", concurrency=3
    )
    assert done.blocks_written == 4 and done.volume_size_gib == 1
    assert read_back(region, done.snapshot_id) == dict(blocks)
    described = snapshot(region, done.snapshot_id)
    assert described["State"] == "completed" and described["Description"] == "root of web"
    assert described["Tags"] == [{"Key": "amidsl:built-by", "Value": "amidsl"}]


def test_an_empty_disk_makes_an_empty_completed_snapshot(region):
    done = upload(region, [])
    assert done.blocks_written == 0 and snapshot(region, done.snapshot_id)["State"] == "completed"


def test_plain_moto_takes_the_same_upload(region):
    done = upload(region, blocks_of(3, 4), client=region.client("ebs"))
    assert snapshot(region, done.snapshot_id)["State"] == "completed"


def test_a_start_whose_answer_was_lost_is_retried_without_a_second_snapshot(region):
    lost = []

    def lose_the_first_answer(params):
        if not lost:
            lost.append(region.strict_client("ebs").start_snapshot(**params)["SnapshotId"])
            raise ClientError(
                {"Error": {"Code": "InternalServerException"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
                "StartSnapshot",
            )

    client = Meddling(region.strict_client("ebs"), start_snapshot=lose_the_first_answer)
    done = upload(region, blocks_of(0), client=client, description="retried start")
    assert done.snapshot_id == lost[0]
    found = region.ec2.describe_snapshots(Filters=[{"Name": "description", "Values": ["retried start"]}])
    assert [s["SnapshotId"] for s in found["Snapshots"]] == [done.snapshot_id]


def test_throttled_puts_are_retried_with_growing_waits(region):
    refusals = [throttled("PutSnapshotBlock")] * 3
    waits: list[float] = []

    def throttle(params):
        if refusals:
            raise refusals.pop()

    client = Meddling(region.strict_client("ebs"), put_snapshot_block=throttle)
    done = upload(region, blocks_of(0, 1), client=client, concurrency=1, pause=waits.append)
    assert done.blocks_written == 2 and client.calls.count("put_snapshot_block") == 5
    assert len(waits) == 3 and waits[0] < waits[2]


def test_a_put_whose_tls_connection_broke_is_retried(region):
    # The live EBS client makes one request per call (botocore's own retries are off), so a TLS
    # connection lost mid-put, which botocore used to retry, must be retried here.
    broken = [SSLError(endpoint_url="https://ebs.us-east-1.amazonaws.com", error="EOF occurred in violation")]

    def break_once(params):
        if broken:
            raise broken.pop()

    client = Meddling(region.strict_client("ebs"), put_snapshot_block=break_once)
    done = upload(region, blocks_of(0), client=client, concurrency=1)
    assert done.blocks_written == 1 and client.calls.count("put_snapshot_block") == 2


def refused(code: str, status: int) -> ClientError:
    response = {"Error": {"Code": code, "Message": "refused"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutSnapshotBlock")  # type: ignore[arg-type]


def put_failing_once_with(region, error: Exception):
    """Upload one block whose first put fails with `error`; the client, to count the puts."""
    errors = [error]

    def fail_once(params):
        if errors:
            raise errors.pop()

    client = Meddling(region.strict_client("ebs"), put_snapshot_block=fail_once)
    return client, lambda: upload(region, blocks_of(0), client=client, concurrency=1)


ENDPOINT = "https://ebs.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    "error",
    [
        # Connections lost or never made (botocore's ConnectionError and HTTPClientError).
        ProxyConnectionError(proxy_url="http://proxy.example:3128", error="Connection refused"),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        EndpointConnectionError(endpoint_url=ENDPOINT),
        ConnectionClosedError(endpoint_url=ENDPOINT),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        ResponseStreamingError(error="Connection broken: IncompleteRead"),
        # Throttling, by the EBS direct APIs and by the codes other AWS services use.
        refused("ConcurrentLimitExceededException", 400),
        refused("RequestThrottledException", 400),
        refused("ThrottlingException", 400),
        refused("ThrottledException", 400),
        refused("TooManyRequestsException", 400),
        refused("RequestLimitExceeded", 400),
        refused("SlowDown", 503),
        refused("Unknown", 429),
        refused("Unknown", 509),
        # Transient trouble on AWS's side.
        refused("InternalServerException", 500),
        refused("Unknown", 502),
        refused("ServiceUnavailable", 503),
        refused("Unknown", 504),
        refused("RequestTimeout", 400),
        refused("PriorRequestNotComplete", 400),
    ],
    ids=lambda error: (
        type(error).__name__
        if not isinstance(error, ClientError)
        else (f"{error.response['Error']['Code']}-{error.response['ResponseMetadata']['HTTPStatusCode']}")
    ),
)
def test_a_put_that_failed_on_the_way_or_was_throttled_is_retried(region, error):
    client, run = put_failing_once_with(region, error)
    done = run()
    assert done.blocks_written == 1 and client.calls.count("put_snapshot_block") == 2


@pytest.mark.parametrize(
    "code",
    sorted(
        set(
            # botocore's private lists: should a release rename them, the test is skipped, not broken
            [
                *getattr(ThrottledRetryableChecker, "_THROTTLED_ERROR_CODES", ()),
                *getattr(TransientRetryableChecker, "_TRANSIENT_ERROR_CODES", ()),
            ]
        )
    ),
)
def test_every_error_code_botocores_standard_retry_mode_retries_is_retried_here_too(region, code):
    # botocore's own lists (of the installed version): a code it retries is retried here too, at any
    # status, as botocore does.
    client, run = put_failing_once_with(region, refused(code, 400))
    assert run().blocks_written == 1 and client.calls.count("put_snapshot_block") == 2


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ValidationException", 400),
        ("AccessDeniedException", 403),
        ("ServiceQuotaExceededException", 402),
        ("ResourceNotFoundException", 404),
        ("ConflictException", 409),
    ],
)
def test_a_put_refused_for_what_it_asks_is_not_retried_and_names_the_snapshot(region, code, status):
    client, run = put_failing_once_with(region, refused(code, status))
    with pytest.raises(SnapshotUploadError) as caught:
        run()
    assert f"writing block 0 to {caught.value.snapshot_id} failed: {code}" in str(caught.value)
    assert client.calls.count("put_snapshot_block") == 1


def test_never_more_than_twice_concurrency_blocks_are_read_and_not_yet_written(region):
    concurrency, most = 2, [0]
    lock = threading.Lock()

    class SlowCounting:
        def __init__(self, client):
            self.client, self.meta, self.written = client, client.meta, 0

        def __getattr__(self, method):
            return getattr(self.client, method)

        def put_snapshot_block(self, **params):
            time.sleep(0.01)
            result = self.client.put_snapshot_block(**params)
            with lock:
                self.written += 1
            return result

    client = SlowCounting(region.strict_client("ebs"))

    def source():
        for read, block in enumerate(blocks_of(*range(40)), start=1):
            with lock:
                most[0] = max(most[0], read - client.written)
            yield block

    done = upload(region, source(), client=client, concurrency=concurrency)
    assert done.blocks_written == 40
    assert 1 < most[0] <= concurrency * 2


def test_a_block_damaged_on_the_way_is_refused_and_the_error_names_the_snapshot_left(region):
    def damage(params):
        data = bytearray(params["BlockData"])
        data[100] ^= 0xFF
        return params | {"BlockData": bytes(data)}

    client = Meddling(region.strict_client("ebs"), put_snapshot_block=damage)
    with pytest.raises(SnapshotUploadError) as caught:
        upload(region, blocks_of(7), client=client)
    message = str(caught.value)
    snapshot_id = caught.value.snapshot_id
    assert "writing block 7" in message and "checksum of block 7 does not match" in message
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in message
    assert snapshot(region, snapshot_id)["State"] == "pending"
    assert SECRET_KEY not in message
    assert client.calls.count("complete_snapshot") == 0


def test_completion_with_a_wrong_block_count_is_refused_and_names_the_snapshot(region):
    def miscount(params):
        return params | {"ChangedBlocksCount": params["ChangedBlocksCount"] + 1}

    client = Meddling(region.strict_client("ebs"), complete_snapshot=miscount)
    with pytest.raises(SnapshotUploadError) as caught:
        upload(region, blocks_of(0, 9), client=client)
    assert "CompleteSnapshot of" in str(caught.value) and "2 block(s) were written" in str(caught.value)
    assert f"--snapshot-id {caught.value.snapshot_id}" in str(caught.value)


@pytest.mark.parametrize(
    ("blocks", "said"),
    [
        (blocks_of(4, 2), "ascending index order"),
        (blocks_of(2048), "within the volume's blocks 0 to 2047"),
        ([(0, b"\x01" * 4096)], "every block is 524288 bytes"),
    ],
    ids=["out-of-order", "beyond-the-volume", "short"],
)
def test_blocks_not_as_promised_stop_the_upload_naming_the_snapshot(region, blocks, said):
    with pytest.raises(SnapshotUploadError) as caught:
        upload(region, blocks)
    assert said in str(caught.value) and caught.value.snapshot_id in str(caught.value)


def test_a_disk_that_cannot_be_read_stops_the_upload_naming_the_snapshot(region):
    def source():
        yield from blocks_of(0)
        raise OSError(5, "Input/output error")

    with pytest.raises(SnapshotUploadError) as caught:
        upload(region, source())
    assert "reading the disk's blocks failed" in str(caught.value)
    assert caught.value.snapshot_id in str(caught.value)


def test_a_snapshot_that_never_completes_is_named_after_the_wait(region):
    client = Meddling(region.strict_client("ebs"), complete_snapshot=lambda params: None)
    ec2 = region.strict_client("ec2")

    class StillPending:
        meta = ec2.meta

        def describe_snapshots(self, **params):
            found = ec2.describe_snapshots(**params)
            for item in found["Snapshots"]:
                item["State"] = "pending"
            return found

    with pytest.raises(SnapshotUploadError) as caught:
        upload_snapshot(
            client,
            blocks_of(0),
            ec2=StillPending(),
            volume_size_gib=1,
            wait_seconds=20,
            pause=lambda seconds: None,
        )
    assert "is still pending after 20 s" in str(caught.value)


def test_a_refused_start_says_no_snapshot_id_came_back(region):
    with pytest.raises(SnapshotUploadError) as caught:
        upload(region, blocks_of(0), timeout_minutes=5)
    assert "StartSnapshot failed in us-east-1: ValidationException" in str(caught.value)
    assert caught.value.snapshot_id is None


class Instant:
    """EBS and EC2 clients that take every call at once and remember the blocks put (no data kept)."""

    meta = type("Meta", (), {"region_name": "us-east-1"})()

    def __init__(self, put=lambda index: None):
        self.put, self.put_indexes, self.deleted = put, [], []

    def start_snapshot(self, **params):
        return {"SnapshotId": "snap-0123456789abcdef0"}

    def put_snapshot_block(self, **params):
        self.put(params["BlockIndex"])
        self.put_indexes.append(params["BlockIndex"])
        return {}

    def complete_snapshot(self, **params):
        return {"Status": "completed"}

    def describe_snapshots(self, **params):
        return {"Snapshots": [{"State": "completed"}]}


def test_output_closed_while_saying_how_many_blocks_were_written_stops_the_upload():
    def progress(line):
        if "block(s) written" in line:
            raise OutputClosed  # `amidsl simulate | head`: the reader went away

    client = Instant()
    data = b"\x01" * BLOCK_SIZE
    with pytest.raises(SnapshotUploadInterrupted) as caught:
        upload_snapshot(
            client, ((i, data) for i in range(1500)), ec2=client, volume_size_gib=1, progress=progress
        )
    assert caught.value.snapshot_id == "snap-0123456789abcdef0" and not caught.value.completing
    assert len(client.put_indexes) < 1500


@pytest.fixture
def ctrl_c():
    """The user's Ctrl-C, sent from another thread (SIGINT to this process, handled as Python does, by a
    KeyboardInterrupt in the main thread); `handled` counts those the main thread has met."""
    handled = []

    def handler(signum, frame):
        handled.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    press = SimpleNamespace(send=lambda: os.kill(os.getpid(), signal.SIGINT), handled=handled)
    yield press
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_taking_blocks_and_waits_for_the_puts_in_flight_even_through_a_second_ctrl_c(ctrl_c):
    release, ended = threading.Event(), []

    def slow_put(index):
        ctrl_c.send()  # block 0 is under way, block 1 waits for the one slot
        release.wait(30)
        ended.append(index)

    def second_ctrl_c_then_end_the_put():
        ctrl_c.send()  # while the put in flight is waited for
        deadline = time.monotonic() + 30
        while len(ctrl_c.handled) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()  # only once the main thread has met the second Ctrl-C

    def progress(line):
        said.append(line)
        if line.startswith("    stopping:"):
            threading.Thread(target=second_ctrl_c_then_end_the_put).start()

    client, said = Instant(put=slow_put), []
    with pytest.raises(SnapshotUploadInterrupted) as caught:
        upload_snapshot(
            client, blocks_of(*range(10)), ec2=client, volume_size_gib=1, concurrency=1, progress=progress
        )
    assert len(ctrl_c.handled) == 2
    assert ended == [0] and client.put_indexes == [0]  # block 1 was never sent; block 0's put ended
    assert "    stopping: waiting for 1 block upload in flight" in said
    assert not caught.value.completing


def test_ctrl_c_ends_a_puts_wait_before_its_next_try_at_once_and_it_tries_no_more(ctrl_c):
    tries, released = [], threading.Event()

    def throttled_put(index):
        tries.append(index)
        raise throttled("PutSnapshotBlock")

    def pause(seconds):
        if len(tries) == 1:
            ctrl_c.send()  # while the put waits to try block 0 again
        released.wait(3)  # the clock, as long as the test is willing to wait

    client, started = Instant(put=throttled_put), time.monotonic()
    try:
        with pytest.raises(SnapshotUploadInterrupted) as caught:
            upload_snapshot(
                client, blocks_of(0, 1), ec2=client, volume_size_gib=1, concurrency=1, pause=pause
            )
    finally:
        released.set()
    assert time.monotonic() - started < 2
    assert tries == [0] and len(ctrl_c.handled) == 1
    assert caught.value.snapshot_id == "snap-0123456789abcdef0" and not caught.value.completing


class HeldPause:
    """A retry's wait that lasts until the upload ends (or 3 s): whether the upload ends it early shows."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.waiting, self.released = threading.Event(), threading.Event()

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.waiting.set()
        self.released.wait(3)  # the clock, as long as the test is willing to wait

    def failed_upload(self, put, source, concurrency: int) -> SnapshotUploadError:
        """The error of an upload of `source` whose puts `put` answers, waiting with this pause."""
        client = Instant(put=put)
        try:
            with pytest.raises(SnapshotUploadError) as caught:
                upload_snapshot(
                    client,
                    source,
                    ec2=client,
                    volume_size_gib=1,
                    concurrency=concurrency,
                    attempts=3,
                    pause=self,
                )
        finally:
            self.released.set()
        return caught.value


def test_a_put_failed_for_good_ends_the_other_puts_waits_at_once_and_they_try_no_more():
    tries, pause, all_given = [], HeldPause(), threading.Event()

    def put(index):
        tries.append(index)
        if index == 0:
            pause.waiting.wait(10)  # block 1's put waits to try again
            all_given.wait(10)  # block 2's put is queued behind these two
            raise refused("AccessDeniedException", 403)
        raise throttled("PutSnapshotBlock")

    def source():
        yield from blocks_of(0, 1, 2)
        all_given.set()  # asked for a block after the last: every block is submitted

    error = pause.failed_upload(put, source(), concurrency=2)
    assert sorted(tries) == [0, 1] and len(pause.waits) == 1  # block 1 tried once; block 2 never
    assert str(error).startswith(
        "writing block 0 to snap-0123456789abcdef0 failed: AccessDeniedException: refused. "
        "The snapshot snap-0123456789abcdef0 is left in us-east-1; delete it with "
    )


def test_a_disk_that_cannot_be_read_ends_a_puts_wait_at_once_and_it_tries_no_more():
    tries, pause = [], HeldPause()

    def put(index):
        tries.append(index)
        raise throttled("PutSnapshotBlock")

    def source():
        yield from blocks_of(0)
        pause.waiting.wait(10)  # block 0's put waits to try again
        raise OSError(5, "Input/output error")

    error = pause.failed_upload(put, source(), concurrency=1)
    assert tries == [0] and len(pause.waits) == 1
    assert "reading the disk's blocks failed: OSError: [Errno 5] Input/output error" in str(error)
    assert "snap-0123456789abcdef0 is left" in str(error)


def test_ctrl_c_while_waiting_for_completed_says_the_snapshot_was_completed(region):
    ec2 = region.strict_client("ec2")

    class CtrlCWhileWaiting:
        meta = ec2.meta

        def describe_snapshots(self, **params):
            raise KeyboardInterrupt

    with pytest.raises(SnapshotUploadInterrupted) as caught:
        upload_snapshot(
            region.strict_client("ebs"),
            blocks_of(0),
            ec2=CtrlCWhileWaiting(),
            volume_size_gib=1,
            pause=lambda seconds: None,
        )
    assert caught.value.completing
    assert snapshot(region, caught.value.snapshot_id)["State"] == "completed"


@pytest.mark.parametrize(
    ("call", "snapshot_known", "completion"),
    # Before StartSnapshot answered no snapshot id is known; during CompleteSnapshot it may have completed.
    [("start_snapshot", False, ""), ("complete_snapshot", True, "sent")],
)
def test_ctrl_c_during_a_call_says_what_is_known_of_the_snapshot(region, call, snapshot_known, completion):
    def interrupted(params):
        raise KeyboardInterrupt

    client = Meddling(region.strict_client("ebs"), **{call: interrupted})
    with pytest.raises(SnapshotUploadInterrupted) as caught:
        upload(region, blocks_of(0), client=client)
    assert (caught.value.snapshot_id is not None) == snapshot_known
    assert caught.value.completion == completion and caught.value.completing == (completion == "sent")
