"""What the user reads: the header line, a failed test's sandbox section, the terminal summary."""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.plugin import PluginState, RawSettings
    from pytest_northflank.sandbox import Sandbox
    from pytest_northflank.settings import Settings

# Commands shown per sandbox in a failure section, and log lines fetched for it.
SECTION_COMMANDS = 30
SECTION_LOG_LINES = 20


def header_lines(raw: RawSettings) -> list[str]:
    """One loud line: which backend and why, and what a sandbox is made of.

    Built from the values as given (no validation needed to print them).
    """
    tags = raw.value("tags")
    tags_text = ",".join(tags) if isinstance(tags, (list, tuple)) else str(tags)
    common = (
        f"image={raw.value('image')} plan={raw.value('plan')} tags={tags_text or '-'} "
        f"command={shlex.quote(str(raw.value('command')))} "
        f"ready-timeout={_seconds(raw.value('ready_timeout'))} keep={raw.value('keep')}"
    )
    if raw.backend_in_use == "emulator":
        line = (
            f"northflank: backend=emulator ({raw.backend_reason}) "
            f"isolation={raw.value('emulator_isolation')} "
            f"ready-delay={_seconds(raw.value('emulator_ready_delay'))} {common}"
        )
    else:
        line = (
            f"northflank: backend={raw.backend_in_use} ({raw.backend_reason}) "
            f"api={str(raw.value('api_url')).rstrip('/')} project={raw.value('project')} "
            f"team={raw.value('team') or '-'} {common}"
        )
    return [line]


def _seconds(value: object) -> str:
    try:
        return f"{float(str(value)):g}s"
    except ValueError:
        return str(value)


# ------------------------------------------------------------------------------------------
# Run statistics (per process; xdist workers send theirs to the controller as JSON)


@dataclass
class KeptSandbox:
    """A sandbox left running on purpose, and how to reach and delete it."""

    name: str
    service_id: str
    project_id: str
    dashboard_url: str
    backend: str
    api_url: str
    tests: list[str] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, sandbox: Sandbox, settings: Settings) -> KeptSandbox:
        return cls(
            name=sandbox.name,
            service_id=sandbox.id,
            project_id=sandbox.project_id,
            dashboard_url=sandbox.dashboard_url,
            backend=settings.backend_in_use,
            api_url=settings.api_url,
            tests=list(sandbox.tests),
            failed_tests=list(sandbox.failed_tests),
        )


@dataclass
class RunStats:
    """What this process did with sandboxes and the API."""

    created: int = 0
    deleted: int = 0
    failed: int = 0
    kept: list[KeptSandbox] = field(default_factory=list)
    # How long each test waited for its sandbox to be ready (create to ready, unless it was
    # made ahead).
    provisioning_seconds: list[float] = field(default_factory=list)
    # Warm-ahead: sandboxes made before a test asked, taken by a test, deleted unused.
    made_ahead: int = 0
    made_ahead_used: int = 0
    made_ahead_unused: int = 0
    # Warm-ahead's mode ("auto" or "fixed", None: off or unused) and the highest depth a
    # process used (the fixed depth, or the deepest auto reached).
    warm_ahead_mode: str | None = None
    warm_ahead_depth: int = 0
    api_requests: int = 0
    rate_limit_limit: int | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset_after: float | None = None
    rate_limit_observed: float | None = None
    # The embedded emulators started (one per process: xdist workers each have their own).
    emulators: list[dict[str, str]] = field(default_factory=list)
    # What the run's cleanup did beyond the fixtures' teardown (crashed workers, leftovers).
    cleanup_notes: list[str] = field(default_factory=list)

    def note_warm_ahead(self, mode: str | None, depth: int) -> None:
        if mode is not None:
            self.warm_ahead_mode = mode
        self.warm_ahead_depth = max(self.warm_ahead_depth, depth)

    def note_emulator(self, url: str, isolation: str, reason: str) -> None:
        self.emulators.append({"url": url, "isolation": isolation, "reason": reason})

    def record_client(self, client: NorthflankClient) -> None:
        self.api_requests += client.request_count
        rate = client.rate_limit
        if rate is not None:
            observed = rate.observed_at.timestamp()
            if self.rate_limit_observed is None or observed >= self.rate_limit_observed:
                self.rate_limit_limit = rate.limit
                self.rate_limit_remaining = rate.remaining
                self.rate_limit_reset_after = rate.reset_after
                self.rate_limit_observed = observed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, other: dict[str, Any]) -> None:
        self.created += int(other.get("created", 0))
        self.deleted += int(other.get("deleted", 0))
        self.failed += int(other.get("failed", 0))
        self.kept += [KeptSandbox(**kept) for kept in other.get("kept", [])]
        self.provisioning_seconds += [float(s) for s in other.get("provisioning_seconds", [])]
        self.made_ahead += int(other.get("made_ahead", 0))
        self.made_ahead_used += int(other.get("made_ahead_used", 0))
        self.made_ahead_unused += int(other.get("made_ahead_unused", 0))
        self.note_warm_ahead(other.get("warm_ahead_mode"), int(other.get("warm_ahead_depth", 0)))
        self.cleanup_notes += [str(note) for note in other.get("cleanup_notes", [])]
        self.api_requests += int(other.get("api_requests", 0))
        observed = other.get("rate_limit_observed")
        if observed is not None and (
            self.rate_limit_observed is None or observed >= self.rate_limit_observed
        ):
            self.rate_limit_limit = other.get("rate_limit_limit")
            self.rate_limit_remaining = other.get("rate_limit_remaining")
            self.rate_limit_reset_after = other.get("rate_limit_reset_after")
            self.rate_limit_observed = observed
        self.emulators += [dict(emulator) for emulator in other.get("emulators", [])]


