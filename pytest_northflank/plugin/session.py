"""The run's lifecycle, driven by the plugin's hooks: the reaper at the start, the end-of-session
sweep, and the cleanup after a crashed xdist worker.

Imported when a session needs it (never by a plain ``pytest`` start), so it imports the client
and the provisioning layer at the top.
"""

from __future__ import annotations

import shutil

from pytest_northflank.client import NorthflankClient
from pytest_northflank.config.settings import Settings
from pytest_northflank.errors import ConfigError
from pytest_northflank.plugin.state import PluginState
from pytest_northflank.provisioning import shared_emulator
from pytest_northflank.provisioning.preflight import (
    PREFLIGHT_RETRIES,
    PREFLIGHT_TIMEOUT,
    preflight,
)
from pytest_northflank.run.ledger import LedgerEntry
from pytest_northflank.run.reaper import ReaperProcess
from pytest_northflank.run.signals import guard_process, release_process
from pytest_northflank.run.sweep import SweepResult, sweep


def check_api(state: PluginState, settings: Settings) -> None:
    """One cheap request (see :func:`preflight`); raises ``ConfigError`` with the one message
    that says what is wrong when the API, the token or the project cannot work."""
    assert settings.token is not None  # the northflank backend is chosen by a token
    client = NorthflankClient(
        settings.token.get_secret_value(),
        base_url=settings.api_url,
        team_id=settings.team,
        max_retries=PREFLIGHT_RETRIES,
        timeout=PREFLIGHT_TIMEOUT,
    )
    try:
        problem = preflight(settings, client)
    finally:
        client.close()
        state.run.stats.api_requests += client.request_count
    if problem is not None:
        raise ConfigError(problem)


def start_run(state: PluginState, settings: Settings, *, check: bool = True) -> None:
    """In the controller (or the only process) of a run on Northflank: check that the API,
    token and project answer (with ``check``; else the plugin checks after collection), then
    start the reaper.

    From here on, whatever way pytest ends, the run's services are deleted: by the fixtures'
    teardown, by :func:`finish_run`, or by the reaper if pytest dies before either.
    """
    if settings.backend_in_use != "northflank" or settings.token is None:
        guard_process()
        return  # the embedded emulator dies with pytest, and its sandboxes with it
    if check:
        check_api(state, settings)
    guard_process()
    run = state.run
    run.files.create()
    state.reaper = ReaperProcess.start(
        ledger_path=run.ledger.path,
        base_url=settings.api_url,
        token=settings.token.get_secret_value(),
        run_id=run.run_id,
        project_id=settings.project_in_use,
        team_id=settings.team,
        run_dir=run.run_dir,
    )


def _sweep_with_new_client(
    state: PluginState, settings: Settings, entries: list[LedgerEntry]
) -> SweepResult:
    client = state.backend.open_client(settings)
    try:
        return sweep(client, state.run.ledger, entries, run_id=state.run.run_id)
    finally:
        state.backend.close_client(client)


def _notes(result: SweepResult, what: str, run_id: str) -> list[str]:
    notes = [f"not deleting {name}: {reason}" for name, reason in result.skipped.items()]
    if result.deleted:
        notes.append(f"{what}: deleted {len(result.deleted)} sandbox(es) left behind")
    for name, reason in result.failed.items():
        notes.append(
            f"could not delete {name}: {reason}; the reaper keeps trying, or run: "
            f"pytest-northflank reap --run {run_id} --yes"
        )
    return notes


def _sweep_leftovers(state: PluginState) -> bool:
    """Delete what the run left alive; True when nothing is left for the reaper (every
    deletion done, and a ledger that was there and whole)."""
    run = state.run
    ledger = run.ledger
    if not run.run_dir.is_dir() or (not ledger.path.is_file() and run.stats.created):
        # Removed or replaced under our feet: the ledger with it. The reaper finds the run's
        # services by listing the project.
        if state.reaper is not None:
            run.stats.cleanup_notes.append(
                f"the run directory {run.run_dir} was removed or replaced during the run; the "
                "reaper looks for this run's services by listing the project"
            )
            return False
        return True
    alive = ledger.alive()
    whole = ledger.skipped_lines == 0
    if not alive:
        return whole
    result = _sweep_with_new_client(state, state.require_settings(), alive)
    stats = run.stats
    # The run-wide shared sandbox ends here by design; anything else leaked.
    shared = {entry.name for entry in alive if entry.shared}
    stats.deleted += len(shared.intersection(result.deleted))
    result.deleted = [name for name in result.deleted if name not in shared]
    stats.cleanup_notes += _notes(result, "end of session", run.run_id)
    return whole and not result.failed and not result.unrecorded


def finish_run(state: PluginState) -> None:
    """End of the session in the controller: delete what the run left alive, release the reaper.

    Only a cleanup that finished without a doubt tells the reaper the run is clean: services
    that could not be deleted, a damaged or removed ledger, or any exception on the way (a
    full disk, a removed run directory) leave the reaper to do its work after pytest exits.
    """
    run = state.run
    clean = False
    try:
        clean = _sweep_leftovers(state)
    except Exception as error:  # never "clean" on an exception: the reaper takes over
        run.stats.cleanup_notes.append(
            f"end-of-session cleanup failed ({type(error).__name__}: {error}); "
            + (
                "the reaper deletes what is left"
                if state.reaper is not None
                else f"run: pytest-northflank reap --run {run.run_id} --yes"
            )
        )
    finally:
        try:
            shared_emulator.stop(run.run_dir)
        except Exception as error:
            run.stats.cleanup_notes.append(f"could not stop the run's emulator: {error}")
        if state.reaper is not None:
            reaper, state.reaper = state.reaper, None
            if clean:
                reaper.finish_clean()
            else:
                reaper.abandon()
        # The embedded emulator's sandboxes end with it: nothing in the run directory is needed.
        emulator = state.settings is not None and state.settings.backend_in_use == "emulator"
        if clean or emulator:
            shutil.rmtree(run.run_dir, ignore_errors=True)
        release_process()


def clean_up_after_worker(state: PluginState, worker_id: str, instance: str) -> None:
    """A worker went down with an error: delete the services that worker process made."""
    run = state.run
    owned = [
        entry
        for entry in run.ledger.alive(include_shared=False)
        if entry.owner.startswith(f"{instance}:")
    ]
    if owned:
        result = _sweep_with_new_client(state, state.require_settings(), owned)
        run.stats.cleanup_notes += _notes(result, f"worker {worker_id} crashed", run.run_id)
