"""Port forwarding, natively: local TCP listeners whose connections are carried to a service's
port through Northflank's tunnel (contract section 6).

For each local connection one WebSocket is opened to
``wss://{targetDomain}/tunnel/[teams/{t}/]projects/{p}/services/{s}/instance/{pod}/port/{n}``
with ``Authorization: Bearer`` (no subprotocol; permessage-deflate offered), and raw bytes
travel in binary frames both ways, as the official JS client does. The protocol has no
half-close: when the local side shuts down writing, the WebSocket is closed (the remote end
then sees EOF); when the remote end finishes, the local socket gets EOF and is closed.

Everything runs on one event loop in one thread per :class:`PortForwarder`, started on first
use and joined by :meth:`PortForwarder.close`: no thread outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from pytest_northflank.errors import NetworkError

logger = logging.getLogger("pytest_northflank.forwarding")

CHUNK = 64 * 1024
_T = TypeVar("_T")


@dataclass
class _Listener:
    server: asyncio.Server
    url: str
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    #: the last failure of a tunnel (shown by :meth:`PortForwarder.last_error`)
    error: str | None = None


class PortForwarder:
    """Local listeners carried through the tunnel; thread-safe.

    ``token`` returns the API token (read at each connection, never stored in a message);
    ``ssl_context`` verifies the tunnel endpoint (add an extra CA for the emulator);
    ``user_agent`` goes on every upgrade.
    """

    def __init__(
        self,
        token: Callable[[], str],
        *,
        ssl_context: ssl.SSLContext,
        open_timeout: float = 30.0,
        user_agent: str | None = None,
    ) -> None:
        self._token = token
        self._ssl = ssl_context
        self._open_timeout = open_timeout
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listeners: dict[tuple[str, ...], _Listener] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<PortForwarder listeners={len(self._listeners)}>"

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise NetworkError("port forwarding is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="nf-port-forwarding", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    # -- listeners ---------------------------------------------------------------------------

    def forward(self, key: tuple[str, ...], tunnel_url: str) -> tuple[str, int]:
        """Listen on ``127.0.0.1`` (a free port) and carry each connection to ``tunnel_url``;
        the same ``key`` returns the listener it already has."""
        with self._lock:
            existing = self._listeners.get(key)
        if existing is not None and existing.url == tunnel_url:
            host, port = existing.server.sockets[0].getsockname()[:2]
            return str(host), int(port)
        if existing is not None:
            self.stop(key)
        return self._run(self._listen(key, tunnel_url))

    async def _listen(self, key: tuple[str, ...], url: str) -> tuple[str, int]:
        listener: _Listener | None = None

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            assert listener is not None
            listener.connections.add(task)
            try:
                await self._carry(listener, reader, writer)
            except asyncio.CancelledError:
                # Closing the listener cancels its connections; a handler task that ends
                # cancelled makes asyncio log an error, so this one ends normally.
                writer.close()
            finally:
                listener.connections.discard(task)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        listener = _Listener(server, url)
        with self._lock:
            self._listeners[key] = listener
        host, port = server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def last_error(self, key: tuple[str, ...]) -> str | None:
        """Why the latest tunnel of that listener failed, if one did."""
        with self._lock:
            listener = self._listeners.get(key)
        return None if listener is None else listener.error

    def stop(self, key: tuple[str, ...]) -> None:
        """Close one listener and its open connections (idempotent)."""
        with self._lock:
            listener = self._listeners.pop(key, None)
            loop = self._loop
        if listener is not None and loop is not None and not self._closed:
            asyncio.run_coroutine_threadsafe(_shut(listener), loop).result()

    def stop_matching(self, prefix: tuple[str, ...]) -> None:
        """Close every listener whose key starts with ``prefix``."""
        with self._lock:
            keys = [key for key in self._listeners if key[: len(prefix)] == prefix]
        for key in keys:
            self.stop(key)

    def close(self) -> None:
        """Close every listener and connection, stop the loop and join its thread."""
        with self._lock:
            if self._closed:
                return
            listeners = list(self._listeners.values())
            self._listeners.clear()
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:

            async def shut_all() -> None:
                await asyncio.gather(*(_shut(listener) for listener in listeners))

            asyncio.run_coroutine_threadsafe(shut_all(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        with self._lock:
            self._closed = True

    # -- one connection ----------------------------------------------------------------------

    async def _open(self, url: str) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self._token()}"}
        return await connect(
            url,
            ssl=self._ssl if url.startswith("wss:") else None,
            additional_headers=headers,
            user_agent_header=self._user_agent,
            open_timeout=self._open_timeout,
            max_size=None,
            ping_interval=None,  # a quiet connection is not a dead one
        )

    async def _carry(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            websocket = await self._open(listener.url)
        except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
            listener.error = _describe(exc)
            logger.warning("port forwarding: could not open the tunnel: %s", listener.error)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            return

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, OSError, ConnectionClosed):
                while chunk := await reader.read(CHUNK):
                    await websocket.send(chunk)
            # Local EOF: the protocol's only way to say so is closing the WebSocket.
            await websocket.close()

        async def downstream() -> None:
            try:
                async for message in websocket:
                    writer.write(message if isinstance(message, bytes) else message.encode())
                    await writer.drain()
            except ConnectionClosed as exc:
                if exc.rcvd is None or exc.rcvd.code not in (1000, 1001, 1005):
                    listener.error = f"the tunnel broke: {exc}"
            except (ConnectionError, OSError):
                return
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()  # the remote end finished: EOF to the local client

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Either end finishing ends the connection (no half-close in the protocol).
            await asyncio.wait(tasks, timeout=0.5)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await websocket.close()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _shut(listener: _Listener) -> None:
    listener.server.close()
    for task in list(listener.connections):
        task.cancel()
    await asyncio.gather(*listener.connections, return_exceptions=True)
    await listener.server.wait_closed()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        response = exc.response
        body = response.body.decode("utf-8", "replace").strip() if response.body else ""
        return (
            f"HTTP {response.status_code}: {body[:300]}" if body else f"HTTP {response.status_code}"
        )
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out opening the tunnel"
    return f"{type(exc).__name__}: {exc}"
