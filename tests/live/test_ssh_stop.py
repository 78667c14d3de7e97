"""Ctrl-C while a stoppable command runs over SSH: SshNode keeps reading until stop() can act (the pid may
come later), and says how the command ended."""

from __future__ import annotations

import pytest

from amidsl.live import ssh
from amidsl.live.ssh import CommandInterrupted, SshNode, SshTarget

PID_LINE = b"amidsl-node: bundle runs as pid 42\n"


class ScriptedChannel:
    """A channel whose recv() answers from a script: bytes, an exception to raise, or b"" (the end)."""

    def __init__(self, script: list, status: int) -> None:
        self.script, self.status, self.closed = list(script), status, False

    def set_combine_stderr(self, combine: bool) -> None:
        pass

    def exec_command(self, command: str) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def settimeout(self, seconds: float) -> None:
        pass

    def recv(self, size: int) -> bytes:
        step = self.script.pop(0) if self.script else TimeoutError()
        if isinstance(step, BaseException):
            raise step
        return step

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.closed = True


class OneChannelClient:
    def __init__(self, channel: ScriptedChannel) -> None:
        self.channel = channel

    def get_transport(self):
        return self

    def is_active(self) -> bool:
        return True

    def open_session(self) -> ScriptedChannel:
        return self.channel


def node_with(channel: ScriptedChannel) -> SshNode:
    node = SshNode(SshTarget("node", "127.0.0.1", 22, "root"))
    node._client = OneChannelClient(channel)  # type: ignore[assignment]
    return node


def test_ctrl_c_before_the_pid_is_known_stops_the_command_once_it_is():
    channel = ScriptedChannel(
        [
            KeyboardInterrupt(),  # Ctrl-C before the command said anything
            TimeoutError(),
            PID_LINE,
            b"amidsl-node: interrupted; removed the partial image, staging tree and parts\n",
            b"",
        ],
        status=130,
    )
    seen: list[str] = []
    stops: list[bool] = []

    def stop() -> bool:
        stops.append(any("runs as pid 42" in line for line in seen))
        return stops[-1]

    with pytest.raises(CommandInterrupted) as caught:
        node_with(channel).run("python3 -I prog bundle", stdin=b"{}", on_line=seen.append, stop=stop)

    assert caught.value.status == 130
    assert caught.value.output.splitlines()[-1].endswith("removed the partial image, staging tree and parts")
    assert stops[0] is False and stops[-1] is True and stops.count(True) == 1  # signalled exactly once
    assert channel.closed


def test_a_command_that_does_not_end_in_time_is_reported_as_still_running(monkeypatch):
    monkeypatch.setattr(ssh, "STOP_SECONDS", 0.01)
    channel = ScriptedChannel([PID_LINE, KeyboardInterrupt()], status=0)
    with pytest.raises(CommandInterrupted) as caught:
        node_with(channel).run("python3 -I prog bundle", stop=lambda: True)
    assert caught.value.status is None
    assert channel.closed


def test_without_stop_ctrl_c_just_closes_the_channel():
    channel = ScriptedChannel([PID_LINE, KeyboardInterrupt()], status=0)
    with pytest.raises(KeyboardInterrupt) as caught:
        node_with(channel).run("python3 -I prog bundle")
    assert not isinstance(caught.value, CommandInterrupted)
    assert channel.closed
