"""One sandbox for the whole run, used by every xdist worker (the ``nf_sandbox_shared`` fixture).

The first process to ask creates it under a file lock in the run directory and writes its id
there; the others attach to it. It is recorded in the ledger as shared, so no worker deletes
it, not even when a worker crashes; the controller deletes it at the end of the session, after
the last worker finished.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_northflank.config.settings import Settings
from pytest_northflank.provisioning.provisioner import Provisioner
from pytest_northflank.run.files import JsonFile
from pytest_northflank.run.identity import Run
from pytest_northflank.sandbox import Sandbox


def shared_sandbox(
    run: Run,
    provisioner: Provisioner,
    settings: Settings,
    *,
    current_test: Callable[[], str | None],
) -> Sandbox:
    """The run's shared sandbox, created by whichever process asks first."""
    record = JsonFile(run.files.create() / run.files.SHARED_SANDBOX)
    options = settings.sandbox_options()
    with record.lock:
        found = record.read()
        if isinstance(found, dict) and isinstance(found.get("id"), str):
            return provisioner.attach(found["id"], str(found.get("name", found["id"])), options)
        sandbox = provisioner.provision(
            options, hint="shared", current_test=current_test, shared=True
        )
        record.replace({"id": sandbox.id, "name": sandbox.name})
        return sandbox