# ------------------------------------------------------------------------------------------
# A failed test's section


def sandboxes_used_by(item: pytest.Item, sandboxes: list[Sandbox]) -> list[Sandbox]:
    """The sandboxes a test touched: made or used during it, or among its fixture values."""
    from pytest_northflank.sandbox import Sandbox

    in_fixtures = {
        id(value) for value in getattr(item, "funcargs", {}).values() if isinstance(value, Sandbox)
    }
    return [s for s in sandboxes if item.nodeid in s.tests or id(s) in in_fixtures]


def sandbox_section(nodeid: str, sandboxes: list[Sandbox]) -> str:
    """The 'northflank sandbox' section of a failed test's report (secret-looking values of
    the sandbox's environment masked)."""
    from pytest_northflank.sandbox import mask, secret_values

    parts = []
    for sandbox in sandboxes:
        lines = [
            f"sandbox {sandbox.name} (service {sandbox.id}, project {sandbox.project_id}, "
            f"image {sandbox.image}, plan {sandbox.plan})",
            f"dashboard: {sandbox.dashboard_url}",
        ]
        mine = [record for record in sandbox.history if record.test == nodeid]
        earlier = len(sandbox.history) - len(mine)
        if mine:
            lines.append("commands run by this test (exit code, seconds):")
            shown = mine[-SECTION_COMMANDS:]
            if len(mine) > len(shown):
                lines.append(f"  ... {len(mine) - len(shown)} earlier commands not shown")
            for record in shown:
                outcome = (
                    f"exit {record.exit_code}" if record.error is None else f"error: {record.error}"
                )
                lines.append(f"  [{outcome}, {record.duration:.2f}s] {record.command}")
        else:
            lines.append("no command was run in it by this test")
        if earlier:
            lines.append(f"({earlier} commands were run in it by other tests or fixtures)")
        lines.extend(_log_tail(sandbox))
        parts.append(mask("\n".join(lines), secret_values(sandbox.options.env)))
    return "\n\n".join(parts)


def _log_tail(sandbox: Sandbox) -> list[str]:
    if sandbox.deleted:
        return ["it was deleted already, and its logs with it"]
    try:
        log = sandbox.logs(SECTION_LOG_LINES)
    except Exception as error:  # the report must not fail because the logs could not be read
        return [f"logs unavailable: {error}"]
    if not log:
        return ["its main process wrote no log lines"]
    return [f"last {len(log)} log lines of its main process:", *(f"  {line}" for line in log)]


# ------------------------------------------------------------------------------------------
# The terminal summary


