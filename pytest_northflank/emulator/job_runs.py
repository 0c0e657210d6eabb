"""Job runs: each run is real containers of the emulator running the job's command.

A run starts one container (pod) after another: exit code 0 is ``SUCCESS``; a non-zero exit
starts a new attempt until ``backoffLimit`` retries are spent, then the run is ``FAILED``; an
``activeDeadlineSeconds`` that passes (counted from the run's start, across attempts, as
Kubernetes does) kills the container and fails the run; an abort does the same at once. The
driver is one asyncio task per run; blocking runtime calls run on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pytest_northflank.emulator.jobs import JobRecord, JobSpec
from pytest_northflank.emulator.runtime import (
    PLAN_MEMORY_MB,
    CommandNotRunnable,
    Container,
    ContainerRuntime,
    LogRecord,
)
from pytest_northflank.emulator.state import EmulatorState, pod_name, utcnow
from pytest_northflank.errors import ConflictError, EmulatorError, NotFoundError

RunStatus = Literal["RUNNING", "SUCCESS", "FAILED"]
POLL_SECONDS = 0.05
MAX_RUNS_KEPT = 50


@dataclass
class Attempt:
    """One container (pod) of a run."""

    name: str
    created_at: datetime
    container: Container | None = None
    logs: list[LogRecord] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None

    def log_lines(self) -> list[LogRecord]:
        if self.container is not None:
            return self.container.log_lines()
        return list(self.logs)

    def task_status(self) -> str:
        if self.container is not None and self.exit_code is None:
            return "TASK_RUNNING"
        if self.exit_code is None and self.error is None:
            return "TASK_STARTING"
        return "TASK_FINISHED" if self.exit_code == 0 else "TASK_FAILED"


@dataclass
class RunRecord:
    id: str
    run_name: str
    backoff_limit: int
    deadline: int | None
    argv: list[str]
    env: dict[str, str]
    started_at: datetime
    memory_mb: int | None = None  #: the job's plan's memory, for each attempt's container
    status: RunStatus = "RUNNING"
    concluded_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)
    message: str | None = None
    task: asyncio.Task[None] | None = None
    aborted: bool = False

    @property
    def concluded(self) -> bool:
        return self.status != "RUNNING"

    def counters(self) -> dict[str, int]:
        failed = sum(1 for a in self.attempts if a.exit_code not in (None, 0) or a.error)
        if self.status == "FAILED" and failed == 0:
            failed = 1
        return {
            "active": 0 if self.concluded else 1,
            "succeeded": 1 if self.status == "SUCCESS" else 0,
            "failed": failed,
            "completions": 1 if self.status == "SUCCESS" else 0,
        }


class JobRuns:
    """The jobs of every project and their runs, driven on the server's event loop."""

    def __init__(self, state: EmulatorState, runtime: ContainerRuntime) -> None:
        self.state = state
        self.runtime = runtime
        self.jobs: dict[tuple[str, str], JobRecord] = {}
        self.runs: dict[tuple[str, str], list[RunRecord]] = {}

    # -- jobs ---------------------------------------------------------------------------------

    def job(self, project_id: str, job_id: str) -> JobRecord:
        self.state.project(project_id)
        try:
            return self.jobs[(project_id, job_id)]
        except KeyError:
            raise NotFoundError(
                f"Job {job_id!r} not found in project {project_id!r}", status=404
            ) from None

    def of_project(self, project_id: str) -> list[JobRecord]:
        return [job for (p, _), job in self.jobs.items() if p == project_id]

    def add(self, project_id: str, spec: JobSpec, *, upsert: bool) -> JobRecord:
        self.state.project(project_id)
        now = utcnow()
        existing = self.jobs.get((project_id, spec.id))
        if existing is not None:
            if not upsert:
                raise ConflictError(
                    f"A job with the id {spec.id!r} (from the name {spec.name!r}) already "
                    f"exists in project {project_id!r}",
                    status=409,
                )
            existing.spec, existing.updated_at = spec, now
            return existing
        job = JobRecord(project_id, spec, now, now)
        self.jobs[(project_id, spec.id)] = job
        self.runs[(project_id, spec.id)] = []
        return job

    async def delete(self, job: JobRecord) -> None:
        """Forget the job; its active runs are killed (prefect deletes without aborting)."""
        job.deleted = True
        self.jobs.pop((job.project_id, job.id), None)
        runs = self.runs.pop((job.project_id, job.id), [])
        await asyncio.gather(*(self.abort(run) for run in runs))

    async def reset(self) -> None:
        jobs = list(self.jobs.values())
        await asyncio.gather(*(self.delete(job) for job in jobs))

    # -- runs ---------------------------------------------------------------------------------

    def runs_of(self, job: JobRecord) -> list[RunRecord]:
        """Newest first."""
        return list(reversed(self.runs.get((job.project_id, job.id), [])))

    def run(self, job: JobRecord, run_id: str) -> RunRecord:
        for run in self.runs.get((job.project_id, job.id), []):
            if run.id == run_id:
                return run
        raise NotFoundError(f"Run {run_id!r} of job {job.id!r} not found", status=404)

    def running_attempts(self, job: JobRecord) -> list[Attempt]:
        """Containers of the job that run now (exec targets), newest run first."""
        return [
            attempt
            for run in self.runs_of(job)
            for attempt in run.attempts
            if attempt.container is not None and attempt.container.is_running()
        ]

    def start(self, job: JobRecord, argv: list[str], env: dict[str, str]) -> RunRecord:
        spec = job.spec
        if spec.image is None:
            raise ConflictError(
                f"Job {job.id!r} has no image yet: set deployment.external.imagePath first",
                status=409,
            )
        if not argv:
            raise ConflictError(
                f"Job {job.id!r} runs its image's own command, which the emulator cannot know "
                "(images are not inspected): set deployment.docker.customCommand",
                status=409,
            )
        run = RunRecord(
            id=str(uuid.uuid4()),
            run_name=f"{job.id}-{secrets.token_hex(12)}",
            backoff_limit=spec.backoff_limit,
            deadline=spec.active_deadline,
            argv=list(argv),
            env=dict(env),
            started_at=utcnow(),
            memory_mb=PLAN_MEMORY_MB.get(spec.plan),
        )
        kept = self.runs.setdefault((job.project_id, job.id), [])
        kept.append(run)
        del kept[: max(len(kept) - MAX_RUNS_KEPT, 0)]
        run.task = asyncio.get_running_loop().create_task(self._drive(job, run))
        return run

    async def abort(self, run: RunRecord) -> None:
        """Kill the run's container; a run that already concluded stays as it is."""
        if run.concluded:
            return
        run.aborted = True
        task = run.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not run.concluded:
            self._conclude(run, "FAILED", "The run was aborted")

    async def _drive(self, job: JobRecord, run: RunRecord) -> None:
        started = time.monotonic()
        attempt: Attempt | None = None
        try:
            for _ in range(run.backoff_limit + 1):
                attempt = Attempt(name=pod_name(job.id), created_at=utcnow())
                run.attempts.append(attempt)
                code = await self._attempt(attempt, run, started)
                if code == 0:
                    self._conclude(run, "SUCCESS")
                    return
                if code is None:  # the deadline passed
                    self._conclude(
                        run, "FAILED", f"DeadlineExceeded: the run passed activeDeadlineSeconds "
                        f"({run.deadline})"
                    )  # fmt: skip
                    return
            self._conclude(
                run, "FAILED", f"BackoffLimitExceeded: the command failed "
                f"{len(run.attempts)} time(s) (backoffLimit {run.backoff_limit})"
            )  # fmt: skip
        finally:
            if attempt is not None:
                await self._finish(attempt)

    async def _attempt(self, attempt: Attempt, run: RunRecord, started: float) -> int | None:
        """The exit code, or None when the deadline passed (the container is then killed)."""
        starting = asyncio.ensure_future(
            asyncio.to_thread(
                functools.partial(
                    self.runtime.start,
                    attempt.name,
                    list(run.argv),
                    dict(run.env),
                    memory_mb=run.memory_mb,
                )
            )
        )
        try:
            container = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Aborted while the container was starting: stop it once it is there.
            with contextlib.suppress(Exception):
                late = await starting
                await asyncio.to_thread(late.stop, 0.0)
            raise
        except CommandNotRunnable as exc:
            attempt.error, attempt.exit_code = f"{exc}", exc.exit_code
            return exc.exit_code
        except EmulatorError as exc:
            attempt.error, attempt.exit_code = f"The container could not be started: {exc}", 1
            return 1
        attempt.container = container
        while True:
            code = container.exit_code()
            if code is not None:
                attempt.exit_code = code
                await self._finish(attempt)
                return code
            if run.deadline is not None and time.monotonic() - started >= run.deadline:
                await self._finish(attempt)
                return None
            await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    async def _finish(attempt: Attempt) -> None:
        """Stop the attempt's container (if still there) and keep its log."""
        container, attempt.container = attempt.container, None
        if container is None:
            return
        await asyncio.to_thread(container.stop, 0.0)
        attempt.logs = container.log_lines()
        if attempt.exit_code is None:
            attempt.exit_code = container.exit_code()

    @staticmethod
    def _conclude(run: RunRecord, status: RunStatus, message: str | None = None) -> None:
        run.status, run.message, run.concluded_at = status, message, utcnow()
