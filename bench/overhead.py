"""Benchmark: what the plugin costs a suite that uses no sandbox.

    python bench/overhead.py              # 2,000 tests, 15 rounds
    python bench/overhead.py --rounds 5

It writes 2,000 tests that use no sandbox (plain functions, parametrized ones, test classes,
a few markers) and collects them with ``pytest --collect-only -q`` in a fresh subprocess, with
the plugin loaded and with ``-p no:northflank``, alternating the two so that load on the
machine hits both alike. It prints the median wall time of each and their ratio (target: at
most 1.05), and saves the table to ``bench/results-overhead.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).with_name("results-overhead.md")
FILES = 20
TESTS_PER_FILE = 100  # 2,000 in all

MODULE = """
import pytest


@pytest.fixture
def numbers():
    return list(range(10))


def test_plain_{f}_0():
    assert 1 + 1 == 2

{plain}

@pytest.mark.parametrize("n", range(40))
def test_param_{f}(n, numbers):
    assert n >= 0


class TestGroup{f}:
{methods}


@pytest.mark.slow
@pytest.mark.parametrize("word", ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"])
def test_marked_{f}(word):
    assert word
"""


def write_suite(root: Path) -> int:
    """Twenty modules of exactly one hundred tests each."""
    (root / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    slow: a marker that has nothing to do with sandboxes\n"
    )
    total = 0
    for f in range(FILES):
        plain = "\n\n".join(
            f"def test_plain_{f}_{n}():\n    assert {n} == {n}" for n in range(1, 30)
        )
        methods = "\n\n".join(
            f"    def test_method_{n}(self, numbers):\n        assert len(numbers) == 10"
            for n in range(20)
        )
        (root / f"test_module_{f:02d}.py").write_text(
            MODULE.format(f=f, plain=plain, methods=methods)
        )
        total += 1 + 29 + 40 + 20 + 10
    return total


def collect(root: Path, *extra: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NORTHFLANK_", "NF_"))}
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    started = time.perf_counter()
    done = subprocess.run([*args, *extra], cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"collection failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nf-bench-overhead-") as scratch:
        root = Path(scratch)
        total = write_suite(root)
        with_plugin: list[float] = []
        without: list[float] = []
        collect(root)  # warm the file cache and the bytecode of the test modules
        collect(root, "-p", "no:northflank")
        for round_ in range(args.rounds):
            # Alternate which goes first, so neither always runs on a warmer machine.
            order = [("with", ()), ("without", ("-p", "no:northflank"))]
            if round_ % 2:
                order.reverse()
            for label, extra in order:
                seconds, line = collect(root, *extra)
                if str(total) not in line:
                    raise SystemExit(f"expected {total} tests, pytest said: {line}")
                (with_plugin if label == "with" else without).append(seconds)

    median_with, median_without = statistics.median(with_plugin), statistics.median(without)
    ratio = median_with / median_without
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Plugin overhead on a suite without sandboxes",
        "",
        f"`python bench/overhead.py` on {stamp}; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.system()}. "
        f"`pytest --collect-only -q` of {total} tests that use no sandbox, in a fresh "
        f"process each time, {args.rounds} rounds alternating the two.",
        "",
        "| | median (s) | min (s) | max (s) |",
        "|---|---:|---:|---:|",
        f"| plugin loaded | {median_with:.3f} | {min(with_plugin):.3f} | {max(with_plugin):.3f} |",
        f"| `-p no:northflank` | {median_without:.3f} | {min(without):.3f} | {max(without):.3f} |",
        "",
        f"Ratio of the medians: **{ratio:.3f}** (target: at most 1.05).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
