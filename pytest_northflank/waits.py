"""Waiting inside a sandbox until a port listens, a URL answers or a command succeeds.

Each attempt is one exec of a small shell program (:mod:`pytest_northflank.probe`), so the
waits work in images without curl, nc or python; they are not recorded in the sandbox's
command history (a wait may take hundreds of attempts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_northflank.errors import ArgumentError, WaitTimeout
from pytest_northflank.probe import HTTP_PROBE, TCP_PROBE, Probe

__all__ = ["Attempt", "wait_for_probe"]

# Pause between two attempts: short next to a server's start-up, long next to one exec.
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Attempt:
    """One try of a probe: whether it passed and what was seen (for the timeout message)."""

    passed: bool
    seen: str


RunArgv = Callable[[Sequence[str]], tuple[int, str, str]]


def attempt(run: RunArgv, probe: Probe) -> Attempt:
    """Run ``probe`` once with ``run(argv) -> (exit code, stdout, stderr)``."""
    if probe.kind == "tcp":
        code, _, _ = run(["sh", "-c", TCP_PROBE, "sh", str(probe.port)])
        return Attempt(code == 0, "listening" if code == 0 else "nothing listening")
    if probe.kind == "http":
        code, out, err = run(["sh", "-c", HTTP_PROBE, "sh", str(probe.port), probe.path])
        status = out.strip()
        if status.isdigit():
            return Attempt(int(status) == probe.status, f"status {status}")
        if code == 2 and err.strip():
            return Attempt(False, err.strip())
        return Attempt(False, "no answer (connection refused or closed)")
    assert probe.command is not None
    code, out, err = run(["sh", "-c", probe.command])
    last = (err.strip() or out.strip()).splitlines()[-1:] or [""]
    detail = f": {last[0][:200]}" if last[0] else ""
    return Attempt(code == 0, f"exit {code}{detail}")


def describe(probe: Probe) -> str:
    if probe.kind == "tcp":
        return f"port {probe.port}"
    if probe.kind == "http":
        return f"http://127.0.0.1:{probe.port}{probe.path} (want status {probe.status})"
    return f"command {probe.command!r}"


def check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ArgumentError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def wait_for_probe(
    run: RunArgv, probe: Probe, *, timeout: float, where: str, interval: float = POLL_INTERVAL
) -> Attempt:
    """Try ``probe`` until it passes; :class:`WaitTimeout` after ``timeout`` seconds naming
    what was awaited and the last thing seen."""
    __tracebackhide__ = True
    check_timeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        result = attempt(run, probe)
        if result.passed:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"{describe(probe)} in {where} was not ready within {timeout:g}s "
                f"(last seen: {result.seen})",
                timeout=timeout,
            )
        time.sleep(max(min(interval, deadline - time.monotonic()), 0.0))
