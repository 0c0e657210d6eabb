"""pytest entry point ``northflank``: options and their ini twins, markers, the report header,
failure sections and the terminal summary.

Loading this module costs next to nothing: it imports pytest and the fixture definitions only.
Settings (pydantic), the API client (httpx, websockets) and the emulator are imported when a
session starts or when a test first asks for a sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.fixtures import (
    nf_client,
    nf_provisioner,
    nf_sandbox,
    nf_sandbox_factory,
    nf_sandbox_session,
    nf_settings,
)

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.reporting import RunStats
    from pytest_northflank.sandbox import Sandbox
    from pytest_northflank.settings import Settings

__all__ = [
    "OPTIONS",
    "OptionSpec",
    "PluginState",
    "get_state",
    "nf_client",
    "nf_provisioner",
    "nf_sandbox",
    "nf_sandbox_factory",
    "nf_sandbox_session",
    "nf_settings",
]


@dataclass(frozen=True)
class OptionSpec:
    """One setting: its command-line option, its ini twin (same help) and environment variables."""

    field: str
    flag: str
    ini: str
    help: str
    env: tuple[str, ...] = ()
    metavar: str = "VALUE"
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return f"nf_{self.field}"


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "backend",
        "--nf-backend",
        "nf_backend",
        "Where sandboxes run: auto (Northflank when NORTHFLANK_API_TOKEN is set, otherwise the "
        "embedded emulator), northflank, or emulator. Default: auto.",
        metavar="auto|northflank|emulator",
    ),
    OptionSpec(
        "project",
        "--nf-project",
        "nf_project",
        "Northflank project id the sandboxes are created in (required for the real backend).",
        env=("NORTHFLANK_PROJECT_ID",),
        metavar="ID",
    ),
    OptionSpec(
        "team",
        "--nf-team",
        "nf_team",
        "Northflank team id, for organisation-scoped tokens (team API routes).",
        env=("NORTHFLANK_TEAM_ID",),
        metavar="ID",
    ),
    OptionSpec(
        "api_url",
        "--nf-api-url",
        "nf_api_url",
        "Northflank API base URL. Default: https://api.northflank.com.",
        env=("NORTHFLANK_API_BASE_URL",),
        metavar="URL",
    ),
    OptionSpec(
        "image",
        "--nf-image",
        "nf_image",
        "Container image of each sandbox. Default: ubuntu:22.04.",
        metavar="IMAGE",
    ),
    OptionSpec(
        "plan",
        "--nf-plan",
        "nf_plan",
        "Northflank deployment plan of each sandbox. Default: nf-compute-20.",
        metavar="PLAN",
    ),
    OptionSpec(
        "tags",
        "--nf-tag",
        "nf_tags",
        "Tag put on each sandbox (repeat the option; in ini, a space-separated list), e.g. "
        "spot-workload on clusters that only have spot nodes.",
        metavar="TAG",
        repeatable=True,
    ),
    OptionSpec(
        "command",
        "--nf-command",
        "nf_command",
        "Main command of each sandbox; an empty value keeps the image's own. "
        "Default: sleep infinity (stock images exit at once otherwise).",
        metavar="COMMAND",
    ),
    OptionSpec(
        "ready_timeout",
        "--nf-ready-timeout",
        "nf_ready_timeout",
        "Seconds to wait for a sandbox to become ready. Default: 120.",
        metavar="SECONDS",
    ),
    OptionSpec(
        "keep",
        "--nf-keep",
        "nf_keep",
        "Keep sandboxes after their tests instead of deleting them: never, on-failure (those "
        "used by a failed test) or always; the summary says how to reach and delete them. "
        "Default: never.",
        metavar="never|on-failure|always",
    ),
    OptionSpec(
        "emulator_isolation",
        "--nf-emulator-isolation",
        "nf_emulator_isolation",
        "How the embedded emulator isolates sandboxes: auto (namespaces when the kernel allows "
        "them), namespace (Linux mount+PID namespace with a private overlay root), or "
        "directory (a private directory; weaker). Default: auto.",
        metavar="auto|namespace|directory",
    ),
    OptionSpec(
        "emulator_ready_delay",
        "--nf-emulator-ready-delay",
        "nf_emulator_ready_delay",
        "Seconds the embedded emulator takes to report a sandbox ready, to rehearse slow "
        "provisioning. Default: 0.",
        metavar="SECONDS",
    ),
)

SANDBOX_FIXTURES = frozenset(
    {"nf_sandbox", "nf_sandbox_session", "nf_sandbox_factory", "nf_client", "nf_provisioner"}
)

MARKER_HELP = (
    "nf_sandbox(image=None, plan=None, env=None, tags=None, command=None, ready_timeout=None, "
    "keep=None): options of the test's nf_sandbox; keywords left out come from the --nf-* "
    "settings, and the closest marker (test, then class, then module) wins. image: container "
    "image; plan: Northflank plan id; env: dict of environment variables; tags: tag names, "
    "e.g. ['spot-workload']; command: main command ('' = the image's own); ready_timeout: "
    "seconds; keep: 'never', 'on-failure' or 'always'."
)
NORTHFLANK_MARKER_HELP = (
    "northflank: the test uses a Northflank sandbox or the API (added automatically; "
    'deselect those tests with -m "not northflank").'
)


@dataclass
class FixtureContext:
    """A fixture being set up: sandboxes the factory makes inside it live as long as it does."""

    fixturedef: pytest.FixtureDef[Any]
    request: pytest.FixtureRequest


@dataclass
class PluginState:
    """Everything the plugin keeps for one pytest process (in ``config.stash``)."""

    config: pytest.Config
    run_id: str
    worker_id: str
    settings: Settings | None = None
    stats: RunStats | None = None
    current_item: pytest.Item | None = None
    fixture_stack: list[FixtureContext] = field(default_factory=list)
    # Every sandbox made in this process, in creation order (reports, keep, the safety net).
    sandboxes: list[Sandbox] = field(default_factory=list)
    clients: list[NorthflankClient] = field(default_factory=list)
    emulator: EmulatorServer | None = None
    # Stats of xdist workers, merged by the controller.
    worker_stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current_test(self) -> str | None:
        return self.current_item.nodeid if self.current_item is not None else None

    def require_settings(self) -> Settings:
        if self.settings is None:
            self.settings = _resolve_settings(self.config)
        return self.settings

    def require_stats(self) -> RunStats:
        if self.stats is None:
            from pytest_northflank.reporting import RunStats

            self.stats = RunStats()
        return self.stats


STATE_KEY = pytest.StashKey[PluginState]()


def get_state(config: pytest.Config) -> PluginState:
    """The plugin's state for this pytest process."""
    return config.stash[STATE_KEY]


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


