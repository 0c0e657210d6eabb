"""The fixtures, in layers a conftest.py can override one at a time::

    nf_settings -> nf_client -> nf_provisioner -> nf_sandbox_factory -> nf_sandbox
                                                                     -> nf_sandbox_session
                                               -> nf_sandbox_shared (one for the whole run)

This module is imported when the plugin loads, so it imports nothing heavy at the top.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.plugin.state import PluginState, get_state

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.config.settings import MarkerLayer, SandboxOverrides, Settings
    from pytest_northflank.provisioning.provisioner import Provisioner
    from pytest_northflank.sandbox import Sandbox

# Fixture bodies import the settings (pydantic), the client (httpx) and the provisioning layer
# when they first run: loading the plugin must not.


def _state(config: pytest.Config) -> PluginState:
    return get_state(config)


def sandbox_markers(node: pytest.Item | pytest.Collector) -> list[MarkerLayer]:
    """The ``nf_sandbox`` markers on ``node`` and its parents, closest first."""
    return [(mark.args, mark.kwargs) for mark in node.iter_markers("nf_sandbox")]


@pytest.fixture(scope="session")
def nf_settings(pytestconfig: pytest.Config) -> Settings:
    """The settings of this run (options --nf-*, environment, ini nf_*), as one model.
    Override it in conftest.py to change them for a whole suite:
        @pytest.fixture(scope="session")
        def nf_settings(nf_settings):
            return nf_settings.model_copy(update={"image": "python:3.12-slim"})
    """
    return _state(pytestconfig).require_settings()


@pytest.fixture(scope="session")
def nf_client(nf_settings: Settings, pytestconfig: pytest.Config) -> Iterator[NorthflankClient]:
    """The API client (NorthflankClient) of this session: Northflank when a token is set,
    otherwise the embedded emulator (started on first use). For what sandboxes don't cover:
        def test_project(nf_client, nf_settings):
            assert nf_client.get_project(nf_settings.project_in_use).id
    """
    client = _state(pytestconfig).backend.open_client(nf_settings)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def nf_provisioner(
    nf_client: NorthflankClient, nf_settings: Settings, pytestconfig: pytest.Config
) -> Iterator[Provisioner]:
    """Creates a sandbox (a deployment service), waits until it is ready, deletes it after.
    The layer under the sandbox fixtures; override it to change how sandboxes are made.

    At the end of the session it releases any sandbox of its own that no scope released.
    """
    from pytest_northflank.plugin.reporting import progress_writer
    from pytest_northflank.provisioning.provisioner import Provisioner
    from pytest_northflank.run.signals import guard_process

    state = _state(pytestconfig)
    guard_process()  # SIGTERM/SIGHUP now tear down like Ctrl-C
    provisioner = Provisioner.for_run(
        state.run,
        nf_client,
        nf_settings,
        demand=state.sandbox_demand,
        progress=progress_writer(pytestconfig),
        register=state.sandboxes.append,
    )
    try:
        yield provisioner
    finally:
        provisioner.release_leftovers()


class SandboxFactory:
    """Makes ready sandboxes on demand; see the ``nf_sandbox_factory`` fixture."""

    def __init__(self, state: PluginState, provisioner: Provisioner, settings: Settings) -> None:
        self._state = state
        self._provisioner = provisioner
        self._settings = settings

    def __call__(self, **keywords: Any) -> Sandbox:
        """A new ready sandbox, deleted when the fixture or test that asked for it finishes.

        Takes the keywords of the ``nf_sandbox`` marker (image, plan, env, tags, command,
        ready_timeout, keep, ready, ports), layered like markers on top of the markers in
        scope: a keyword left out comes from them, then from the settings; ``env`` and
        ``tags`` merge.
        """
        __tracebackhide__ = True  # a bad keyword is reported at the caller's line
        from pytest_northflank.config.settings import layer, layered_markers, overrides_from

        node = self._node()
        inherited = layered_markers(sandbox_markers(node), node.nodeid) if node else None
        given = overrides_from(keywords, f"nf_sandbox_factory(...) in {self._context_name()}")
        return self.create(layer(inherited, given), hint=self._hint())

    def create(
        self, overrides: SandboxOverrides | None, *, hint: str, planned: bool = False
    ) -> Sandbox:
        """Provision with ``overrides`` on top of the settings, bound to the active scope.
        ``planned``: an ``nf_sandbox`` test's, which warm-ahead may have made already."""
        __tracebackhide__ = True
        from pytest_northflank.config.settings import apply_overrides

        options = self._settings.sandbox_options()
        if overrides is not None:
            options = apply_overrides(options, overrides)
        state = self._state
        sandbox = self._provisioner.provision(
            options, hint=hint, current_test=lambda: state.current_test, planned=planned
        )
        self._bind_to_scope(sandbox)
        self._note_scope()
        return sandbox

    def _note_scope(self) -> None:
        """Note a sandbox made for a module, class or package (see RunStats.scoped)."""
        stack = self._state.fixture_stack
        if stack and stack[-1].fixturedef.scope in ("module", "class", "package"):
            context = stack[-1]
            self._state.run.stats.scoped.append(
                [context.fixturedef.scope, context.request.node.nodeid, context.fixturedef.argname]
            )

    def release(self, sandbox: Sandbox) -> None:
        """Delete ``sandbox``, or keep it if its keep mode says so."""
        __tracebackhide__ = True
        self._provisioner.release(sandbox)

    def _bind_to_scope(self, sandbox: Sandbox) -> None:
        finalizer = lambda: self.release(sandbox)  # noqa: E731
        stack = self._state.fixture_stack
        if stack:
            stack[-1].fixturedef.addfinalizer(finalizer)
        elif self._state.current_item is not None and self._state.in_call:
            self._state.current_item.addfinalizer(finalizer)
        # Otherwise (a fixture's teardown, a thread outliving its test): nf_provisioner
        # releases it at the end of the session.

    def _node(self) -> pytest.Item | pytest.Collector | None:
        """The node whose markers the factory layers on: the asking fixture's (a module for
        a module-scoped fixture), else the running test's."""
        stack = self._state.fixture_stack
        if stack:
            node: pytest.Item | pytest.Collector = stack[-1].request.node
            return node
        return self._state.current_item

    def _context_name(self) -> str:
        stack = self._state.fixture_stack
        if stack:
            return f"fixture {stack[-1].fixturedef.argname!r}"
        return self._state.current_test or "the session"

    def _hint(self) -> str:
        stack = self._state.fixture_stack
        if stack and stack[-1].fixturedef.scope != "function":
            return stack[-1].fixturedef.argname
        item = self._state.current_item
        return item.name if item is not None else "session"


