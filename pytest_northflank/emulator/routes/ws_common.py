"""What the exec and log-tail WebSockets share: JSON frames (text or binary), the ``init``
handshake with the token in the first frame, and sending that survives a client that left."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from pytest_northflank.emulator.context import EmulatorContext

INIT_TIMEOUT_SECONDS = 30.0
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # auth failed, or a frame broke the protocol
CLOSE_ERROR = 1011  # the emulator failed
CLOSE_DROPPED = 1011  # fault injection: the connection breaks mid-stream
#: After a refusal, how long the client gets to read it and close before the server does.
REFUSAL_LINGER_SECONDS = 2.0


class FrameError(Exception):
    """A client frame is not what the protocol allows; the message says why."""


class ClientGone(Exception):
    """The client closed the connection."""


def parse_frame(message: Mapping[str, Any]) -> dict[str, Any]:
    """One WebSocket message (text, or binary holding UTF-8 JSON) as a JSON object."""
    raw: str | bytes | None = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    try:
        frame = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested thousands deep; a client must not crash a connection.
        raise FrameError(f"a frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise FrameError(f"a frame must be a JSON object, got {type(frame).__name__}")
    return frame


async def receive_frame(websocket: WebSocket, timeout: float | None = None) -> dict[str, Any]:
    """The next frame; :class:`ClientGone` when the client closed."""
    message = await asyncio.wait_for(websocket.receive(), timeout)
    if message["type"] == "websocket.disconnect":
        raise ClientGone
    return parse_frame(message)


class FrameSender:
    """Sends JSON frames one at a time; remembers when the client is gone instead of raising."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.closed = False

    async def send(self, frame: dict[str, Any]) -> bool:
        text = json.dumps(frame, separators=(",", ":"))
        async with self.lock:
            if self.closed:
                return False
            try:
                await self.websocket.send_text(text)
            except Exception:  # the client left: every ASGI server raises its own kind
                self.closed = True
                return False
            return True

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        async with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.websocket.application_state == WebSocketState.DISCONNECTED:
                return
            with contextlib.suppress(Exception):  # already gone
                await self.websocket.close(code, reason[:120])

    async def refuse(self, frame: dict[str, Any], code: int) -> None:
        """Send a last frame, let the client read it and hang up, then close.

        Closing at once would race clients that are still sending: the Python SDK sends
        ``stdInEnd`` right after ``init`` and reports a failed send instead of our frame."""
        if not await self.send(frame):
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_client_closes(), REFUSAL_LINGER_SECONDS)
        await self.close(code)

    async def _until_client_closes(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return

    async def error(self, message: str, code: int = CLOSE_NORMAL) -> None:
        """An ``error`` frame, then close: how every refusal ends (never a hang)."""
        await self.refuse({"type": "error", "data": {"message": message}}, code)


async def handshake(
    websocket: WebSocket, sender: FrameSender, ctx: EmulatorContext
) -> dict[str, Any] | None:
    """Read the client's ``init`` frame and check its token.

    Returns the init ``data`` once the token is right (the caller sends its ``init`` answer);
    on anything else it answers with a failure and closes, and returns ``None``.
    """
    try:
        frame = await receive_frame(websocket, INIT_TIMEOUT_SECONDS)
    except ClientGone:
        sender.closed = True
        return None
    except asyncio.TimeoutError:
        await sender.error(f"no init frame within {INIT_TIMEOUT_SECONDS:g} seconds", CLOSE_POLICY)
        return None
    except FrameError as exc:
        await sender.error(f"the first frame must be an init frame: {exc}", CLOSE_POLICY)
        return None
    if frame.get("type") != "init":
        await sender.error(
            f"the first frame must be an init frame, got type {frame.get('type')!r}",
            CLOSE_POLICY,
        )
        return None
    data = frame.get("data")
    auth = data.get("auth") if isinstance(data, dict) else None
    token = auth.get("apiToken") if isinstance(auth, dict) else None
    if not isinstance(data, dict) or not isinstance(auth, dict):
        message = "the init frame carries no data.auth object"
    elif auth.get("type") != "apiToken":
        message = f"unsupported auth type {auth.get('type')!r}; expected 'apiToken'"
    elif not isinstance(token, str) or not token:
        message = "the init frame carries no API token (data.auth.apiToken)"
    elif not ctx.token_matches(token):
        message = "Invalid API token"
    else:
        return data
    await sender.refuse(
        {"type": "init", "data": {"auth": "failed", "message": message}}, CLOSE_POLICY
    )
    return None
