"""One sandbox for the whole run, used by every xdist worker (the ``nf_sandbox_shared`` fixture).

The first process to ask creates it under a file lock in the run directory and writes its id
there; the others attach to it. It is recorded in the ledger as shared, so no worker deletes
it, not even when a worker crashes; the controller deletes it at the end of the session, after
the last worker finished.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from filelock import FileLock

from pytest_northflank.run_files import replace_json

if TYPE_CHECKING:
    from pytest_northflank.plugin import PluginState
    from pytest_northflank.provisioning import Provisioner
    from pytest_northflank.sandbox import Sandbox
    from pytest_northflank.settings import Settings

RECORD_FILE = "shared-sandbox.json"


def shared_sandbox(state: PluginState, provisioner: Provisioner, settings: Settings) -> Sandbox:
    """The run's shared sandbox, created by whichever process asks first."""
    state.run_dir.mkdir(parents=True, exist_ok=True)
    record_path = state.run_dir / RECORD_FILE
    options = settings.sandbox_options()
    with FileLock(str(state.run_dir / "shared-sandbox.lock")):
        try:
            record = json.loads(record_path.read_text())
        except FileNotFoundError:
            record = None
        if record is not None:
            return provisioner.attach(record["id"], record["name"], options)
        sandbox = provisioner.provision(
            options, hint="shared", current_test=lambda: state.current_test, shared=True
        )
        replace_json(record_path, {"id": sandbox.id, "name": sandbox.name})
        return sandbox
