"""Service logs: a range over REST and a live tail over a WebSocket (contract section 5).

The log is the main process's output, line by line, across the service's instances (a
restart or a pause keeps the earlier lines). ``containerId`` is the instance (pod) name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from pytest_northflank.emulator.context import context_of, ok
from pytest_northflank.emulator.deployments import service_logs
from pytest_northflank.emulator.routes.rest import SERVICE, api_routes
from pytest_northflank.emulator.routes.ws_common import (
    CLOSE_NORMAL,
    ClientGone,
    FrameError,
    FrameSender,
    handshake,
    receive_frame,
)
from pytest_northflank.emulator.runtime import LogRecord
from pytest_northflank.emulator.state import ServiceRecord, iso, utcnow
from pytest_northflank.errors import ApiValidationError, NorthflankError

DEFAULT_LINE_LIMIT = 100
# Streams log lines to a tail WebSocket until the client (the listener task) leaves.
StreamStarter = Callable[[FrameSender, "asyncio.Task[None]"], Awaitable[None]]
MAX_LINE_LIMIT = 10_000
LOG_TYPES = ("runtime", "ingress", "mesh", "cdn")
TAIL_POLL_SECONDS = 0.1
TAIL_BATCH_LINES = 200


@dataclass
class LogQuery:
    """The filters of a logs request (range or tail)."""

    line_limit: int
    direction: str
    runtime: bool  # ``type`` asks for runtime logs (the only kind the emulator has)
    container_name: str
    since: datetime | None
    until: datetime | None
    includes: str | None
    not_includes: str | None
    regex: re.Pattern[str] | None
    not_regex: re.Pattern[str] | None

    def matches(self, container: str, record: LogRecord) -> bool:
        """Whether ``record`` of ``container`` (a service's id, a job run's container name)
        passes the filters."""
        if not self.runtime or self.container_name not in ("all", container):
            return False
        if self.since is not None and record.ts < self.since:
            return False
        if self.until is not None and record.ts > self.until:
            return False
        text = record.text
        if self.includes is not None and self.includes not in text:
            return False
        if self.not_includes is not None and self.not_includes in text:
            return False
        if self.regex is not None and not self.regex.search(text):
            return False
        return not (self.not_regex is not None and self.not_regex.search(text))


def _bad(name: str, message: str) -> ApiValidationError:
    return ApiValidationError(
        f"Invalid query parameter {name}: {message}",
        status=400,
        details=[{"path": [name], "message": message}],
    )


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(name, f"{text[:40]!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _regex(query: Mapping[str, str], name: str) -> re.Pattern[str] | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise _bad(name, f"not a valid regular expression: {exc}") from None


def parse_log_query(query: Any) -> LogQuery:
    """Read the query string of a logs request (repeated ``type`` keys are allowed)."""
    types = query.getlist("type") if hasattr(query, "getlist") else []
    types = [part for value in types for part in value.split(",") if part]
    for value in types:
        if value not in LOG_TYPES:
            raise _bad("type", f"{value[:20]!r} is not one of {', '.join(LOG_TYPES)}")
    limit_text = query.get("lineLimit")
    line_limit = DEFAULT_LINE_LIMIT
    if limit_text:
        try:
            line_limit = int(limit_text)
        except ValueError:
            line_limit = 0
        if not 1 <= line_limit <= MAX_LINE_LIMIT:
            raise _bad("lineLimit", f"must be an integer from 1 to {MAX_LINE_LIMIT}")
    direction = query.get("direction") or "backward"
    if direction not in ("forward", "backward"):
        raise _bad("direction", "must be forward or backward")
    since = _time(query, "startTime")
    duration = query.get("duration")
    if duration:
        try:
            seconds = float(duration)
        except ValueError:
            seconds = -1
        if seconds <= 0:
            raise _bad("duration", "must be a positive number of seconds")
        window_start = utcnow() - timedelta(seconds=seconds)
        since = window_start if since is None else max(since, window_start)
    return LogQuery(
        line_limit=line_limit,
        direction=direction,
        runtime=not types or "runtime" in types,
        container_name=query.get("containerName") or "all",
        since=since,
        until=_time(query, "endTime"),
        includes=query.get("textIncludes"),
        not_includes=query.get("textNotIncludes"),
        regex=_regex(query, "regexIncludes"),
        not_regex=_regex(query, "regexNotIncludes"),
    )


def log_entry(instance_name: str, record: LogRecord) -> dict[str, Any]:
    return {"containerId": instance_name, "log": record.text, "ts": iso(record.ts)}


async def fetch_logs(request: Request) -> Response:
    state = context_of(request).state
    query_type = request.query_params.get("queryType") or "range"
    if query_type != "range":
        raise _bad("queryType", "must be range over HTTP (tail needs a WebSocket upgrade)")
    query = parse_log_query(request.query_params)
    service = state.service(request.path_params["projectId"], request.path_params["serviceId"])
    lines = [(name, r) for name, r in service_logs(service) if query.matches(service.id, r)]
    if query.direction == "backward":
        chosen = list(reversed(lines[-query.line_limit :]))  # newest first
    else:
        chosen = lines[: query.line_limit]
    return ok([log_entry(name, record) for name, record in chosen])


class _Follower:
    """Reads a service's new log lines across instance changes."""

    def __init__(self, service: ServiceRecord) -> None:
        self.service = service
        instance = service.instance
        self.instance_name = instance.name if instance is not None else None
        container = instance.container if instance is not None else None
        lines = container.log_lines() if container is not None else []
        self.next_index = lines[-1].index + 1 if lines else 0

    def new_lines(self) -> list[tuple[str, LogRecord]]:
        found: list[tuple[str, LogRecord]] = []
        instance = self.service.instance
        if instance is None or instance.name != self.instance_name:
            # The instance was replaced: its last lines are in old_logs now.
            found += [
                (name, record)
                for name, record in self.service.old_logs
                if name == self.instance_name and record.index >= self.next_index
            ]
            self.instance_name = instance.name if instance is not None else None
            self.next_index = 0
        if instance is not None and instance.container is not None:
            records = instance.container.log_lines(self.next_index)
            if records:
                self.next_index = records[-1].index + 1
            found += [(instance.name, record) for record in records]
        return found