def write_summary(terminalreporter: Any, state: PluginState) -> None:
    stats = RunStats()
    if state.stats is not None:
        stats.merge(state.stats.to_json())
    for worker in state.worker_stats:
        stats.merge(worker)
    if not (
        stats.created or stats.api_requests or stats.kept or stats.failed or stats.cleanup_notes
    ):
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "northflank")
    for line in summary_lines(stats):
        write(line)
    for note in stats.cleanup_notes:
        write(note)
    if stats.kept:
        for line in kept_lines(stats.kept, state.run_id):
            write(line)


def summary_lines(stats: RunStats) -> list[str]:
    lines = []
    modes = sorted({(e["isolation"], e["reason"]) for e in stats.emulators})
    isolation = "; ".join(f"isolation {mode} ({reason})" for mode, reason in modes)
    urls = sorted({e["url"] for e in stats.emulators})
    if len(urls) == 1:
        lines.append(f"embedded emulator at {urls[0]}, {isolation}")
    elif urls:
        lines.append(f"embedded emulators: {len(urls)}, {isolation}")
    counts = f"sandboxes: {stats.created} created, {stats.deleted} deleted, {len(stats.kept)} kept"
    if stats.failed:
        counts += f", {stats.failed} never became ready"
    lines.append(counts)
    if stats.provisioning_seconds:
        import statistics

        waits = stats.provisioning_seconds
        lines.append(
            f"tests waited for sandboxes: median {statistics.median(waits):.2f} s, "
            f"max {max(waits):.2f} s"
        )
    if stats.made_ahead:
        lines.append(
            f"warm-ahead: {_warm_ahead_mode(stats)}; {stats.made_ahead} made ahead, "
            f"{stats.made_ahead_used} taken by tests, {stats.made_ahead_unused} deleted unused"
        )
    api = f"API requests: {stats.api_requests}"
    if stats.rate_limit_remaining is not None:
        api += f"; rate limit: {stats.rate_limit_remaining}"
        if stats.rate_limit_limit is not None:
            api += f" of {stats.rate_limit_limit}"
        api += " remaining this hour"
        if stats.rate_limit_reset_after is not None and stats.rate_limit_observed is not None:
            left = stats.rate_limit_reset_after - (time.time() - stats.rate_limit_observed)
            api += f" (resets in {max(left, 0):.0f} s)"
    lines.append(api)
    return lines


def _warm_ahead_mode(stats: RunStats) -> str:
    """``auto, reached depth 5 (at most 8 per process)`` or ``depth 3``."""
    if stats.warm_ahead_mode == "auto":
        from pytest_northflank.pool import AUTO_CAP

        return f"auto, reached depth {stats.warm_ahead_depth} (at most {AUTO_CAP} per process)"
    return f"depth {stats.warm_ahead_depth}"


def kept_lines(kept: list[KeptSandbox], run_id: str) -> list[str]:
    count = f"{len(kept)} sandbox{'es' if len(kept) != 1 else ''}"
    lines = [f"kept {count} (run {run_id}):"]
    for box in kept:
        why = f"failed: {', '.join(box.failed_tests)}" if box.failed_tests else "kept as asked"
        service = "" if box.service_id == box.name else f"service {box.service_id}, "
        lines.append(f"  {box.name} ({service}project {box.project_id}; {why})")
        if box.backend != "northflank":
            continue
        from pytest_northflank.provisioning import is_northflank_api

        if is_northflank_api(box.api_url):
            lines.append(f"    dashboard: {box.dashboard_url}")
            lines.append(
                f"    shell:  northflank exec service --project {box.project_id} "
                f"--service {box.service_id}   (the Northflank CLI)"
            )
        else:  # not Northflank's API: dashboard_url is the service's address in it
            lines.append(f"    api:    {box.dashboard_url}")
    if any(box.backend == "northflank" for box in kept):
        lines.append(f"  delete them: pytest-northflank reap --run {run_id} --yes")
    if any(box.backend == "emulator" for box in kept):
        lines.append(
            "  The embedded emulator stops with pytest, and its sandboxes with it. To keep one "
            "for inspection, run a standalone emulator (python -m pytest_northflank.emulator "
            "--port 8090 --token T) and point pytest at it: NORTHFLANK_API_TOKEN=T pytest "
            "--nf-api-url http://127.0.0.1:8090 --nf-project default-project --nf-keep "
            "on-failure"
        )
    return lines
