"""The xdist glue: the only code that reads ``workerinput``.

``run_of`` builds each process's :class:`~pytest_northflank.run.identity.Run` from what the
controller handed its worker. The controller's hooks live on :class:`XdistController`, registered
only when pytest-xdist is active (a module-level ``pytest_testnodedown`` would break runs without
xdist: unknown hook).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.plugin.state import get_state

if TYPE_CHECKING:
    from pytest_northflank.run.identity import Run

WORKER_INPUT_RUN_ID = "nf_run_id"
WORKER_INPUT_INSTANCE = "nf_worker_instance"
# The run's random secret (hex), sent to workers over xdist's channel, never written down.
WORKER_INPUT_SECRET = "nf_run_secret"
# The controller's --dist mode (workers see "no"): tells warm-ahead which tests a worker gets.
WORKER_INPUT_DIST = "nf_dist"
# xdist distribution modes where every worker runs every collected test.
EVERY_TEST_HERE = ("no", "each")


def worker_settings(workerinput: dict[str, Any]) -> tuple[str | None, str | None]:
    """The run id and the owner token the controller gave this worker."""
    run_id = workerinput.get(WORKER_INPUT_RUN_ID)
    instance = workerinput.get(WORKER_INPUT_INSTANCE)
    return (str(run_id) if run_id else None, str(instance) if instance else None)


def workers_sharing_tests(workerinput: dict[str, Any] | None) -> int:
    """1 when this process runs every collected test (no xdist, ``--dist each``); otherwise the
    number of xdist workers the tests are dealt out to."""
    if workerinput is None or workerinput.get(WORKER_INPUT_DIST, "load") in EVERY_TEST_HERE:
        return 1
    return max(int(workerinput.get("workercount", 1)), 1)


def run_of(config: pytest.Config) -> Run:
    """This process's place in the run: the controller (or the only process), or a worker."""
    from pytest_northflank.run.identity import Run  # filelock, on first use

    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        return Run()
    run_id, instance = worker_settings(workerinput)
    secret = workerinput.get(WORKER_INPUT_SECRET)
    return Run(
        secret=bytes.fromhex(secret) if isinstance(secret, str) else secrets.token_bytes(32),
        worker_id=str(workerinput.get("workerid", "gw?")),
        is_controller=False,
        instance=instance,
        processes_sharing_tests=workers_sharing_tests(workerinput),
        given_run_id=run_id,
    )


# Modes that may give a module's (or class's) tests to several workers.
SPLITTING_MODES = ("load", "worksteal", "loadgroup")


def splitting_dist_mode(config: pytest.Config) -> str | None:
    """The controller's ``--dist`` mode when it deals one module's tests to several workers
    (so module- and class-scoped fixtures run once per worker), else None."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return None
    if not config.getoption("numprocesses", None):
        return None
    mode = str(config.getoption("dist", "no"))
    return mode if mode in SPLITTING_MODES else None


def register_controller(config: pytest.Config) -> None:
    """In the xdist controller, register the hooks that hand out the run and clean up."""
    if not hasattr(config, "workerinput") and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistController(config), "northflank-xdist")


class XdistController:
    """Hands the run identity to each worker, gathers their stats, cleans up after crashes."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        # One run id for the whole run: the workers put it in their service names.
        node.workerinput[WORKER_INPUT_RUN_ID] = get_state(self.config).run.run_id
        # A fresh token per worker process: a replacement for a crashed gw1 is a new owner, so
        # cleaning up after the crashed one never touches the replacement's sandboxes.
        node.workerinput[WORKER_INPUT_INSTANCE] = f"{node.gateway.id}-{secrets.token_hex(4)}"
        node.workerinput[WORKER_INPUT_DIST] = str(self.config.getoption("dist", "load"))
        node.workerinput[WORKER_INPUT_SECRET] = get_state(self.config).run.secret.hex()

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        state = get_state(self.config)
        output = getattr(node, "workeroutput", None) or {}
        stats = output.get("northflank")
        if stats is not None:
            state.worker_stats.append(stats)
        if error is None:
            return  # the worker finished and ran its own teardown
        instance = node.workerinput.get(WORKER_INPUT_INSTANCE)
        if not instance or not state.run.ledger.path.exists():
            return
        from pytest_northflank.plugin.session import clean_up_after_worker  # httpx, on use

        clean_up_after_worker(state, str(node.gateway.id), str(instance))
