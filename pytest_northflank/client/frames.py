"""Pure encode/decode of the exec and log-tail WebSocket frames (no I/O).

Wire format: ``northflank-api.md`` sections 3 and 5.2. Every function here works on one
WebSocket message at a time; nothing keeps state between frames, so each stdout/stderr frame
is decoded on its own and every stdin payload we build is decodable on its own.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_northflank.errors import ExecError, NorthflankError, TransportError

__all__ = [
    "CompletionFrame",
    "ErrorFrame",
    "ExecInitFrame",
    "LogTailEntry",
    "LogTailFrame",
    "LogTailInit",
    "LogTailLines",
    "OutputFrame",
    "ServerFrame",
    "Stream",
    "build_exec_context",
    "coerce_exit_code",
    "decode_exec_frame",
    "decode_log_tail_frame",
    "encode_exec_init",
    "encode_log_tail_init",
    "encode_payload",
    "encode_resize",
    "encode_stdin_end",
    "log_entry_from_wire",
]

Stream = Literal["stdout", "stderr"]

# How much of a bad frame to quote in an error message: enough to diagnose, never megabytes.
_QUOTE_LIMIT = 200


@dataclass(frozen=True)
class ExecInitFrame:
    """The server's first frame: whether auth succeeded and where the command landed."""

    ok: bool
    instance_name: str | None = None
    container_name: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class OutputFrame:
    """One chunk of the command's stdout or stderr, already decoded to raw bytes."""

    stream: Stream
    data: bytes


@dataclass(frozen=True)
class CompletionFrame:
    """The last frame of a command: exit code (``None`` if unreadable), status, message."""

    exit_code: int | None
    status: str | None
    message: str | None


@dataclass(frozen=True)
class ErrorFrame:
    """A fatal ``error`` frame from the server."""

    message: str


ServerFrame = ExecInitFrame | OutputFrame | CompletionFrame | ErrorFrame


def build_exec_context(
    command: str | Sequence[str] | None,
    *,
    shell: str | None = "none",
    encoding: str = "base64",
    tty: bool = False,
    tty_rows: int | None = None,
    tty_columns: int | None = None,
    instance_name: str | None = None,
    container_name: str | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
) -> dict[str, Any]:
    """The ``context`` of an exec init frame. ``None`` fields are omitted: the server rejects
    literal ``null`` in them."""
    fields: dict[str, Any] = {
        "command": command if command is None or isinstance(command, str) else list(command),
        "shell": shell,
        "encoding": encoding,
        "tty": tty,
        "ttyRows": tty_rows,
        "ttyColumns": tty_columns,
        "instanceName": instance_name,
        "containerName": container_name,
        "user": user,
        "group": group,
    }
    return {key: value for key, value in fields.items() if value is not None}


def encode_exec_init(token: str, context: dict[str, Any]) -> str:
    """The client's first exec frame. It carries the token: never log or quote it."""
    if any(value is None for value in context.values()):
        raise ValueError("exec context must not contain null fields")
    return json.dumps(
        {
            "type": "init",
            "data": {"auth": {"type": "apiToken", "apiToken": token}, "context": context},
        }
    )


def encode_log_tail_init(token: str) -> str:
    """The client's first log-tail frame (auth only, no context). Carries the token."""
    return json.dumps({"type": "init", "data": {"auth": {"type": "apiToken", "apiToken": token}}})


_PAYLOAD_PREFIX = b'{"type":"payload","data":"'
_PAYLOAD_SUFFIX = b'"}'


def encode_payload(chunk: bytes) -> bytes:
    """A stdin ``payload`` frame carrying ``chunk`` as base64, ready to send as one message.

    Returned as UTF-8 JSON bytes (sent as a binary frame, as the JS client does): base64 needs
    no JSON escaping, so building the bytes directly skips a str round trip per 256 KiB.
    Callers keep chunks a multiple of 3 bytes (except the last) so that even a server that
    concatenated the strings before decoding would read the same bytes.
    """
    return _PAYLOAD_PREFIX + base64.b64encode(chunk) + _PAYLOAD_SUFFIX


def encode_stdin_end() -> str:
    """The frame that closes the command's stdin (EOF)."""
    return '{"type":"stdInEnd"}'


def encode_resize(rows: int, columns: int) -> str:
    """A tty ``resize`` frame."""
    if rows <= 0 or columns <= 0:
        raise ValueError(f"terminal size must be positive, got rows={rows} columns={columns}")
    return json.dumps({"type": "resize", "data": {"ttyRows": rows, "ttyColumns": columns}})