async def serve_tail(
    websocket: WebSocket,
    open_stream: Callable[[], StreamStarter],
) -> None:
    """The log-tail WebSocket's life, shared by services and jobs: authenticate, resolve what
    to stream (``open_stream``; an API error there is sent as an error frame after a
    successful init, as Northflank does), stream until the client leaves, close normally."""
    ctx = context_of(websocket)
    await websocket.accept()
    sender = FrameSender(websocket)
    if await handshake(websocket, sender, ctx) is None:
        return
    try:
        stream = open_stream()
    except NorthflankError as exc:
        await sender.send({"type": "init", "data": {"auth": "successful"}})
        await sender.error(str(getattr(exc, "api_message", exc)))
        return
    await sender.send({"type": "init", "data": {"auth": "successful"}})
    listener = asyncio.create_task(until_client_leaves(websocket))
    try:
        await stream(sender, listener)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    await sender.close(CLOSE_NORMAL)


async def tail_logs(websocket: WebSocket) -> None:
    def open_stream() -> StreamStarter:
        if (websocket.query_params.get("queryType") or "tail") != "tail":
            raise _bad("queryType", "must be tail over a WebSocket")
        query = parse_log_query(websocket.query_params)
        service = context_of(websocket).state.service(
            websocket.path_params["projectId"], websocket.path_params["serviceId"]
        )
        return lambda sender, listener: _stream(service, query, sender, listener)

    await serve_tail(websocket, open_stream)


async def until_client_leaves(websocket: WebSocket) -> None:
    """Clients send nothing after init; read (and ignore) until they close."""
    while True:
        try:
            await receive_frame(websocket)
        except ClientGone:
            return
        except FrameError:
            continue


async def _stream(
    service: ServiceRecord,
    query: LogQuery,
    sender: FrameSender,
    listener: asyncio.Task[None],
) -> None:
    follower = _Follower(service)
    backlog = [(n, r) for n, r in service_logs(service) if query.matches(service.id, r)]
    pending = backlog[-query.line_limit :]
    while True:
        for start in range(0, len(pending), TAIL_BATCH_LINES):
            batch = pending[start : start + TAIL_BATCH_LINES]
            frame = {"type": "log-lines", "data": [log_entry(n, r) for n, r in batch]}
            if not await sender.send(frame):
                return
        if service.deleted:
            return  # the service is gone: end the tail normally
        try:
            await asyncio.wait_for(asyncio.shield(listener), TAIL_POLL_SECONDS)
            return  # the client left
        except asyncio.TimeoutError:
            pass
        pending = [(n, r) for n, r in follower.new_lines() if query.matches(service.id, r)]


LOG_PATH = f"{SERVICE}/logs"
ROUTES: list[BaseRoute] = [
    *api_routes(LOG_PATH, fetch_logs, ["GET"]),
    WebSocketRoute(f"/v1{LOG_PATH}", tail_logs),
    WebSocketRoute(f"/v1/teams/{{teamId}}{LOG_PATH}", tail_logs),
]
