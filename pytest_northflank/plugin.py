"""pytest entry point ``northflank``: options and their ini twins, markers, the report header,
failure sections and the terminal summary.

Loading this module costs next to nothing: it imports pytest and the fixture definitions only.
Settings (pydantic), the API client (httpx, websockets) and the emulator are imported when a
session starts or when a test first asks for a sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.fixtures import (
    nf_client,
    nf_provisioner,
    nf_sandbox,
    nf_sandbox_factory,
    nf_sandbox_session,
    nf_sandbox_shared,
    nf_settings,
)

if TYPE_CHECKING:
    from pytest_northflank.cleanup import GracefulSignals
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.ledger import Ledger
    from pytest_northflank.pool import Demand
    from pytest_northflank.reaper import ReaperProcess
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
    "nf_sandbox_shared",
    "nf_settings",
]


@dataclass(frozen=True)
class OptionSpec:
    """One setting: its command-line option, its ini twin (same help) and environment variables."""

    field: str
    flag: str
    ini: str
    help: str
    default: Any = None
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
        default="auto",
    ),
    OptionSpec(
        "project",
        "--nf-project",
        "nf_project",
        "Northflank project id the sandboxes are created in (required for the real backend).",
        env=("NORTHFLANK_PROJECT_ID",),
        metavar="ID",
        default=None,
    ),
    OptionSpec(
        "team",
        "--nf-team",
        "nf_team",
        "Northflank team id, for organisation-scoped tokens (team API routes).",
        env=("NORTHFLANK_TEAM_ID",),
        metavar="ID",
        default=None,
    ),
    OptionSpec(
        "api_url",
        "--nf-api-url",
        "nf_api_url",
        "Northflank API base URL. Default: https://api.northflank.com.",
        env=("NORTHFLANK_API_BASE_URL",),
        metavar="URL",
        default="https://api.northflank.com",
    ),
    OptionSpec(
        "image",
        "--nf-image",
        "nf_image",
        "Container image of each sandbox. Default: ubuntu:22.04.",
        metavar="IMAGE",
        default="ubuntu:22.04",
    ),
    OptionSpec(
        "plan",
        "--nf-plan",
        "nf_plan",
        "Northflank deployment plan of each sandbox. Default: nf-compute-20.",
        metavar="PLAN",
        default="nf-compute-20",
    ),
    OptionSpec(
        "tags",
        "--nf-tag",
        "nf_tags",
        "Tag put on each sandbox (repeat the option; in ini, a space-separated list), e.g. "
        "spot-workload on clusters that only have spot nodes.",
        metavar="TAG",
        repeatable=True,
        default=(),
    ),
    OptionSpec(
        "command",
        "--nf-command",
        "nf_command",
        "Main command of each sandbox; an empty value keeps the image's own. "
        "Default: sleep infinity (stock images exit at once otherwise).",
        metavar="COMMAND",
        default="sleep infinity",
    ),
    OptionSpec(
        "ready_timeout",
        "--nf-ready-timeout",
        "nf_ready_timeout",
        "Seconds to wait for a sandbox to become ready. Default: 120.",
        metavar="SECONDS",
        default=120.0,
    ),
    OptionSpec(
        "keep",
        "--nf-keep",
        "nf_keep",
        "Keep sandboxes after their tests instead of deleting them: never, on-failure (those "
        "used by a failed test) or always; the summary says how to reach and delete them. "
        "Default: never.",
        metavar="never|on-failure|always",
        default="never",
    ),
    OptionSpec(
        "expiry",
        "--nf-expiry",
        "nf_expiry",
        "Last-resort deadline, in seconds: written into each sandbox's description (so "
        "'pytest-northflank reap --expired' finds leftovers) and sent as Northflank's "
        "createOptions.expiryTime. Cleanup never depends on it. Default: none.",
        metavar="SECONDS",
        default=None,
    ),
    OptionSpec(
        "warm_ahead",
        "--nf-warm-ahead",
        "nf_warm_ahead",
        "Sandboxes each pytest process provisions ahead of the nf_sandbox tests that will "
        "use them (planned from the collected tests and their markers; xdist workers share "
        "them). auto: 8 until measured, then provisioning time / test time, between 1 and 8 "
        "per process; N: exactly N ahead, e.g. --nf-warm-ahead 4; 0: off. Sandboxes no "
        "test took are deleted at the end. Default: auto.",
        metavar="auto|N",
        default="auto",
    ),
    OptionSpec(
        "emulator_isolation",
        "--nf-emulator-isolation",
        "nf_emulator_isolation",
        "How the embedded emulator isolates sandboxes: auto (namespaces when the kernel allows "
        "them), namespace (Linux mount+PID namespace with a private overlay root), or "
        "directory (a private directory; weaker). Default: auto.",
        metavar="auto|namespace|directory",
        default="auto",
    ),
    OptionSpec(
        "emulator_ready_delay",
        "--nf-emulator-ready-delay",
        "nf_emulator_ready_delay",
        "Seconds the embedded emulator takes to report a sandbox ready, to rehearse slow "
        "provisioning. Default: 0.",
        metavar="SECONDS",
        default=0.0,
    ),
)

DEFAULTS: dict[str, Any] = {spec.field: spec.default for spec in OPTIONS}
TOKEN_ENV_VARS = ("NORTHFLANK_API_TOKEN", "NF_API_TOKEN")

SANDBOX_FIXTURES = frozenset(
    {
        "nf_sandbox",
        "nf_sandbox_session",
        "nf_sandbox_shared",
        "nf_sandbox_factory",
        "nf_client",
        "nf_provisioner",
    }
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


# --------------------------------------------------------------------------------------------
# Settings as given, before validation. Plain Python on purpose: the header, the backend choice
# and the token/project check need no pydantic, so a run that never asks for a sandbox (and
# configures nothing) never imports it. :mod:`pytest_northflank.settings` validates these.


def option_source(spec: OptionSpec) -> str:
    return f"option {spec.flag}"


def ini_source(spec: OptionSpec, inipath: Path | None) -> str:
    where = f" in {inipath}" if inipath is not None else ""
    return f"ini key {spec.ini}{where}"


def env_source(variable: str) -> str:
    return f"environment variable {variable}"


@dataclass(frozen=True)
class RawSettings:
    """What the user set (``given``), where each value came from, and the token."""

    given: dict[str, Any]
    sources: dict[str, str]
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    # A token variable that is set but blank: a CI secret that is missing or misnamed.
    blank_token_variable: str | None = None

    def value(self, name: str) -> Any:
        return self.given.get(name, DEFAULTS[name])

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "the default")

    @property
    def backend_in_use(self) -> str:
        return choose_backend(str(self.value("backend")), self.token is not None)

    @property
    def backend_reason(self) -> str:
        return backend_reason(str(self.value("backend")), self.token_source, self.source_of)

    def usage_problem(self) -> str | None:
        # A blank token with a project (or the Northflank backend) asked for is a CI secret gone
        # missing: running on the local emulator instead would pass a job that tested nothing.
        wants_northflank = self.value("backend") == "northflank" or (
            self.value("backend") == "auto" and self.value("project") not in (None, "")
        )
        if self.token is None and self.blank_token_variable and wants_northflank:
            return (
                f"the environment variable {self.blank_token_variable} is set but empty, so "
                "there is no API token (in CI: check that the secret exists and is passed to "
                "this step). To run on the embedded emulator, unset it or pass "
                "--nf-backend=emulator."
            )
        if self.backend_in_use == "northflank" and self.token is not None:
            from pytest_northflank.checks import token_problem

            problem = token_problem(self.token)
            if problem is not None:
                return f"the API token in the environment variable {self.token_source} {problem}"
        return usage_problem(
            self.backend_in_use,
            has_token=self.token is not None,
            has_project=self.value("project") not in (None, ""),
            backend_source=self.source_of("backend"),
        )


def gather_settings(
    *,
    cli: Mapping[str, Any],
    ini: Mapping[str, Any],
    environ: Mapping[str, str],
    inipath: Path | None = None,
) -> RawSettings:
    """Apply the precedence command line > environment > ini; defaults stay out of ``given``.

    ``cli`` and ``ini`` hold what the user gave (None, [] or missing = not given; an empty
    string is a value); in ``environ`` an empty variable counts as unset. The token loses
    surrounding whitespace (a secret read from a file often ends in a newline).
    """
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in OPTIONS:
        name = spec.field
        cli_value = cli.get(name)
        env_hit = next(((var, environ[var]) for var in spec.env if environ.get(var)), None)
        ini_value = ini.get(name)
        if cli_value is not None and cli_value != []:
            given[name], sources[name] = cli_value, option_source(spec)
        elif env_hit is not None:
            given[name], sources[name] = env_hit[1], env_source(env_hit[0])
        elif ini_value is not None and ini_value != []:
            given[name], sources[name] = ini_value, ini_source(spec, inipath)
    token, token_source = token_from_environment(environ)
    blank = next((name for name in TOKEN_ENV_VARS if name in environ), None) if not token else None
    return RawSettings(given, sources, token, token_source, blank)


def token_from_environment(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The API token and the variable it came from; a blank variable counts as unset."""
    for variable in TOKEN_ENV_VARS:
        token = environ.get(variable, "").strip()
        if token:
            return token, variable
    return None, None


