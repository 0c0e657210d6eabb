"""Helpers for the container runtime tests: run coroutines and execs, find the processes and
mounts a sandbox left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from pytest_northflank.emulator.runtime import (
    Container,
    ContainerRuntime,
    ExecProcess,
    probe_namespaces,
)

T = TypeVar("T")

NAMESPACES_WORK, WHY_NOT = probe_namespaces()
needs_namespaces = pytest.mark.skipif(
    not NAMESPACES_WORK, reason=f"namespace isolation unavailable here: {WHY_NOT}"
)
ISOLATIONS = [pytest.param("namespace", marks=needs_namespaces), "directory"]
MARKER = "NF_RUNTIME_TEST_MARKER"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``MARKER=marker``."""
    found = []
    for process in psutil.process_iter(["environ", "status"]):
        environ = process.info["environ"] or {}
        if environ.get(MARKER) == marker and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def mounts_mentioning(path: Path) -> list[str]:
    """Mount entries of *any* process on the host that mention ``path``."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            mountinfo = (entry / "mountinfo").read_text()
        except OSError:
            continue
        hits += [f"{entry.name}: {line}" for line in mountinfo.splitlines() if str(path) in line]
    return hits


@dataclass
class Result:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    chunks: list[tuple[str, bytes]] = field(default_factory=list)


async def collect(process: ExecProcess) -> Result:
    result = Result(exit_code=-1)
    async for stream, data in process.output():
        result.chunks.append((stream, data))
        if stream == "stdout":
            result.stdout += data
        else:
            result.stderr += data
    result.exit_code = await process.wait()
    return result


async def run_exec(
    container: Container,
    argv: list[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    process = await container.exec(argv, env=env)
    if stdin is not None:

        async def feed() -> None:
            await process.write(stdin)
            await process.close_stdin()

        _, result = await asyncio.gather(feed(), collect(process))
        return result
    await process.close_stdin()
    return await collect(process)


def sh(container: Container, script: str, **kwargs: Any) -> Result:
    return run(run_exec(container, ["sh", "-c", script], **kwargs))


@dataclass
class Harness:
    runtime: ContainerRuntime
    marker: str

    def start(
        self, argv: list[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Container:
        sandbox_id = f"rt-{uuid.uuid4().hex[:12]}"
        return self.runtime.start(
            sandbox_id, argv or ["sleep", "infinity"], {MARKER: self.marker, **(env or {})}
        )