@pytest.fixture(scope="session")
def nf_sandbox_factory(
    nf_provisioner: Provisioner, nf_settings: Settings, pytestconfig: pytest.Config
) -> SandboxFactory:
    """Makes sandboxes with explicit options: nf_sandbox_factory(image=, plan=, env=, tags=,
    command=, ready_timeout=, keep=, ready=) returns a ready Sandbox, deleted when the test or
    fixture that asked for it ends. The way to build module or class sandboxes:
        @pytest.fixture(scope="module")
        def web(nf_sandbox_factory):
            return nf_sandbox_factory(env={"PORT": "8080"})  # deleted after the module
        def test_two(nf_sandbox_factory):
            a, b = nf_sandbox_factory(), nf_sandbox_factory(image="alpine:3.20")

    Keywords left out come from the settings. The factory itself is session-scoped, so any
    fixture may use it whatever its scope.
    """
    return SandboxFactory(_state(pytestconfig), nf_provisioner, nf_settings)


@pytest.fixture
def nf_sandbox(nf_sandbox_factory: SandboxFactory, request: pytest.FixtureRequest) -> Sandbox:
    """A fresh, ready Linux sandbox for this test, deleted afterwards. Set its options with
    nf_sandbox markers (module, class, test: the closest wins per keyword, env and tags
    merge) or the --nf-* options:
        @pytest.mark.nf_sandbox(image="python:3.12-slim", env={"MODE": "test"})
        def test_it(nf_sandbox):
            assert nf_sandbox.run('echo "$MODE"', check=True).stdout == "test\\n"
    The next tests' sandboxes are provisioned while this one runs: --nf-warm-ahead says how
    many ahead (default auto: follows provisioning time / test time; N: fixed; 0: off).
    """
    from pytest_northflank.config.settings import layered_markers

    overrides = layered_markers(sandbox_markers(request.node), request.node.nodeid)
    return nf_sandbox_factory.create(overrides, hint=request.node.name, planned=True)


@pytest.fixture(scope="session")
def nf_sandbox_session(nf_sandbox_factory: SandboxFactory) -> Sandbox:
    """One sandbox shared by every test of the session (per xdist worker), made from the
    settings alone (markers do not apply). Cheap, but tests see each other's files:
        def test_a(nf_sandbox_session):
            nf_sandbox_session.write_text("test_a/input.txt", "data")
    """
    return nf_sandbox_factory.create(None, hint="session")


@pytest.fixture(scope="session")
def nf_sandbox_shared(
    nf_provisioner: Provisioner, nf_settings: Settings, pytestconfig: pytest.Config
) -> Sandbox:
    """One sandbox for the whole run, shared by every xdist worker (nf_sandbox_session is one
    per worker). Made once from the settings; deleted after the last worker finishes:
        def test_cache_warm(nf_sandbox_shared):
            nf_sandbox_shared.run("mkdir -p /srv/cache", check=True)
    """
    from pytest_northflank.provisioning.shared_sandbox import shared_sandbox

    state = _state(pytestconfig)
    return shared_sandbox(
        state.run, nf_provisioner, nf_settings, current_test=lambda: state.current_test
    )