def coerce_exit_code(value: Any) -> int | None:
    """``exitCode`` arrives as a number or as a numeric string ("42"); anything else -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _quote(raw: str | bytes) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    return repr(text[:_QUOTE_LIMIT]) + ("..." if len(text) > _QUOTE_LIMIT else "")


def _load_object(
    raw: str | bytes, what: str, error: type[NorthflankError] = ExecError
) -> dict[str, Any]:
    """The frame as a JSON object; anything else raises ``error`` naming ``what`` sent it."""
    try:
        frame = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested thousands deep, which no real frame is.
        raise error(f"{what} sent a frame that is not JSON: {_quote(raw)}") from exc
    if not isinstance(frame, dict):
        raise error(f"{what} sent a frame that is not a JSON object: {_quote(raw)}")
    return frame


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        message = data.get("message")
        if message:
            return str(message)
    if isinstance(data, str) and data:
        return data
    return "unknown error"


def _decode_output(data: Any, *, base64_encoded: bool, raw: str | bytes) -> bytes:
    if not isinstance(data, str):
        raise ExecError(f"exec server sent output that is not a string: {_quote(raw)}")
    if not base64_encoded:
        return data.encode("utf-8")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ExecError(f"exec server sent output that is not valid base64: {_quote(raw)}") from exc


def decode_exec_frame(raw: str | bytes, *, base64_output: bool = True) -> ServerFrame:
    """Decode one server exec frame (text or binary). Unknown types and bad JSON raise ExecError.

    ``base64_output`` says whether the init context asked for ``encoding: base64``; then each
    stdOut/stdErr frame is base64 of raw bytes, decoded on its own.
    """
    frame = _load_object(raw, "exec server")
    kind = frame.get("type")
    data = frame.get("data")
    if kind == "stdOut":
        return OutputFrame("stdout", _decode_output(data, base64_encoded=base64_output, raw=raw))
    if kind == "stdErr":
        return OutputFrame("stderr", _decode_output(data, base64_encoded=base64_output, raw=raw))
    if kind == "completion":
        if not isinstance(data, dict):
            raise ExecError(f"exec server sent a completion without data: {_quote(raw)}")
        status = data.get("status")
        message = data.get("message")
        return CompletionFrame(
            exit_code=coerce_exit_code(data.get("exitCode")),
            status=str(status) if status is not None else None,
            message=str(message) if message else None,
        )
    if kind == "init":
        info = data if isinstance(data, dict) else {}
        context = info.get("context")
        if not isinstance(context, dict):
            context = {}
        instance = context.get("instanceName")
        container = context.get("containerName")
        message = info.get("message")
        return ExecInitFrame(
            ok=info.get("auth") == "successful",
            instance_name=str(instance) if instance is not None else None,
            container_name=str(container) if container is not None else None,
            message=str(message) if message else None,
        )
    if kind == "error":
        return ErrorFrame(_error_message(data))
    raise ExecError(f"exec server sent an unknown frame type {kind!r}: {_quote(raw)}")


@dataclass(frozen=True)
class LogTailEntry:
    """One raw log line of a tail batch (or a range fetch), before it becomes a ``LogLine``."""

    container_id: str
    log: str
    ts: str | None


@dataclass(frozen=True)
class LogTailInit:
    """The log tail's first server frame."""

    ok: bool
    message: str | None


@dataclass(frozen=True)
class LogTailLines:
    """A ``log-lines`` batch."""

    entries: list[LogTailEntry]


LogTailFrame = LogTailInit | LogTailLines | ErrorFrame


def log_entry_from_wire(entry: dict[str, Any]) -> LogTailEntry:
    """Read one ``{containerId, log, ts}`` entry, accepting the aliases the official Python SDK
    accepts (``message``/``line`` for the text, ``timestamp``/``time`` for the stamp)."""
    text = next((entry[k] for k in ("log", "message", "line") if entry.get(k) is not None), "")
    stamp = next((entry[k] for k in ("ts", "timestamp", "time") if entry.get(k) is not None), None)
    return LogTailEntry(
        container_id=str(entry.get("containerId") or entry.get("container_id") or ""),
        log=str(text),
        ts=None if stamp is None else str(stamp),
    )


def decode_log_tail_frame(raw: str | bytes) -> LogTailFrame:
    """Decode one log-tail frame. Bad JSON or an unknown type raises TransportError (the
    stream is unusable); an ``error`` frame is returned for the caller to raise."""
    frame = _load_object(raw, "log tail", TransportError)
    kind = frame.get("type")
    data = frame.get("data")
    if kind == "init":
        info = data if isinstance(data, dict) else {}
        message = info.get("message")
        return LogTailInit(
            ok=info.get("auth") == "successful", message=str(message) if message else None
        )
    if kind == "log-lines":
        if not isinstance(data, list):
            raise TransportError(f"log tail sent log-lines without a list: {_quote(raw)}")
        return LogTailLines(
            [log_entry_from_wire(entry) for entry in data if isinstance(entry, dict)]
        )
    if kind == "error":
        return ErrorFrame(_error_message(data))
    raise TransportError(f"log tail sent an unknown frame type {kind!r}: {_quote(raw)}")