def _resolve_settings(config: pytest.Config) -> Settings:
    from pytest_northflank.settings import resolve

    cli = {spec.field: config.getoption(spec.dest) for spec in OPTIONS}
    ini = {spec.field: config.getini(spec.ini) for spec in OPTIONS}
    return resolve(cli=cli, ini=ini, environ=os.environ, inipath=config.inipath)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line("markers", NORTHFLANK_MARKER_HELP)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and "northflank_run_id" in workerinput:
        run_id = str(workerinput["northflank_run_id"])
        worker_id = str(workerinput.get("workerid", "gw?"))
    else:
        from pytest_northflank.ownership import new_run_id

        run_id, worker_id = new_run_id(), "master"
    config.stash[STATE_KEY] = PluginState(config=config, run_id=run_id, worker_id=worker_id)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(config), "northflank-xdist")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    from pytest_northflank.errors import ConfigError

    state = get_state(session.config)
    try:
        settings = state.require_settings()
        settings.check_usable()
    except ConfigError as error:
        raise pytest.UsageError(f"pytest-northflank: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_northflank.reporting import header_lines

    state = get_state(config)
    if state.settings is None:
        return []
    return header_lines(state.settings)


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
        marker = node.get_closest_marker("nf_sandbox")
        if marker is None:
            continue
        from pytest_northflank.errors import ConfigError
        from pytest_northflank.settings import validate_marker

        try:
            validate_marker(marker.args, marker.kwargs, node.nodeid)
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
    if report.failed and state.sandboxes:
        from pytest_northflank.reporting import sandbox_section, sandboxes_used_by

        used = sandboxes_used_by(item, state.sandboxes)
        for sandbox in used:
            if item.nodeid not in sandbox.failed_tests:
                sandbox.failed_tests.append(item.nodeid)
        if used:
            report.sections.append(("northflank sandbox", sandbox_section(item.nodeid, used)))
    return report


# --------------------------------------------------------------------------------------------
# End of the session


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # trylast: after pytest tore down the session fixtures (and the sandboxes with them).
    state = get_state(session.config)
    if state.sandboxes or state.clients or state.emulator is not None:
        from pytest_northflank.fixtures import finish_session

        finish_session(state)
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and state.stats is not None:
        workeroutput["northflank"] = state.stats.to_json()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = get_state(config)
    if state.stats is None and not state.worker_stats:
        return
    from pytest_northflank.reporting import write_summary

    write_summary(terminalreporter, state)


class XdistHooks:
    """Hooks that exist only when pytest-xdist is installed (its hook specs must be loaded)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        # One run id for the whole run: the workers put it in their service names.
        node.workerinput["northflank_run_id"] = get_state(self.config).run_id

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        stats = output.get("northflank")
        if stats is not None:
            get_state(self.config).worker_stats.append(stats)
