"""What the user reads: the header line, a failed test's sandbox section, the terminal summary."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.config.options import RawSettings
from pytest_northflank.plugin.state import PluginState
from pytest_northflank.provisioning.depth import AUTO_CAP
from pytest_northflank.redaction import mask, secret_values
from pytest_northflank.run.stats import KeptSandbox, RunStats

if TYPE_CHECKING:
    from pytest_northflank.sandbox import Sandbox


# Commands shown per sandbox in a failure section, and log lines fetched for it.
SECTION_COMMANDS = 30
SECTION_LOG_LINES = 20
SECTION_PROCESS_LINES = 10


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
        image_line = _image_line(raw)
        if image_line:
            return [line, image_line]
    else:
        line = (
            f"northflank: backend={raw.backend_in_use} ({raw.backend_reason}) "
            f"api={str(raw.value('api_url')).rstrip('/')} project={raw.value('project')} "
            f"team={raw.value('team') or '-'} {common}"
        )
    return [line]


def _image_line(raw: RawSettings) -> str | None:
    """Whether the default image is in the emulator's cache (read from disk, no network)."""
    mode = raw.value("emulator_images") or os.environ.get("NF_EMULATOR_IMAGES", "pull")
    image = str(raw.value("image"))
    if mode == "off":
        return "northflank: images off: sandboxes use this machine's userland"
    from pytest_northflank.emulator.images.cache import peek
    from pytest_northflank.emulator.images.reference import parse_reference

    try:
        cached = peek(parse_reference(image).name)
    except (ValueError, OSError):
        cached = None
    if cached is not None:
        return f"northflank: image {image} from the image cache ({cached.manifest_digest[:19]})"
    then = (
        "the sandbox fails"
        if mode == "require"
        else "sandboxes use this machine's userland, with a notice per test"
    )
    return (
        f"northflank: image {image} is not in the image cache: pulled on first use; if no "
        f"registry answers, {then}"
    )


def image_section(notices: list[str]) -> str:
    """The 'northflank image' section of a test whose sandbox ran this machine's userland."""
    return "\n".join(notices)


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
        lines.extend(_process_lines(sandbox, nodeid))
        lines.extend(_log_tail(sandbox))
        parts.append(mask("\n".join(lines), secret_values(sandbox.options.env)))
    return "\n\n".join(parts)


def _process_lines(sandbox: Sandbox, nodeid: str) -> list[str]:
    """Each background process this test started: command, state, last output lines."""
    lines = []
    for process in sandbox.processes:
        if process.test not in (nodeid, None):
            continue
        lines.append(f"background process [{process.state}] {process.command}")
        lines.extend(f"  {line}" for line in process.tail(SECTION_PROCESS_LINES).splitlines())
    return lines


def add_failure_section(report: pytest.TestReport, nodeid: str, used: list[Sandbox]) -> None:
    """Put the section on the failure itself when pytest's failure text can carry one: the
    terminal shows it as before, and JUnit XML (which keeps only "Captured ..." sections of
    ``report.sections``) gets it inside <failure>/<error>."""
    section = sandbox_section(nodeid, used)
    addsection = getattr(report.longrepr, "addsection", None)
    if callable(addsection):
        addsection("northflank sandbox", section)
    else:
        report.sections.append(("northflank sandbox", section))


def junit_properties(used: list[Sandbox]) -> list[tuple[str, object]]:
    """``northflank.*`` properties of a test case: one set per sandbox it used."""
    properties: list[tuple[str, object]] = []
    for sandbox in used:
        properties += [
            ("northflank.sandbox", sandbox.name),
            ("northflank.service_id", sandbox.id),
            ("northflank.dashboard_url", sandbox.dashboard_url),
        ]
        if sandbox.provisioning_seconds is not None:
            properties.append(("northflank.provisioning_s", f"{sandbox.provisioning_seconds:.3f}"))
    return properties


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
    stats.merge(state.run.stats.to_json())
    for worker in state.worker_stats:
        stats.merge(worker)
    if not (
        stats.created
        or stats.api_requests
        or stats.kept
        or stats.failed
        or stats.cleanup_notes
        or stats.image_fallbacks
    ):
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "northflank")
    for line in summary_lines(stats):
        write(line)
    for note in stats.cleanup_notes:
        write(note)
    from pytest_northflank.plugin.xdist import splitting_dist_mode

    dist = splitting_dist_mode(state.config)
    copies = copies_line(stats.scoped, dist) if dist is not None else None
    if copies is not None:
        write(copies)
    if stats.kept:
        for line in kept_lines(stats.kept, state.run.run_id):
            write(line)