def choose_backend(backend: str, has_token: bool) -> str:
    """``auto`` is Northflank when a token is set, otherwise the embedded emulator."""
    if backend == "auto":
        return "northflank" if has_token else "emulator"
    return backend


def backend_reason(backend: str, token_source: str | None, source_of: Any) -> str:
    if backend != "auto":
        return f"chosen by {source_of('backend')}"
    if token_source is not None:
        return f"{token_source} is set"
    return "no NORTHFLANK_API_TOKEN in the environment"


def missing_project_message() -> str:
    return (
        "the Northflank backend needs a project: set it with the option --nf-project, the ini "
        "key nf_project or the environment variable NORTHFLANK_PROJECT_ID (the project id "
        "from the dashboard URL, for example my-project). To run on the embedded emulator "
        "instead, pass --nf-backend=emulator; to turn the plugin off, -p no:northflank."
    )


def usage_problem(
    backend_in_use: str, *, has_token: bool, has_project: bool, backend_source: str
) -> str | None:
    """Why the chosen backend cannot work with these settings, or None."""
    if backend_in_use != "northflank":
        return None
    if not has_token:
        return (
            f"backend 'northflank' ({backend_source}) needs an API token in the environment "
            "variable NORTHFLANK_API_TOKEN (or NF_API_TOKEN); tokens are never read from the "
            "command line or ini files. Without a token, use --nf-backend=emulator to run on "
            "the embedded emulator."
        )
    if not has_project:
        return missing_project_message()
    return None


