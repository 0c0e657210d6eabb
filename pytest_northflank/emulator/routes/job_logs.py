"""Logs of job runs: a range over REST and a live tail over a WebSocket (sections 5, 14.5).

The log is the output of every container (attempt) of the job's runs, oldest first;
``runId`` narrows it to one run, ``containerName`` to one container. ``containerId`` in each
line is the container's (pod's) name, as in ``GET .../jobs/{j}/containers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from pytest_northflank.emulator.context import context_of, ok
from pytest_northflank.emulator.job_runs import JobRuns, RunRecord
from pytest_northflank.emulator.jobs import JobRecord
from pytest_northflank.emulator.routes.logs import (
    LogQuery,
    StreamStarter,
    log_entry,
    parse_log_query,
    serve_tail,
)
from pytest_northflank.emulator.routes.rest import api_routes
from pytest_northflank.emulator.routes.ws_common import (
    FrameSender,
)
from pytest_northflank.emulator.runtime import LogRecord
from pytest_northflank.errors import ApiValidationError

JOB_LOGS = "/projects/{projectId}/jobs/{jobId}/logs"
TAIL_POLL_SECONDS = 0.1
TAIL_BATCH_LINES = 200


def job_log_lines(
    jobs: JobRuns, job: JobRecord, run: RunRecord | None
) -> list[tuple[str, LogRecord]]:
    """(container name, line) of the job's runs (or of ``run``), oldest first."""
    runs = [run] if run is not None else list(reversed(jobs.runs_of(job)))
    lines: list[tuple[str, LogRecord]] = []
    for each in runs:
        for attempt in each.attempts:
            lines += [(attempt.name, record) for record in attempt.log_lines()]
    return lines


def _run(jobs: JobRuns, job: JobRecord, query: Mapping[str, str]) -> RunRecord | None:
    run_id = query.get("runId")
    return jobs.run(job, run_id) if run_id else None


async def fetch_job_logs(request: Request) -> Response:
    ctx = context_of(request)
    if (request.query_params.get("queryType") or "range") != "range":
        raise ApiValidationError(
            "Invalid query parameter queryType: must be range over HTTP (tail needs a "
            "WebSocket upgrade)",
            status=400,
        )
    query = parse_log_query(request.query_params)
    job = ctx.jobs.job(request.path_params["projectId"], request.path_params["jobId"])
    lines = [
        (name, record)
        for name, record in job_log_lines(ctx.jobs, job, _run(ctx.jobs, job, request.query_params))
        if query.matches(name, record)
    ]
    if query.direction == "backward":
        chosen = list(reversed(lines[-query.line_limit :]))
    else:
        chosen = lines[: query.line_limit]
    return ok([log_entry(name, record) for name, record in chosen])


async def tail_job_logs(websocket: WebSocket) -> None:
    def open_stream() -> StreamStarter:
        query = parse_log_query(websocket.query_params)
        jobs = context_of(websocket).jobs
        job = jobs.job(websocket.path_params["projectId"], websocket.path_params["jobId"])
        run = _run(jobs, job, websocket.query_params)
        return lambda sender, listener: _stream(jobs, job, run, query, sender, listener)

    await serve_tail(websocket, open_stream)


async def _stream(
    jobs: JobRuns,
    job: JobRecord,
    run: RunRecord | None,
    query: LogQuery,
    sender: FrameSender,
    listener: asyncio.Task[None],
) -> None:
    seen: set[tuple[str, int]] = set()
    first = True
    while True:
        fresh = [
            (name, record)
            for name, record in job_log_lines(jobs, job, run)
            if (name, record.index) not in seen and query.matches(name, record)
        ]
        seen.update((name, record.index) for name, record in fresh)
        if first:
            fresh, first = fresh[-query.line_limit :], False
        for start in range(0, len(fresh), TAIL_BATCH_LINES):
            batch = fresh[start : start + TAIL_BATCH_LINES]
            frame = {"type": "log-lines", "data": [log_entry(n, r) for n, r in batch]}
            if not await sender.send(frame):
                return
        if job.deleted:
            return
        try:
            await asyncio.wait_for(asyncio.shield(listener), TAIL_POLL_SECONDS)
            return
        except asyncio.TimeoutError:
            pass


ROUTES: list[BaseRoute] = [
    *api_routes(JOB_LOGS, fetch_job_logs, ["GET"]),
    WebSocketRoute(f"/v1{JOB_LOGS}", tail_job_logs),
    WebSocketRoute(f"/v1/teams/{{teamId}}{JOB_LOGS}", tail_job_logs),
]
