"""``healthChecks`` (contract section 12.4): validated on create, and the readiness probe run.

As on Northflank, a service with a ``readinessProbe`` is COMPLETED only once the probe has
passed; until then it stays IN_PROGRESS. The emulator runs the probe inside the sandbox (an
exec, so it reaches the sandbox's own network) every :data:`PROBE_INTERVAL` seconds, whatever
``periodSeconds`` and ``initialDelaySeconds`` say: tests should not wait Northflank's 10 s
minimum period. Liveness and startup probes are validated and echoed, not run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from pytest_northflank.probe import HTTP_PROBE, TCP_PROBE

if TYPE_CHECKING:
    from pytest_northflank.emulator.runtime import Container

PROBE_INTERVAL = 0.2
PROTOCOLS = ("HTTP", "TCP", "CMD")
TYPES = ("livenessProbe", "readinessProbe", "startupProbe")
# Required integer fields and their ranges (CLISPEC).
RANGES = {
    "initialDelaySeconds": (1, 180),
    "periodSeconds": (10, 600),
    "timeoutSeconds": (1, 60),
    "failureThreshold": (1, 255),
}
FIELDS = {"protocol", "type", "path", "port", "cmd", "successThreshold", *RANGES}


@dataclass(frozen=True)
class HealthCheck:
    """One validated probe."""

    protocol: str
    type: str
    port: int | None
    path: str | None
    cmd: str | None
    timeout_seconds: int

    def argv(self) -> list[str]:
        """What runs inside the sandbox for one attempt."""
        if self.protocol == "CMD":
            assert self.cmd is not None
            return ["sh", "-c", self.cmd]
        if self.protocol == "TCP":
            return ["sh", "-c", TCP_PROBE, "sh", str(self.port)]
        return ["sh", "-c", HTTP_PROBE, "sh", str(self.port), self.path or "/"]

    def passed(self, exit_code: int, stdout: bytes) -> bool:
        if self.protocol != "HTTP":
            return exit_code == 0
        status = stdout.strip()
        # Kubernetes counts any status from 200 to 399 as success.
        return status.isdigit() and 200 <= int(status) < 400


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_health_checks(add: Callable[[str, str], None], value: Any) -> list[HealthCheck]:
    """Validate ``healthChecks``; each problem goes to ``add(path, message)``."""
    if value is None:
        return []
    if not isinstance(value, list):
        add("healthChecks", "must be an array")
        return []
    checks = []
    for index, raw in enumerate(value):
        path = f"healthChecks.{index}"
        if not isinstance(raw, dict):
            add(path, "must be an object")
            continue
        problems = _item_problems(raw, path)
        for where, message in problems:
            add(where, message)
        if not problems:
            protocol = raw["protocol"]
            checks.append(
                HealthCheck(
                    protocol=protocol,
                    type=raw["type"],
                    port=raw.get("port") if protocol != "CMD" else None,
                    path=raw.get("path") if protocol == "HTTP" else None,
                    cmd=raw.get("cmd") if protocol == "CMD" else None,
                    timeout_seconds=raw["timeoutSeconds"],
                )
            )
    return checks


def _item_problems(raw: dict[str, Any], path: str) -> list[tuple[str, str]]:
    problems = [(f"{path}.{key}", "is not allowed") for key in raw if key not in FIELDS]
    protocol, kind = raw.get("protocol"), raw.get("type")
    if protocol not in PROTOCOLS:
        problems.append((f"{path}.protocol", f"must be one of {', '.join(PROTOCOLS)}"))
    if kind not in TYPES:
        problems.append((f"{path}.type", f"must be one of {', '.join(TYPES)}"))
    for name, (low, high) in RANGES.items():
        number = raw.get(name)
        if not _is_int(number) or not low <= number <= high:
            problems.append((f"{path}.{name}", f"must be an integer from {low} to {high}"))
    port, probe_path, cmd = raw.get("port"), raw.get("path"), raw.get("cmd")
    if protocol in ("HTTP", "TCP") and not (_is_int(port) and 1 <= port <= 65535):
        problems.append((f"{path}.port", f"is required for {protocol}: an integer, 1 to 65535"))
    if protocol == "HTTP" and not (isinstance(probe_path, str) and probe_path.startswith("/")):
        problems.append((f"{path}.path", "is required for HTTP: a path starting with /"))
    if protocol == "CMD" and not (isinstance(cmd, str) and cmd.strip()):
        problems.append((f"{path}.cmd", "is required for CMD: a command"))
    return problems


def readiness_probe(checks: list[HealthCheck]) -> HealthCheck | None:
    return next((check for check in checks if check.type == "readinessProbe"), None)


async def attempt(container: Container, check: HealthCheck) -> bool:
    """Run the probe once inside the sandbox; False on any failure (or its timeout)."""
    try:
        process = await container.exec(check.argv())
    except Exception:  # not runnable, sandbox stopping: not ready (yet)
        return False
    stdout = bytearray()

    async def collect() -> None:
        async for stream, chunk in process.output():
            if stream == "stdout":
                stdout.extend(chunk)

    try:
        await process.close_stdin()
        code, _ = await asyncio.wait_for(
            asyncio.gather(process.wait(), collect()), check.timeout_seconds
        )
    except (asyncio.TimeoutError, OSError):
        return False
    finally:
        process.kill()
        process.close()
    return check.passed(code, bytes(stdout))


async def watch_readiness(
    container: Container, check: HealthCheck, on_ready: Callable[[], None]
) -> None:
    """Probe until the first success, then call ``on_ready`` (cancel the task to stop)."""
    while container.is_running():
        if await attempt(container, check):
            on_ready()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(PROBE_INTERVAL)