@dataclass
class FixtureContext:
    """A fixture being set up: sandboxes the factory makes inside it live as long as it does."""

    fixturedef: pytest.FixtureDef[Any]
    request: pytest.FixtureRequest


@dataclass
class PluginState:
    """Everything the plugin keeps for one pytest process (in ``config.stash``)."""

    config: pytest.Config
    worker_id: str
    # Given by the xdist controller, or made on first use (most runs never need one).
    given_run_id: str | None = None
    raw: RawSettings | None = None
    settings: Settings | None = None
    stats: RunStats | None = None
    current_item: pytest.Item | None = None
    # True while the current test's body runs (finalizers can be added to it then).
    in_call: bool = False
    fixture_stack: list[FixtureContext] = field(default_factory=list)
    # Every sandbox made in this process, in creation order (reports, keep, the safety net).
    sandboxes: list[Sandbox] = field(default_factory=list)
    # The collected tests that take an nf_sandbox, in order (what warm-ahead plans from).
    sandbox_demand: list[Demand] = field(default_factory=list)
    clients: list[NorthflankClient] = field(default_factory=list)
    # The embedded emulator on a thread of this process (without xdist), and the URL and
    # token of whichever embedded emulator this process uses.
    emulator: EmulatorServer | None = None
    emulator_endpoint: tuple[str, str] | None = field(default=None, repr=False)
    # Stats of xdist workers, merged by the controller.
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    # This process's owner token in the ledger: the xdist controller gives each worker process
    # a fresh one, so a crashed worker's replacement is a different owner.
    instance: str | None = None
    reaper: ReaperProcess | None = None
    signals: GracefulSignals | None = None
    _ledger: Ledger | None = None

    @property
    def run_id(self) -> str:
        if self.given_run_id is None:
            from pytest_northflank.ownership import new_run_id

            self.given_run_id = new_run_id()
        return self.given_run_id

    @property
    def is_controller(self) -> bool:
        """True in the xdist controller, and in a run without xdist (the only process)."""
        return not hasattr(self.config, "workerinput")

    @property
    def run_dir(self) -> Path:
        """Files shared by the processes of this run (the ledger, locks)."""
        import tempfile

        return Path(tempfile.gettempdir()) / "pytest-northflank" / f"run-{self.run_id}"

    @property
    def ledger(self) -> Ledger:
        """The run ledger, shared by every process of the run."""
        if self._ledger is None:
            from pytest_northflank.ledger import Ledger

            self._ledger = Ledger(self.run_dir / "ledger.jsonl")
        return self._ledger

    @property
    def ledger_owner(self) -> str:
        return f"{self.instance or self.worker_id}:{os.getpid()}"

    @property
    def current_test(self) -> str | None:
        return self.current_item.nodeid if self.current_item is not None else None

    def require_raw(self) -> RawSettings:
        if self.raw is None:
            self.raw = _gather(self.config)
        return self.raw

    def require_settings(self) -> Settings:
        """The validated settings (pydantic), built on first use."""
        if self.settings is None:
            from pytest_northflank.settings import validate

            self.settings = validate(self.require_raw())
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


