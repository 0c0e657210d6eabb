"""pytest entry point ``northflank``: options and their ini twins, markers, the report header,
failure sections and the terminal summary.

Loading this module costs next to nothing: it imports pytest and the fixture definitions only.
Settings (pydantic), the API client (httpx, websockets) and the emulator are imported when a
session starts or when a test first asks for a sandbox.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.config.options import (
    MARKER_HELP,
    NORTHFLANK_MARKER_HELP,
    OPTIONS,
    SANDBOX_FIXTURES,
)
from pytest_northflank.errors import ConfigError
from pytest_northflank.plugin import xdist
from pytest_northflank.plugin.fixtures import sandbox_markers
from pytest_northflank.plugin.state import STATE_KEY, FixtureContext, PluginState, get_state

if TYPE_CHECKING:
    from pytest_northflank.provisioning.warm_ahead import Demand

# --------------------------------------------------------------------------------------------
# Options and settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("northflank", "Northflank sandboxes (pytest-northflank)")
    for spec in OPTIONS:
        help_text = spec.help
        if spec.env:
            help_text += f" Environment: {', '.join(spec.env)}."
        group.addoption(
            spec.flag,
            dest=spec.dest,
            action="append" if spec.repeatable else "store",
            default=None,
            metavar=spec.metavar,
            help=help_text,
        )
        if spec.repeatable:
            parser.addini(spec.ini, help=help_text, type="args")
        else:
            # default None tells "not in the ini file" apart from an empty value.
            parser.addini(spec.ini, help=help_text, type="string", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line("markers", NORTHFLANK_MARKER_HELP)
    config.stash[STATE_KEY] = PluginState(config=config)
    xdist.register_controller(config)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = get_state(session.config)
    raw = state.require_raw()
    problem = raw.usage_problem()
    if problem is not None:
        raise pytest.UsageError(f"pytest-northflank: {problem}")
    if raw.given:
        # Something was configured, so something can be wrong: say so before any test runs.
        # (Defaults are valid; a run that sets nothing defers pydantic to the first sandbox.)
        try:
            state.require_settings()
        except ConfigError as error:
            raise pytest.UsageError(f"pytest-northflank: {error}") from None
    if state.run.is_controller and raw.backend_in_use == "northflank":
        from pytest_northflank.plugin.session import start_run

        # Under xdist the controller collects nothing: check the API now. Otherwise check it
        # once the collected tests show that some will take a sandbox (pytest_collection_finish).
        try:
            start_run(state, state.require_settings(), check=_distributed(session.config))
        except ConfigError as error:  # the API, token, project or run directory cannot work
            raise pytest.UsageError(f"pytest-northflank: {error}") from None


def _distributed(config: pytest.Config) -> bool:
    """True in an xdist controller that deals the tests out to workers."""
    return config.pluginmanager.getplugin("dsession") is not None


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_northflank.plugin.reporting import header_lines

    state = get_state(config)
    if state.raw is None:
        return []
    return header_lines(state.raw)


# --------------------------------------------------------------------------------------------
# Collection: marker validation and auto-marking


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A malformed ``nf_sandbox`` marker fails collection, naming the test and the keyword."""
    report = yield
    if report.outcome != "passed" or not report.result:
        return report
    problems: list[str] = []
    for node in report.result:
        if not isinstance(node, pytest.Item):
            continue
        markers = sandbox_markers(node)
        if not markers:
            continue
        from pytest_northflank.config.settings import layered_markers  # pydantic, on use

        try:
            layered_markers(markers, node.nodeid)
        except ConfigError as error:
            if str(error) not in problems:
                problems.append(str(error))
    if problems:
        report.outcome = "failed"
        report.longrepr = "\n".join(problems)
        report.result = []
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: the markers must be in place before -m deselects.
    for item in items:
        if SANDBOX_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker("northflank")


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # After deselection and reordering: the tests that will ask for nf_sandbox, in run order.
    wanting = [item for item in session.items if "nf_sandbox" in getattr(item, "fixturenames", ())]
    state = get_state(session.config)
    if wanting:
        state.sandbox_demand = demand_of(wanting)
    config = session.config
    if (
        state.require_raw().backend_in_use == "northflank"
        and not config.option.collectonly
        and not hasattr(config, "workerinput")  # the controller (or the only process) checks
        and not _distributed(config)
        and any(
            SANDBOX_FIXTURES.intersection(getattr(i, "fixturenames", ())) for i in session.items
        )
    ):
        from pytest_northflank.plugin.session import check_api

        try:
            check_api(state, state.require_settings())
        except ConfigError as error:  # one message, no test run
            pytest.exit(f"pytest-northflank: {error}", returncode=pytest.ExitCode.USAGE_ERROR)


