"""One SSH connection to a build node, on paramiko: host key checks, auth, commands, SFTP uploads.

The target is resolved like OpenSSH does it: `[live]` settings first, then `~/.ssh/config` (HostName,
User, Port, IdentityFile, ProxyJump), then defaults. Host keys are checked against known_hosts; an
unknown key is refused unless the user opted in to trust-on-first-use, and a changed key is always
refused. Every command line sent is recorded in `commands` (they never hold a secret: secrets travel
on a command's standard input).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import getpass
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from amidsl.iterate import zip_strict
from amidsl.live.settings import LiveSettings

CONNECT_TIMEOUT = 20.0
KEEPALIVE_SECONDS = 30
LOST_STATUS = 255  # what ssh(1) reports when the connection fails, used for a dropped connection
STOP_SECONDS = 60.0  # how long a stopped command may take to clean up after Ctrl-C
STOP_POLL_SECONDS = 0.5


class NodeConnectionError(Exception):
    """The node cannot be reached or refuses us: the message says why and what to do."""


class HostKeyError(NodeConnectionError):
    """The node's host key is unknown or has changed."""


class ConnectionLost(NodeConnectionError):
    """The connection dropped while a command ran."""


class CommandInterrupted(KeyboardInterrupt):
    """Ctrl-C while a stoppable command ran: its exit status once stopped (None: it did not end in
    time) and its output."""

    def __init__(self, status: int | None, output: str) -> None:
        super().__init__("interrupted")
        self.status = status
        self.output = output


