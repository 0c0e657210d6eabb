"""Helpers for the conformance tests: the recipe's create body, unique names, the SDK."""

from __future__ import annotations

import itertools
import os
from typing import Any

from northflank import ApiClient

from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"
_counter = itertools.count()


def unique_name(prefix: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}-{worker}-{os.getpid()}-{next(_counter)}"[:54]


def deployment(name: str, command: str = "sleep infinity", **extra: Any) -> dict[str, Any]:
    """The create body of the contract's recipe (section 9)."""
    return {
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "instances": 1,
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": command},
        },
        **extra,
    }


def sdk_for(server: EmulatorServer) -> ApiClient:
    # base_url and api_token given explicitly: nothing comes from the environment.
    return ApiClient(api_token=server.token, base_url=server.url)
