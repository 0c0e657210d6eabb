"""Reaching a sandbox's ports from the host: connections made inside the sandbox's network
namespace, and the ``127.0.0.1`` listeners that publish its public ports.

A connection goes to ``127.0.0.1:<port>`` *inside* the sandbox (as Kubernetes port-forwarding
does), so a server bound to the sandbox's loopback is reachable too. Nothing listens on the
host's wildcard address: the official client binds ``127.24.x.y:<internalPort>`` on this
machine, and a ``0.0.0.0:<internalPort>`` listener would make it refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

from pytest_northflank.emulator.runtime import Container, ContainerRuntime
from pytest_northflank.errors import EmulatorError

PUBLIC_PROTOCOLS = ("HTTP", "HTTP/2")
CHUNK = 64 * 1024


def reachable(runtime: ContainerRuntime) -> str | None:
    """Why ports cannot be reached on this emulator, or None when they can."""
    if runtime.network is None:
        return (
            "the emulator runs without network namespaces (directory isolation: "
            f"{runtime.isolation_reason}), so sandboxes would share this machine's network; "
            "ports, forwarding and hostnames need namespace isolation (Linux, root)"
        )
    return None


async def connect_into(
    runtime: ContainerRuntime, container: Container, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``port`` on the sandbox's own loopback.

    Raises :class:`EmulatorError` when the emulator has no network or the sandbox refuses.
    """
    network, attachment = runtime.network, container.network
    if network is None or attachment is None:
        raise EmulatorError(reachable(runtime) or "the sandbox is not on the network")
    sock = await asyncio.to_thread(network.socket_in, attachment)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise EmulatorError(
            f"nothing accepts connections on port {port} in sandbox "
            f"{container.sandbox_id!r} ({exc.strerror or exc})"
        ) from None
    return await asyncio.open_connection(sock=sock)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Relay two connections both ways, half-closes passed on, until both directions end."""
    try:
        await asyncio.gather(pump(a[0], b[1]), pump(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


@dataclass
class PublishedPorts:
    """The ``127.0.0.1`` listeners of one sandbox's public HTTP ports: internal -> host port."""

    listeners: dict[int, int] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _relays: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self.listeners.clear()


async def publish(
    runtime: ContainerRuntime, container: Container, ports: list[dict[str, Any]]
) -> PublishedPorts:
    """Listen on ``127.0.0.1`` (a free port each) for every public HTTP port of ``ports``."""
    published = PublishedPorts()
    if container.network is None:
        return published
    for port in ports:
        if not port.get("public") or port.get("protocol") not in PUBLIC_PROTOCOLS:
            continue
        internal = int(port["internalPort"])

        async def accepted(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, internal: int = internal
        ) -> None:
            task = asyncio.current_task()
            assert task is not None
            published._relays.add(task)
            try:
                inside = await connect_into(runtime, container, internal)
                await splice((reader, writer), inside)
            except EmulatorError:
                writer.close()  # nothing listens inside: the client sees the connection close
            except asyncio.CancelledError:
                writer.close()  # closed with the sandbox; a handler ending cancelled is logged
            finally:
                published._relays.discard(task)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0, family=socket.AF_INET)
        published._servers.append(server)
        published.listeners[internal] = server.sockets[0].getsockname()[1]
    return published