def copies_line(scoped: list[list[str]], dist: str) -> str | None:
    """One line when module- or class-scoped sandboxes were made once per xdist worker."""
    made = [tuple(entry) for entry in scoped]
    extra = len(made) - len(set(made))
    if extra <= 0:
        return None
    return (
        f"module/class-scoped sandboxes: {len(set(made))} made {len(made)} times ({extra} "
        f"{'copy' if extra == 1 else 'copies'}): --dist {dist} gives a module's tests to "
        "several workers, each making its own; --dist loadscope (or loadfile) keeps them on "
        "one worker, sharing one sandbox"
    )


def summary_lines(stats: RunStats) -> list[str]:
    lines = []
    modes = sorted({(e["isolation"], e["reason"]) for e in stats.emulators})
    isolation = "; ".join(f"isolation {mode} ({reason})" for mode, reason in modes)
    urls = sorted({e["url"] for e in stats.emulators})
    if len(urls) == 1:
        lines.append(f"embedded emulator at {urls[0]}, {isolation}")
    elif urls:
        lines.append(f"embedded emulators: {len(urls)}, {isolation}")
    for notice, tests in sorted(stats.image_fallbacks.items()):
        lines.append(f"{notice}; {tests} test{'s' if tests != 1 else ''}")
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
        return f"auto, reached depth {stats.warm_ahead_depth} (at most {AUTO_CAP} per process)"
    return f"depth {stats.warm_ahead_depth}"


def kept_lines(kept: list[KeptSandbox], run_id: str) -> list[str]:
    """Each kept sandbox, why, and the exact commands to get into it and to delete them."""
    from pytest_northflank.config.endpoints import is_northflank_api
    from pytest_northflank.config.options import DEFAULTS

    count = f"{len(kept)} sandbox{'es' if len(kept) != 1 else ''}"
    lines = [f"kept {count} (run {run_id}):"]
    reachable = [box for box in kept if box.backend == "northflank"]
    for box in kept:
        why = (
            f"{box.reason}: {', '.join(box.failed_tests)}" if box.failed_tests else "kept as asked"
        )
        service = "" if box.service_id == box.name else f"service {box.service_id}, "
        lines.append(f"  {box.name} ({service}project {box.project_id}; {why})")
        if box.backend != "northflank":
            continue
        if is_northflank_api(box.api_url):
            lines.append(f"    dashboard: {box.dashboard_url}")
        else:  # not Northflank's API: dashboard_url is the service's address in it
            lines.append(f"    api:    {box.dashboard_url}")
        target = _cli_target(box, DEFAULTS["api_url"])
        lines.append(f"    shell:  pytest-northflank shell {box.service_id}{target}")
        lines.append(f"    exec:   pytest-northflank exec {box.service_id}{target} -- CMD...")
    if reachable:
        lines.append(
            f"  delete them: pytest-northflank reap --run {run_id} --yes"
            f"{_cli_target(reachable[0], DEFAULTS['api_url'])}"
        )
    if any(box.backend == "emulator" for box in kept):
        lines.append(
            "  The embedded emulator stops with pytest, and its sandboxes with it. To keep one "
            "for inspection, run a standalone emulator (python -m pytest_northflank.emulator "
            "--port 8090 --token T) and point pytest at it: NORTHFLANK_API_TOKEN=T pytest "
            "--nf-api-url http://127.0.0.1:8090 --nf-project default-project --nf-keep "
            "on-failure"
        )
    return lines


def _cli_target(box: KeptSandbox, default_api_url: str) -> str:
    """`` --project P`` and, off the default API, `` --api-url URL``: what the command needs
    besides the token (taken from the environment only)."""
    target = f" --project {shlex.quote(box.project_id)}"
    if box.api_url.rstrip("/") != str(default_api_url).rstrip("/"):
        target += f" --api-url {shlex.quote(box.api_url)}"
    return target


def _seconds(value: object) -> str:
    try:
        return f"{float(str(value)):g}s"
    except ValueError:
        return str(value)


def progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    """A function printing one line on the terminal mid-test, or None where nobody would see it."""
    if hasattr(config, "workerinput"):
        return None  # an xdist worker's output goes nowhere
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(message: str) -> None:
        with (
            capture.global_and_fixture_disabled()
            if capture is not None
            else contextlib.nullcontext()
        ):
            reporter.write_line(f"northflank: {message}")

    return write
