"""What the plugin keeps for one pytest process, in ``config.stash``. Only ``plugin/`` sees it:
the layers below get a :class:`~pytest_northflank.run.identity.Run` and plain callables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.config.options import OPTIONS, RawSettings, gather_settings

if TYPE_CHECKING:
    from pytest_northflank.config.settings import Settings
    from pytest_northflank.provisioning.backend import Backend
    from pytest_northflank.provisioning.warm_ahead import Demand
    from pytest_northflank.run.identity import Run
    from pytest_northflank.run.reaper import ReaperProcess
    from pytest_northflank.sandbox import Sandbox


@dataclass
class FixtureContext:
    """A fixture being set up: sandboxes the factory makes inside it live as long as it does."""

    fixturedef: pytest.FixtureDef[Any]
    request: pytest.FixtureRequest


@dataclass
class PluginState:
    """The plugin's pytest-facing state of one process."""

    config: pytest.Config
    raw: RawSettings | None = None
    settings: Settings | None = None
    current_item: pytest.Item | None = None
    # True while the current test's body runs (finalizers can be added to it then).
    in_call: bool = False
    fixture_stack: list[FixtureContext] = field(default_factory=list)
    # Every sandbox made in this process, in creation order (reports, keep, the safety net).
    sandboxes: list[Sandbox] = field(default_factory=list)
    # The collected tests that take an nf_sandbox, in order (what warm-ahead plans from).
    sandbox_demand: list[Demand] = field(default_factory=list)
    # Stats of xdist workers, merged by the controller.
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    reaper: ReaperProcess | None = None
    _run: Run | None = None
    _backend: Backend | None = None

    @property
    def run(self) -> Run:
        """This process's place in the run, made on first use (filelock and friends are not
        imported by a run that never needs them)."""
        if self._run is None:
            from pytest_northflank.plugin.xdist import run_of

            self._run = run_of(self.config)
        return self._run

    @property
    def current_test(self) -> str | None:
        return self.current_item.nodeid if self.current_item is not None else None

    @property
    def run_started(self) -> bool:
        return self._run is not None

    @property
    def backend(self) -> Backend:
        """Clients and the embedded emulator of this process, made on first use."""
        if self._backend is None:
            from pytest_northflank.provisioning.backend import Backend  # httpx, on first use

            self._backend = Backend(self.run)
        return self._backend

    @property
    def backend_started(self) -> bool:
        return self._backend is not None

    def require_raw(self) -> RawSettings:
        if self.raw is None:
            self.raw = gather_from(self.config)
        return self.raw

    def require_settings(self) -> Settings:
        """The validated settings (pydantic), built on first use."""
        if self.settings is None:
            from pytest_northflank.config.settings import validate

            self.settings = validate(self.require_raw())
        return self.settings


STATE_KEY = pytest.StashKey[PluginState]()


def get_state(config: pytest.Config) -> PluginState:
    """The plugin's state for this pytest process."""
    return config.stash[STATE_KEY]


def gather_from(config: pytest.Config) -> RawSettings:
    """The settings as given on the command line, in the environment and in the ini file."""
    cli = {spec.field: config.getoption(spec.dest) for spec in OPTIONS}
    ini = {spec.field: config.getini(spec.ini) for spec in OPTIONS}
    return gather_settings(cli=cli, ini=ini, environ=os.environ, inipath=config.inipath)
