"""Benchmark: the emulator's exec round trip, `run(["true"])`, ours beside the official SDK.

    python bench/exec_latency.py                     # both isolation modes, 300 rounds
    python bench/exec_latency.py --rounds 100 --isolation namespace

One emulator per isolation mode in this process, one sandbox in it; both clients call
alternately (so load on the machine hits both alike) after a warm-up. Prints p50, p90 and
p99 per client and mode, and saves the table to ``bench/results-exec.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_northflank import __version__
from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
from pytest_northflank.emulator import EmulatorServer
from pytest_northflank.emulator.runtime import probe_namespaces

RESULTS = Path(__file__).with_name("results-exec.md")
PROJECT = "default-project"
WARM_UP = 20


def _sdk(server: EmulatorServer) -> Any:
    warnings.simplefilter("ignore")
    import northflank  # the official SDK, a test dependency

    return northflank.ApiClient(api_token=server.token, base_url=server.url)


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def measure(isolation: str, rounds: int) -> dict[str, list[float]]:
    with (
        EmulatorServer(isolation=isolation) as server,  # type: ignore[arg-type]
        NorthflankClient(server.token, base_url=server.url) as ours,
    ):
        service = ours.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name="bench-exec", command="sleep infinity")
        )
        ours.wait_for_service_ready(PROJECT, service.id, timeout=60, poll_interval=0.05)
        sdk = _sdk(server)
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
    for mode in modes:
        for name, samples in measure(mode, args.rounds).items():
            rows.append(
                f"| {mode} | {name} | {statistics.median(samples):.1f} | "
                f"{_percentile(samples, 0.9):.1f} | {_percentile(samples, 0.99):.1f} |"
            )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    label = f" ({args.label})" if args.label else ""
    table = "\n".join(
        [
            f"# Exec round trip on the emulator{label}",
            "",
            f"`python bench/exec_latency.py` on {when}: pytest-northflank {__version__}, "
            f"Python {platform.python_version()}, {sys.platform}, {args.rounds} rounds of "
            "`run([\"true\"])` per client, calls alternating.",
            "",
            "| isolation | client | p50 (ms) | p90 (ms) | p99 (ms) |",
            "|---|---|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    print(table)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
