"""A faked paramiko node: SSHClient, Transport, channel and SFTP objects over a scripted node.

The node records every command line and every standard input it received and every file uploaded;
the test says what each phase's script prints and how it ends (exit status, or the link dropping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import paramiko

SCRIPT = re.compile(r"(?P<dir>/tmp/amidsl\.\w+)/(?P<phase>[\w.-]+)\.sh")


# A PhaseRun status: the user presses Ctrl-C after the script's last line.
CTRL_C = -2


@dataclass
class PhaseRun:
    """What a phase's script prints (stderr merged) and how it ends; status None = the link drops,
    CTRL_C = the user interrupts amidsl."""

    lines: list[str]
    status: int | None = 0


@dataclass
class FakeNode:
    """The node's state and script of behaviour."""

    host_key: paramiko.PKey
    accept_login: bool = True
    up: bool = True
    runs: dict[str, PhaseRun] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    stdins: list[bytes] = field(default_factory=list)
    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # path -> (mode, content)
    uploads: list[tuple[str, int, bytes]] = field(default_factory=list)  # every upload, in order
    down_after_drop: bool = False  # the node stays unreachable once the link dropped
    connections: int = 0
    closed_channels: int = 0
    transport: FakeTransport | None = None
    _temp_dirs: int = 0

    def client(self) -> FakeClient:
        return FakeClient(self)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.active = False

    def answer(self, command: str) -> tuple[list[str], int | None]:
        """The output and status of a command (None: the connection drops while it runs)."""
        if command.startswith("mktemp -d"):
            self._temp_dirs += 1
            return [f"/tmp/amidsl.fake{self._temp_dirs:04d}"], 0
        if command.startswith("rm -rf -- "):
            gone = command.removeprefix("rm -rf -- ")
            self.files = {p: f for p, f in self.files.items() if not p.startswith(gone + "/")}
            return [], 0
        if command == "true":
            return [], 0
        found = SCRIPT.search(command)
        if found is None:
            return [f"unexpected command: {command}"], 127
        run = self.runs.get(found["phase"], PhaseRun([], 0))
        return run.lines, run.status

    def scripts(self) -> list[tuple[str, str]]:
        """Every script uploaded: (phase, text), in order."""
        return [(m["phase"], data.decode()) for path, _, data in self.uploads if (m := SCRIPT.search(path))]


class FakeChannel:
    def __init__(self, node: FakeNode, transport: FakeTransport) -> None:
        self.node = node
        self.transport = transport
        self.output = b""
        self.status: int | None = 0
        self.stdin = b""

    def set_combine_stderr(self, combine: bool) -> None:
        assert combine

    def exec_command(self, command: str) -> None:
        self.node.commands.append(command)
        lines, self.status = self.node.answer(command)
        self.output = b"".join(line.encode() + b"\n" for line in lines)

    def sendall(self, data: bytes) -> None:
        self.stdin += data

    def shutdown_write(self) -> None:
        self.node.stdins.append(self.stdin)

    def recv(self, size: int) -> bytes:
        chunk, self.output = self.output[:size], self.output[size:]
        if not chunk and self.status == CTRL_C:
            raise KeyboardInterrupt
        if not chunk and self.status is None:
            self.transport.active = False  # the link went away after the last line
            self.node.up = not self.node.down_after_drop
        return chunk

    def close(self) -> None:
        self.node.closed_channels += 1

    def recv_exit_status(self) -> int:
        return -1 if self.status is None else self.status


class FakeTransport:
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.active = True

    def is_active(self) -> bool:
        return self.active

    def set_keepalive(self, seconds: int) -> None:
        pass

    def open_session(self) -> FakeChannel:
        if not self.active:
            raise EOFError("connection closed")
        return FakeChannel(self.node, self)


class FakeFile:
    def __init__(self, node: FakeNode, path: str) -> None:
        self.node, self.path, self.mode, self.data = node, path, None, b""

    def chmod(self, mode: int) -> None:
        self.mode = mode

    def write(self, data: bytes) -> None:
        assert self.mode is not None, "the file's mode is set before its content is written"
        self.data += data

    def __enter__(self) -> FakeFile:
        return self

    def __exit__(self, *exc) -> None:
        self.node.files[self.path] = (self.mode, self.data)
        self.node.uploads.append((self.path, self.mode, self.data))


class FakeSftp:
    def __init__(self, node: FakeNode) -> None:
        self.node = node

    def open(self, path: str, mode: str) -> FakeFile:
        if self.node.transport is None or not self.node.transport.active:
            raise EOFError("connection closed")
        return FakeFile(self.node, path)

    def close(self) -> None:
        pass


class FakeClient:
    """paramiko.SSHClient's surface as SshNode uses it, with paramiko's host key rules."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.host_keys = paramiko.HostKeys()
        self.policy: paramiko.MissingHostKeyPolicy = paramiko.RejectPolicy()
        self.transport: FakeTransport | None = None

    def load_host_keys(self, path: str) -> None:
        self.host_keys.load(path)

    def get_host_keys(self) -> paramiko.HostKeys:
        return self.host_keys

    def set_missing_host_key_policy(self, policy: paramiko.MissingHostKeyPolicy) -> None:
        self.policy = policy

    def connect(self, hostname: str, port: int = 22, username: str | None = None, **options) -> None:
        if not self.node.up:
            raise ConnectionRefusedError(111, "Connection refused")
        name = hostname if port == 22 else f"[{hostname}]:{port}"
        key = self.node.host_key
        known = (self.host_keys.lookup(name) or {}).get(key.get_name())
        if known is None:
            self.policy.missing_host_key(self, name, key)
        elif known != key:
            raise paramiko.BadHostKeyException(name, key, known)
        if not self.node.accept_login:
            raise paramiko.AuthenticationException("Authentication failed.")
        self.node.connections += 1
        self.transport = self.node.transport = FakeTransport(self.node)

    def get_transport(self) -> FakeTransport | None:
        return self.transport

    def open_sftp(self) -> FakeSftp:
        return FakeSftp(self.node)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.active = False
