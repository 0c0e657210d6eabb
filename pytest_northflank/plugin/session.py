"""The run's lifecycle, driven by the plugin's hooks: the reaper at the start, the end-of-session
sweep, and the cleanup after a crashed xdist worker.

Imported when a session needs it (never by a plain ``pytest`` start), so it imports the client
and the provisioning layer at the top.
"""

from __future__ import annotations

import shutil

from pytest_northflank.config.settings import Settings
from pytest_northflank.plugin.state import PluginState
from pytest_northflank.provisioning import shared_emulator
from pytest_northflank.run.ledger import LedgerEntry
from pytest_northflank.run.reaper import ReaperProcess
from pytest_northflank.run.signals import guard_process, release_process
from pytest_northflank.run.sweep import SweepResult, sweep


def start_run(state: PluginState, settings: Settings) -> None:
    """In the controller (or the only process) of a run on Northflank: start the reaper.

    From here on, whatever way pytest ends, the run's services are deleted: by the fixtures'
    teardown, by :func:`finish_run`, or by the reaper if pytest dies before either.
    """
    guard_process()
    if settings.backend_in_use != "northflank" or settings.token is None:
        return  # the embedded emulator dies with pytest, and its sandboxes with it
    run = state.run
    run.files.create()
    state.reaper = ReaperProcess.start(
        ledger_path=run.ledger.path,
        base_url=settings.api_url,
        token=settings.token.get_secret_value(),
        team_id=settings.team,
        run_dir=run.run_dir,
    )


def _sweep_with_new_client(
    state: PluginState, settings: Settings, entries: list[LedgerEntry]
) -> SweepResult:
    client = state.backend.open_client(settings)
    try:
        return sweep(client, state.run.ledger, entries)
    finally:
        state.backend.close_client(client)


def _notes(result: SweepResult, what: str, run_id: str) -> list[str]:
    notes = []
    if result.deleted:
        notes.append(f"{what}: deleted {len(result.deleted)} sandbox(es) left behind")
    for name, reason in result.failed.items():
        notes.append(
            f"could not delete {name}: {reason}; the reaper keeps trying, or run: "
            f"pytest-northflank reap --run {run_id} --yes"
        )
    return notes


def finish_run(state: PluginState) -> None:
    """End of the session in the controller: delete what the run left alive, release the reaper.

    Services that could not be deleted stay in the ledger, and the reaper is then *not* told
    the run is clean, so it keeps trying after pytest exits.
    """
    run = state.run
    failed = False
    try:
        if run.ledger.path.exists():
            alive = run.ledger.alive()
            if alive:
                result = _sweep_with_new_client(state, state.require_settings(), alive)
                failed = bool(result.failed)
                stats = run.stats
                # The run-wide shared sandbox ends here by design; anything else leaked.
                shared = {entry.name for entry in alive if entry.shared}
                stats.deleted += len(shared.intersection(result.deleted))
                result.deleted = [name for name in result.deleted if name not in shared]
                stats.cleanup_notes += _notes(result, "end of session", run.run_id)
    finally:
        shared_emulator.stop(run.run_dir)
        if state.reaper is not None:
            reaper, state.reaper = state.reaper, None
            if failed:
                reaper.abandon()
            else:
                reaper.finish_clean()
        if not failed:
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
