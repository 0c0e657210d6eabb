"""xdist controller hooks, registered only when pytest-xdist is active.

A module-level ``pytest_testnodedown`` would break runs without xdist (unknown hook), so these
live on an object the plugin registers from ``pytest_configure`` when the ``xdist`` plugin is
loaded and this process is the controller.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

WORKER_INPUT_RUN_ID = "nf_run_id"
WORKER_INPUT_RUN_DIR = "nf_run_dir"
WORKER_INPUT_INSTANCE = "nf_worker_instance"


class XdistController:
    """Hands the run identity to each worker and cleans up after workers that crash."""

    def __init__(
        self,
        *,
        run_id: str,
        run_dir: str,
        extra_input: dict[str, Any],
        on_worker_crash: Callable[[str, str], None],
    ) -> None:
        self._run_id = run_id
        self._run_dir = run_dir
        self._extra_input = extra_input
        self._on_worker_crash = on_worker_crash

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_INPUT_RUN_ID] = self._run_id
        node.workerinput[WORKER_INPUT_RUN_DIR] = self._run_dir
        # A fresh token per worker process: a replacement for a crashed gw1 is a new owner, so
        # cleaning up after the crashed one never touches the replacement's sandboxes.
        node.workerinput[WORKER_INPUT_INSTANCE] = f"{node.gateway.id}-{secrets.token_hex(4)}"
        node.workerinput.update(self._extra_input)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        if error is None:
            return  # the worker finished and ran its own teardown
        instance = node.workerinput.get(WORKER_INPUT_INSTANCE)
        if instance:
            self._on_worker_crash(str(node.gateway.id), str(instance))