@dataclass(frozen=True)
class SshTarget:
    """Everything needed to open the SSH connection to one node."""

    name: str  # as the user gave it (an address or a ~/.ssh/config alias)
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    known_hosts: str = os.path.expanduser("~/.ssh/known_hosts")
    trust_on_first_use: bool = False
    ssh_config: str | None = None

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this node (`[host]:port` unless the port is 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def read_ssh_config(path: str | None) -> paramiko.SSHConfig:
    """The user's OpenSSH client config (empty when the file does not exist)."""
    if path and os.path.isfile(os.path.expanduser(path)):
        return paramiko.SSHConfig.from_path(os.path.expanduser(path))
    return paramiko.SSHConfig()


def resolve_target(host: str, live: LiveSettings, default_user: str | None = None) -> SshTarget:
    """Combine [live] settings, ~/.ssh/config and defaults into an SshTarget (settings win)."""
    config = read_ssh_config(live.ssh_config)
    found: dict[str, Any] = config.lookup(host)
    identity_files = [live.identity_file] if live.identity_file else list(found.get("identityfile", []))
    return SshTarget(
        name=host,
        hostname=found.get("hostname", host),
        port=live.port or int(found.get("port", 22)),
        user=live.user or found.get("user") or default_user or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(f) for f in identity_files),
        proxy_jump=found.get("proxyjump") if found.get("proxyjump", "none") != "none" else None,
        known_hosts=os.path.expanduser(live.known_hosts),
        trust_on_first_use=live.trust_on_first_use,
        ssh_config=live.ssh_config,
    )


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key, or (trust-on-first-use) accept it and append it to known_hosts."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.target.trust_on_first_use:
            raise HostKeyError(
                f"the host key of {self.target.name} ({hostname}) is not in {self.target.known_hosts}: "
                f"it offers {key.get_name()} {fingerprint(key)}. Fix: check that fingerprint with the "
                "node's owner (or its console), then add the key to known_hosts (e.g. "
                f"`ssh -p {self.target.port} {self.target.user}@{self.target.hostname}` once), or pass "
                "--trust-new-host-key (trust_on_first_use = true in [live]) to accept a new node's key"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = Path(self.target.known_hosts)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Append without joining the file's last line if it lacks its newline.
        ends_open = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        with path.open("a", encoding="ascii") as out:
            out.write(("\n" if ends_open else "") + f"{hostname} {key.get_name()} {key.get_base64()}\n")


@dataclass
class SshNode:
    """One SSH connection to the node: run commands (streaming output), upload files over SFTP."""

    target: SshTarget
    client_factory: Callable[[], paramiko.SSHClient] = paramiko.SSHClient
    commands: list[str] = field(default_factory=list)
    _client: paramiko.SSHClient | None = None
    _jumps: list[paramiko.SSHClient] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        """Whether the login user is root (no sudo needed)."""
        return self.target.user == "root"

    def connect(self) -> None:
        """Open the connection, checking the host key and authenticating; clear errors on failure."""
        self.close()
        sock = self._jump_socket()
        self._client = self._open(self.target, sock)

    def reconnect(self) -> None:
        """Open a fresh connection after a drop."""
        self.connect()

    def _jump_targets(self) -> list[SshTarget]:
        """The ProxyJump hosts (`[user@]host[:port]`, comma-separated), each resolved like a target."""
        if not self.target.proxy_jump:
            return []
        settings = LiveSettings(
            ssh_config=self.target.ssh_config or "",
            known_hosts=self.target.known_hosts,
            trust_on_first_use=self.target.trust_on_first_use,
        )
        hops = []
        for hop in self.target.proxy_jump.split(","):
            user, _, rest = hop.strip().rpartition("@")
            name, _, port = rest.partition(":")
            found = resolve_target(name, settings, default_user=self.target.user)
            hops.append(
                dataclasses.replace(
                    found,
                    user=user or found.user,
                    port=int(port) if port.isdigit() else found.port,
                    # A hop without its own IdentityFile tries the node's keys (and the agent).
                    identity_files=found.identity_files or self.target.identity_files,
                )
            )
        return hops

    def _jump_socket(self) -> Any:
        """A channel through the ProxyJump host(s) to the target, or None for a direct connection."""
        sock = None
        hops = self._jump_targets()
        if not hops:
            return None
        for hop, following in zip_strict(hops, [*hops[1:], self.target]):
            client = self._open(hop, sock)
            self._jumps.append(client)
            transport = client.get_transport()
            assert transport is not None
            sock = transport.open_channel(
                "direct-tcpip", (following.hostname, following.port), ("127.0.0.1", 0)
            )
        return sock

    def _open(self, target: SshTarget, sock: Any) -> paramiko.SSHClient:
        client = self.client_factory()
        if os.path.isfile(target.known_hosts):
            client.load_host_keys(target.known_hosts)
        client.set_missing_host_key_policy(_HostKeyPolicy(target))
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                key_filename=list(target.identity_files) or None,
                allow_agent=True,
                look_for_keys=not target.identity_files,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                sock=sock,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as err:
            client.close()
            raise HostKeyError(
                f"HOST KEY CHANGED for {target.name} ({target.known_hosts_name}): {target.known_hosts} "
                f"has {err.expected_key.get_name()} {fingerprint(err.expected_key)}, the node now offers "
                f"{err.key.get_name()} {fingerprint(err.key)}. Someone may be intercepting the connection, "
                "or the node was rebuilt. Fix: if the change is expected, remove the old entry "
                f"(ssh-keygen -R '{target.known_hosts_name}' -f {target.known_hosts}) and connect again"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            tried = ", ".join(target.identity_files) or "the default keys in ~/.ssh"
            raise NodeConnectionError(
                f"authentication as {target.user!r} to {target.name} ({target.hostname}:{target.port}) "
                f"failed (tried {tried} and the SSH agent). Fix: set user and identity_file in [live] "
                "(or User/IdentityFile in ~/.ssh/config), or add the key to ssh-agent"
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as err:
            client.close()
            raise NodeConnectionError(
                f"cannot connect to {target.name} ({target.hostname}:{target.port}): {err}. Fix: check "
                "that the node is running, the address and port, and that a firewall or security group "
                "lets SSH through"
            ) from None
        transport = client.get_transport()
        if transport is not None:
            # Notice a dead connection during a long, quiet action (a big ec2-bundle-vol run).
            transport.set_keepalive(KEEPALIVE_SECONDS)
        return client

    def _connected(self) -> paramiko.SSHClient:
        if self._client is None:
            raise NodeConnectionError(f"not connected to {self.target.name}")
        return self._client

    def run(
        self,
        command: str,
        stdin: bytes = b"",
        on_line: Callable[[str], None] = lambda line: None,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[int, str]:
        """Run a command (stderr merged into stdout); call on_line per line; return status and output.

        Ctrl-C closes the channel, unless `stop` is given: then stop() is called (it returns False
        while it cannot stop the command yet, e.g. before the command said its pid) until the command
        ends, for at most STOP_SECONDS, and CommandInterrupted says how it ended.
        """
        self.commands.append(command)
        client = self._connected()
        lines: list[str] = []
        channel = reader = None
        try:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(f"the connection to {self.target.name} is closed")
            channel = transport.open_session()
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            reader = _LineReader(channel, lines, on_line)
            while reader.read():
                pass
            status = channel.recv_exit_status()
        except CommandInterrupted:
            raise
        except KeyboardInterrupt:
            if reader is not None and stop is not None:
                raise self._stop(reader, stop) from None
            # Ctrl-C: close the channel, so the command loses its output and stops, before amidsl
            # takes the credentials off the node.
            if channel is not None:
                channel.close()
            raise
        except ConnectionLost:
            raise
        except (OSError, EOFError, paramiko.SSHException) as err:
            raise ConnectionLost(f"the connection to {self.target.name} dropped: {err}") from None
        if status == -1:
            # paramiko's value when the channel closed without an exit status: the link went away.
            raise ConnectionLost(f"the connection to {self.target.name} dropped before the command finished")
        return status, "\n".join(lines)

    def stream(
        self, command: str, stdin: bytes = b""
    ) -> tuple[Callable[[int], bytes], Callable[[], tuple[int, str]], Callable[[], None]]:
        """Run a command whose standard output is binary: (read, finish, stop). read(n) gives up to n
        bytes of its stdout (b"" at its end); finish() waits for it and gives its exit status and its
        stderr; stop() closes the channel, so that a command whose output is no longer read ends."""
        self.commands.append(command)
        client = self._connected()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionLost(f"the connection to {self.target.name} is closed")
        channel = transport.open_session()
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()

        def read(size: int) -> bytes:
            try:
                return channel.recv(size)
            except (OSError, EOFError, paramiko.SSHException) as err:
                raise ConnectionLost(f"the connection to {self.target.name} dropped: {err}") from None

        def finish() -> tuple[int, str]:
            said = b""
            try:
                while True:
                    more = channel.recv_stderr(65536)
                    if not more:
                        break
                    said += more
                status = channel.recv_exit_status()
            finally:
                channel.close()
            return status, said.decode("utf-8", "replace")

        return read, finish, channel.close

    def _stop(self, reader: _LineReader, stop: Callable[[], bool]) -> CommandInterrupted:
        """After Ctrl-C: stop the command and read what it says until it ends (or time is up)."""
        deadline = time.monotonic() + STOP_SECONDS
        # Lines still go to on_line: the pid may be in one of them, and the last say what was removed.
        channel, lines = reader.channel, reader.lines
        channel.settimeout(STOP_POLL_SECONDS)
        stopped = stop()
        try:
            while time.monotonic() < deadline:
                try:
                    if not reader.read():
                        return CommandInterrupted(channel.recv_exit_status(), "\n".join(lines))
                except TimeoutError:
                    pass  # nothing said yet: try stop() again if it could not act before
                stopped = stopped or stop()
            return CommandInterrupted(None, "\n".join(lines))
        except (OSError, EOFError, paramiko.SSHException) as err:
            return CommandInterrupted(None, "\n".join([*lines, f"(the connection dropped: {err})"]))
        finally:
            channel.close()

    def check(self, command: str) -> str:
        """Run a command that must succeed; return its output."""
        status, output = self.run(command)
        if status != 0:
            raise NodeConnectionError(f"{command!r} failed on {self.target.name} (exit {status}): {output}")
        return output.strip()

    def upload(self, remote_path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a file on the node over SFTP, private (mode set before any content is written)."""
        try:
            sftp = self._connected().open_sftp()
            try:
                with sftp.open(remote_path, "wb") as remote:
                    remote.chmod(mode)
                    remote.write(data)
            finally:
                sftp.close()
        except (OSError, EOFError, paramiko.SSHException) as err:
            raise ConnectionLost(f"uploading {remote_path} to {self.target.name} failed: {err}") from None

    def close(self) -> None:
        """Close the connection (and any jump hosts)."""
        for client in [self._client, *reversed(self._jumps)]:
            if client is not None:
                with contextlib.suppress(OSError, paramiko.SSHException):
                    client.close()
        self._client = None
        self._jumps = []


class _LineReader:
    """Reads a channel's output, splitting it into lines (the last one may lack its newline)."""

    def __init__(self, channel: paramiko.Channel, lines: list[str], on_line: Callable[[str], None]) -> None:
        self.channel, self.lines, self.on_line = channel, lines, on_line
        self.pending = b""

    def read(self) -> bool:
        """Read one chunk and hand on its complete lines; False at the end of the output."""
        chunk = self.channel.recv(32768)
        if not chunk:
            if self.pending:
                self.lines.append(self.pending.decode("utf-8", "replace"))
                self.pending = b""
                self.on_line(self.lines[-1])
            return False
        self.pending += chunk
        *complete, self.pending = self.pending.split(b"\n")
        for raw in complete:
            self.lines.append(raw.decode("utf-8", "replace"))
            self.on_line(self.lines[-1])
        return True
