"""Service logs: a range fetch over REST and a live tail over a WebSocket
(``northflank-api.md`` section 5)."""

from __future__ import annotations

import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Literal

import websockets.exceptions as ws_errors
from websockets.sync.client import ClientConnection

from pytest_northflank.client._closing import ClosesOnExit
from pytest_northflank.client.arguments import check_count
from pytest_northflank.client.connector import ExecConnector
from pytest_northflank.client.frames import (
    ErrorFrame,
    LogTailEntry,
    LogTailInit,
    LogTailLines,
    decode_log_tail_frame,
    encode_log_tail_init,
)
from pytest_northflank.client.models import LogLine
from pytest_northflank.client.rest import RestTransport
from pytest_northflank.errors import ArgumentError, AuthenticationError, TransportError

__all__ = ["LogTail", "fetch_logs", "logs_query", "open_tail"]

# Close codes that end a tail normally (the official Python SDK treats these as EOF).
_NORMAL_CLOSE = (1000, 1001, 1005)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def logs_query(
    *,
    query_type: Literal["range", "tail"],
    line_limit: int | None,
    log_type: str | None = "runtime",
    direction: str | None = None,
    duration: int | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    container_name: str | None = None,
    text_includes: str | None = None,
    regex_includes: str | None = None,
) -> dict[str, str]:
    """The query string of a logs request; ``None`` values are left out. Bad values raise
    ``ArgumentError`` naming the argument."""
    if line_limit is not None:
        check_count("line_limit", line_limit, minimum=1)
    if duration is not None:
        check_count("duration", duration, minimum=1)
    if direction not in (None, "backward", "forward"):
        raise ArgumentError(f"direction must be 'backward' or 'forward', got {direction!r}")
    values: dict[str, Any] = {
        "queryType": query_type,
        "type": log_type,
        "lineLimit": line_limit,
        "direction": direction,
        "duration": duration,
        "startTime": start_time.isoformat() if start_time else None,
        "endTime": end_time.isoformat() if end_time else None,
        "containerName": container_name,
        "textIncludes": text_includes,
        "regexIncludes": regex_includes,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def _entries(payload: Any) -> list[dict[str, Any]]:
    """The list of log entries in a range response: ``data`` itself, or under ``logs``/``data``
    (shapes the official Python SDK also accepts)."""
    node = payload
    for _ in range(4):
        if isinstance(node, list):
            return [entry for entry in node if isinstance(entry, dict)]
        if not isinstance(node, dict):
            return []
        if isinstance(node.get("logs"), list):
            node = node["logs"]
        elif "data" in node:
            node = node["data"]
        else:
            return []
    return []


def fetch_logs(rest: RestTransport, path: str, query: dict[str, str]) -> list[LogLine]:
    """``GET {path}?queryType=range&...`` -> log lines, oldest first.

    A backward range arrives newest first and is reversed; lines that all carry a timestamp
    are then sorted by it (stably), so callers can take the last lines as the newest.
    """
    envelope = rest.request("GET", path, params=query)
    lines = [LogLine.model_validate(entry) for entry in _entries(envelope.get("data", envelope))]
    if query.get("direction", "backward") == "backward":
        lines.reverse()  # a backward range comes newest first
    stamps = [line.ts for line in lines]
    if all(stamp is not None for stamp in stamps):
        lines.sort(key=lambda line: line.ts or _EPOCH)
    return lines


class LogTail(ClosesOnExit):
    """A live log tail: iterate it for :class:`LogLine` items as they arrive.

    Iteration ends when the server closes the stream normally or you call :meth:`close`;
    an ``error`` frame or a broken connection raises ``TransportError``. With
    ``recv_timeout`` set, iteration also ends after that many seconds without a line.
    Use it as a context manager.
    """

    def __init__(self, conn: ClientConnection, *, recv_timeout: float | None, where: str) -> None:
        self._conn = conn
        self._recv_timeout = recv_timeout
        self._where = where
        self._buffer: deque[LogLine] = deque()
        self._done = False

    def __repr__(self) -> str:
        return f"LogTail({self._where!r}{', closed' if self._done else ''})"

    def __iter__(self) -> Iterator[LogLine]:
        return self

    def __next__(self) -> LogLine:
        while not self._buffer:
            if self._done:
                raise StopIteration
            try:
                raw = self._conn.recv(timeout=self._recv_timeout)
            except TimeoutError:
                self.close()
                raise StopIteration from None
            except ws_errors.ConnectionClosed as exc:
                self._done = True
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in _NORMAL_CLOSE:
                    raise StopIteration from None
                raise TransportError(
                    f"log tail of {self._where} broke (close code {code})"
                ) from None
            frame = decode_log_tail_frame(raw)
            if isinstance(frame, LogTailLines):
                self._buffer.extend(_line_from_entry(e) for e in frame.entries)
            elif isinstance(frame, ErrorFrame):
                self.close()
                raise TransportError(
                    f"log tail of {self._where}: the server reported an error: {frame.message}"
                )
            # A repeated init is ignored, as the official clients do.
        return self._buffer.popleft()

    def close(self) -> None:
        """Stop tailing. Idempotent."""
        if not self._done:
            self._done = True
        self._conn.close()


def _line_from_entry(entry: LogTailEntry) -> LogLine:
    return LogLine.model_validate(
        {"containerId": entry.container_id, "log": entry.log, "ts": entry.ts}
    )


def open_tail(
    connector: ExecConnector,
    rest: RestTransport,
    path: str,
    query: dict[str, str],
    *,
    recv_timeout: float | None,
) -> LogTail:
    """Open a tail: connect, send the text ``init`` frame, check the server's init."""
    conn = connector.connect(f"{path}?{urllib.parse.urlencode(query)}", what="log tail")
    try:
        conn.send(encode_log_tail_init(rest.token))
        deadline = time.monotonic() + connector.open_timeout
        raw = conn.recv(timeout=max(0.001, deadline - time.monotonic()))
        frame = decode_log_tail_frame(raw)
        if isinstance(frame, ErrorFrame):
            raise TransportError(
                f"log tail of {path}: the server reported an error: {frame.message}"
            )
        if not isinstance(frame, LogTailInit):
            raise TransportError(f"log tail of {path}: expected an init frame first")
        if not frame.ok:
            detail = f": {frame.message}" if frame.message else ""
            raise AuthenticationError(
                f"log tail init refused (auth failed){detail}", status=401, method="WS", path=path
            )
    except TimeoutError:
        conn.close()
        raise TransportError(
            f"log tail of {path}: no init frame within {connector.open_timeout:g}s"
        ) from None
    except ws_errors.ConnectionClosed as exc:
        conn.close()
        code = exc.rcvd.code if exc.rcvd is not None else None
        raise TransportError(f"log tail of {path} closed before its init (code {code})") from None
    except BaseException:
        conn.close()
        raise
    return LogTail(conn, recv_timeout=recv_timeout, where=path)


def chronological(lines: list[LogLine]) -> list[LogLine]:
    """Log lines oldest first, whichever way the API ordered them (stable for equal times)."""
    if lines and all(line.ts is not None for line in lines):
        return sorted(lines, key=lambda line: line.ts or _EPOCH)
    return lines