# --------------------------------------------------------------------------------------------
# Running: which test and which fixture is active, and the failure section


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    state = get_state(item.config)
    state.current_item = item
    try:
        return (yield)
    finally:
        state.current_item = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    state = get_state(item.config)
    state.in_call = True
    try:
        yield
    finally:
        state.in_call = False


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    __tracebackhide__ = True
    stack = get_state(request.config).fixture_stack
    stack.append(FixtureContext(fixturedef, request))
    try:
        return (yield)
    finally:
        stack.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = get_state(item.config)
    if state.sandboxes and (report.when == "call" or (report.when == "setup" and report.failed)):
        _add_image_notices(item, report, state)
    if not state.sandboxes or not (report.failed or report.when == "teardown"):
        return report
    from pytest_northflank.plugin.reporting import (
        add_failure_section,
        junit_properties,
        sandboxes_used_by,
    )

    used = sandboxes_used_by(item, state.sandboxes)
    if report.failed:
        for sandbox in used:
            sandbox.note_failure(item.nodeid, "failed" if report.when == "call" else "error")
        if used:
            add_failure_section(report, item.nodeid, used)
    if report.when == "teardown":
        # JUnit XML writes the properties of the teardown report (user_properties).
        report.user_properties.extend(junit_properties(used))
    return report


def _add_image_notices(item: pytest.Item, report: pytest.TestReport, state: PluginState) -> None:
    """Say in the test's report when its sandboxes ran this machine's userland instead of
    their image (emulator only); counted once per test for the summary."""
    if not state.backend_started:
        return
    from pytest_northflank.plugin.reporting import image_section, sandboxes_used_by

    notices = []
    for sandbox in sandboxes_used_by(item, state.sandboxes):
        notice = state.backend.image_notice(sandbox.image)
        if notice is not None and notice not in notices:
            notices.append(notice)
    if notices:
        report.sections.append(("northflank image", image_section(notices)))
        for notice in notices:  # one report per test comes here: "call", or a failed setup
            state.run.stats.note_image_fallback(notice)


# --------------------------------------------------------------------------------------------
# End of the session


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # trylast: after pytest tore down the session fixtures (and the sandboxes with them).
    state = get_state(session.config)
    if not state.run_started:
        return  # no sandbox, client or run file was ever asked for
    try:
        if state.run.is_controller and (state.reaper is not None or state.run.run_dir.exists()):
            from pytest_northflank.plugin.session import finish_run

            finish_run(state)
    finally:
        try:
            if state.backend_started:
                state.backend.finish()
        finally:
            from pytest_northflank.run.files import take_damage_notes

            state.run.stats.cleanup_notes += take_damage_notes(state.run.run_dir)
            workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
            if workeroutput is not None:
                workeroutput["northflank"] = state.run.stats.to_json()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = get_state(config)
    if not state.run_started and not state.worker_stats:
        return
    from pytest_northflank.plugin.reporting import write_summary

    try:
        write_summary(terminalreporter, state)
    except Exception as error:  # the summary is how a user learns of leftovers: always say it
        terminalreporter.write_line(
            f"pytest-northflank: the summary could not be written ({type(error).__name__}: "
            f"{error}); run {state.run.run_id}: pytest-northflank list --run {state.run.run_id}"
        )


# --------------------------------------------------------------------------------------------
# Demand: the collected tests that will ask for nf_sandbox


def demand_of(items: Iterable[pytest.Item]) -> list[Demand]:
    """The tests among ``items`` that will run (not skipped outright), in run order."""
    demand = []
    from pytest_northflank.provisioning.warm_ahead import Demand  # pydantic, on first use

    for item in items:
        if _always_skipped(item):
            continue
        demand.append(Demand(item.nodeid, tuple(sandbox_markers(item))))
    return demand


def _always_skipped(item: pytest.Item) -> bool:
    if item.get_closest_marker("skip") is not None:
        return True
    return any(
        mark.args and all(arg is True for arg in mark.args) for mark in item.iter_markers("skipif")
    )
