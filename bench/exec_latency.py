"""Benchmark: the emulator's exec round trip, `run(["true"])`, ours beside the official SDK.

    python bench/exec_latency.py                     # both isolation modes, 300 rounds
    python bench/exec_latency.py --rounds 100 --isolation namespace

One emulator per isolation mode and layout, one sandbox in it; both clients call alternately
(so load on the machine hits both alike) after a warm-up. Two layouts: the emulator in this
process (a plain ``pytest`` run) and in a process of its own (the xdist-shared emulator,
``pytest-northflank emulator``), where client and server do not share one interpreter lock.
Prints p50, p90 and p99 per client, mode and layout, with the load average, and saves the
table to ``bench/results-exec.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_northflank import __version__
from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.info_file import read_info_file
from pytest_northflank.emulator.runtime import ContainerRuntime, probe_namespaces

RESULTS = Path(__file__).with_name("results-exec.md")
PROJECT = "default-project"
WARM_UP = 20


def _sdk(url: str, token: str) -> Any:
    warnings.simplefilter("ignore")
    import northflank  # the official SDK, a test dependency

    return northflank.ApiClient(api_token=token, base_url=url)


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


@contextlib.contextmanager
def emulator(isolation: str, layout: str) -> Iterator[tuple[str, str]]:
    """(url, token) of an emulator in this process or in a subprocess."""
    if layout == "in-process":
        with EmulatorServer(isolation=isolation) as server:  # type: ignore[arg-type]
            yield server.url, server.token
        return
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as scratch:
        info_path = Path(scratch) / "info.json"
        argv = [sys.executable, "-m", "pytest_northflank.emulator", "--isolation", isolation,
                "--info-file", str(info_path)]  # fmt: skip
        env = {**os.environ, "NORTHFLANK_EMULATOR_TOKEN": token}
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while (info := read_info_file(info_path)) is None:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the emulator process did not start")
                time.sleep(0.05)
            yield info.url, token
        finally:
            process.terminate()
            process.wait(30)


def measure(isolation: str, layout: str, rounds: int) -> dict[str, list[float]]:
    with (
        emulator(isolation, layout) as (url, token),
        NorthflankClient(token, base_url=url) as ours,
    ):
        service = ours.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name="bench-exec", command="sleep infinity")
        )
        ours.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)
        sdk = _sdk(url, token)
        calls = {
            "ours": lambda: ours.run(PROJECT, service.id, ["true"]),
            "official SDK": lambda: sdk.exec.run_service_command(
                project_id=PROJECT, service_id=service.id, command=["true"]
            ),
        }
        for call in calls.values():
            for _ in range(WARM_UP):
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - started) * 1000)
        return times


def runtime_only(isolation: str, rounds: int) -> list[float]:
    """``Container.exec(["true"])`` to its exit, no WebSocket: the emulator's own share."""
    runtime = ContainerRuntime(isolation)  # type: ignore[arg-type]
    container = runtime.start("bench-runtime", ["sleep", "infinity"], {})

    async def once() -> float:
        started = time.perf_counter()
        process = await container.exec(["true"])
        await process.close_stdin()
        async for _ in process.output():
            pass
        await process.wait()
        process.close()
        return (time.perf_counter() - started) * 1000

    async def run_all() -> list[float]:
        for _ in range(WARM_UP):
            await once()
        return [await once() for _ in range(rounds)]

    try:
        return asyncio.run(run_all())
    finally:
        container.stop(0)
        runtime.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--isolation", choices=["namespace", "directory", "both"], default="both")
    parser.add_argument("--label", default="", help="a note for the table (e.g. 'before')")
    args = parser.parse_args()
    modes = ["namespace", "directory"] if args.isolation == "both" else [args.isolation]
    if "namespace" in modes and not probe_namespaces()[0]:
        modes.remove("namespace")
    rows = []
    for layout in ("in-process", "own process"):
        for mode in modes:
            load = os.getloadavg()[0]
            for name, samples in measure(mode, layout, args.rounds).items():
                rows.append(
                    f"| {layout} | {mode} | {name} | {statistics.median(samples):.1f} | "
                    f"{_percentile(samples, 0.9):.1f} | {_percentile(samples, 0.99):.1f} | "
                    f"{load:.1f} |"
                )
    for mode in modes:
        load = os.getloadavg()[0]
        samples = runtime_only(mode, args.rounds)
        rows.append(
            f"| runtime only (no WebSocket) | {mode} | - | {statistics.median(samples):.1f} | "
            f"{_percentile(samples, 0.9):.1f} | {_percentile(samples, 0.99):.1f} | {load:.1f} |"
        )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    label = f" ({args.label})" if args.label else ""
    table = "\n".join(
        [
            f"# Exec round trip on the emulator{label}",
            "",
            f"`python bench/exec_latency.py` on {when}: pytest-northflank {__version__}, "
            f"Python {platform.python_version()}, {sys.platform}, {args.rounds} rounds of "
            '`run(["true"])` per client, calls alternating.',
            "",
            "| emulator | isolation | client | p50 (ms) | p90 (ms) | p99 (ms) | load avg |",
            "|---|---|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(table)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
