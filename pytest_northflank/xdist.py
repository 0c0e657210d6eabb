"""xdist controller hooks, registered only when pytest-xdist is active.

A module-level ``pytest_testnodedown`` would break runs without xdist (unknown hook), so these
live on an object the plugin registers from ``pytest_configure`` in the controller.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

WORKER_INPUT_RUN_ID = "nf_run_id"
WORKER_INPUT_INSTANCE = "nf_worker_instance"
# The controller's --dist mode (workers see "no"): tells warm-ahead which tests a worker gets.
WORKER_INPUT_DIST = "nf_dist"


def worker_settings(workerinput: dict[str, Any]) -> tuple[str | None, str | None]:
    """The run id and the owner token the controller gave this worker."""
    run_id = workerinput.get(WORKER_INPUT_RUN_ID)
    instance = workerinput.get(WORKER_INPUT_INSTANCE)
    return (str(run_id) if run_id else None, str(instance) if instance else None)


class XdistController:
    """Hands the run identity to each worker, gathers their stats, cleans up after crashes."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        from pytest_northflank.plugin import get_state

        # One run id for the whole run: the workers put it in their service names.
        node.workerinput[WORKER_INPUT_RUN_ID] = get_state(self.config).run_id
        # A fresh token per worker process: a replacement for a crashed gw1 is a new owner, so
        # cleaning up after the crashed one never touches the replacement's sandboxes.
        node.workerinput[WORKER_INPUT_INSTANCE] = f"{node.gateway.id}-{secrets.token_hex(4)}"
        node.workerinput[WORKER_INPUT_DIST] = str(self.config.getoption("dist", "load"))

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        from pytest_northflank.plugin import get_state

        state = get_state(self.config)
        output = getattr(node, "workeroutput", None) or {}
        stats = output.get("northflank")
        if stats is not None:
            state.worker_stats.append(stats)
        if error is None:
            return  # the worker finished and ran its own teardown
        instance = node.workerinput.get(WORKER_INPUT_INSTANCE)
        if not instance or not state.ledger.path.exists():
            return
        from pytest_northflank.cleanup import clean_up_after_worker

        clean_up_after_worker(state, str(node.gateway.id), str(instance))
