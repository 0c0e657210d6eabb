"""A kept sandbox says why on the service itself: its description gets ``kept=<why>
test=<node id>`` (see :mod:`pytest_northflank.run.ownership`), which ``pytest-northflank list``
reads back from any machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_northflank.errors import NorthflankError
from pytest_northflank.run.ownership import DESCRIPTION_PREFIX, kept_description
from pytest_northflank.run.stats import KeptSandbox

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.sandbox import Sandbox


def record_kept(client: NorthflankClient, sandbox: Sandbox, kept: KeptSandbox) -> str | None:
    """Write why ``sandbox`` was kept into its description; a sentence saying what went wrong
    (keeping it must not fail a teardown over a note), or None."""
    if sandbox.failed_tests:
        test: str | None = sandbox.failed_tests[0]
    else:
        test = sandbox.tests[0] if sandbox.tests else None
    try:
        description = client.get_service(sandbox.project_id, sandbox.id).description or ""
        if not description.startswith(DESCRIPTION_PREFIX + " "):
            return None  # not described by this tool: nothing to add to
        client.set_service_description(
            sandbox.project_id, sandbox.id, kept_description(description, kept.reason, test)
        )
    except NorthflankError as error:
        return f"could not record on {sandbox.name} why it was kept: {error}"
    return None