def _gather(config: pytest.Config) -> RawSettings:
    cli = {spec.field: config.getoption(spec.dest) for spec in OPTIONS}
    ini = {spec.field: config.getini(spec.ini) for spec in OPTIONS}
    return gather_settings(cli=cli, ini=ini, environ=os.environ, inipath=config.inipath)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line("markers", NORTHFLANK_MARKER_HELP)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    state = PluginState(config=config, worker_id="master")
    if workerinput is not None:
        from pytest_northflank.xdist import worker_settings

        state.worker_id = str(workerinput.get("workerid", "gw?"))
        state.given_run_id, state.instance = worker_settings(workerinput)
    config.stash[STATE_KEY] = state
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        from pytest_northflank.xdist import XdistController

        config.pluginmanager.register(XdistController(config), "northflank-xdist")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    from pytest_northflank.errors import ConfigError

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
    if state.is_controller and raw.backend_in_use == "northflank":
        from pytest_northflank.cleanup import start_run

        start_run(state, state.require_settings())


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_northflank.reporting import header_lines

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


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # After deselection and reordering: the tests that will ask for nf_sandbox, in run order.
    wanting = [item for item in session.items if "nf_sandbox" in getattr(item, "fixturenames", ())]
    if wanting:
        from pytest_northflank.pool import demand_of

        get_state(session.config).sandbox_demand = demand_of(wanting)


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
    try:
        if state.is_controller and (state.reaper is not None or state.run_dir.exists()):
            from pytest_northflank.cleanup import finish_run

            finish_run(state)
    finally:
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
