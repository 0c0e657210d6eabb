"""Benchmark: emulator images, cold pull against cached start, beside the host userland.

    python bench/images.py            # 10 starts per case
    python bench/images.py --quick    # 3

A registry server on 127.0.0.1 (the tests' own, with Bearer token auth) serves a static
busybox userland plus a layer of BULK_MIB of incompressible data, so a pull moves real bytes
through gzip, sha256 and the unpacker. Measured per case (median of N, fresh cache per cold
pull): the pull alone; a sandbox start (create the container and run its main command)
from a cold cache, from a warm cache, and on the host's userland. Needs root (namespaces).
The table is printed and saved to ``bench/results-images.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from image_builder import Layer, busybox_layer, make_image  # noqa: E402
from image_registry import TestRegistry  # noqa: E402

from pytest_northflank.emulator.images import ImageCache, ImageStore  # noqa: E402
from pytest_northflank.emulator.runtime import ContainerRuntime  # noqa: E402

BULK_MIB = 16


def bulk_layer() -> Layer:
    layer = Layer().directory("opt")
    for number in range(BULK_MIB):
        layer.file(f"opt/blob{number:02d}", os.urandom(1 << 20))
    return layer


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rounds = 3 if parser.parse_args().quick else 10
    if os.geteuid() != 0:
        print("needs root (namespace isolation)", file=sys.stderr)
        return 1
    image = make_image(busybox_layer(), bulk_layer(), Cmd=["sleep", "1000"])
    size = sum(len(layer) for layer in image.layers)
    registry = TestRegistry()
    registry.push("bench/userland", "1", image)
    name = f"{registry.address}/bench/userland:1"
    work = Path(tempfile.mkdtemp(prefix="nf-bench-images-"))
    runtime = ContainerRuntime("namespace")
    counter = iter(range(10**6))
    try:
        pulls, cold, warm, host = [], [], [], []
        for _ in range(rounds):
            cache_dir = work / f"cache-{next(counter)}"
            pulls.append(timed(lambda d=cache_dir: ImageStore(ImageCache(d)).get(name)))
            shutil.rmtree(cache_dir)

        def start(cache_dir: Path | None) -> None:
            sandbox = f"bench-{next(counter)}"
            if cache_dir is None:
                container = runtime.start(sandbox, ["sleep", "1000"], {})
            else:
                pulled = ImageStore(ImageCache(cache_dir)).get(name)
                container = runtime.start(sandbox, list(pulled.config.cmd), {}, image=pulled)
            container.stop(grace=0)

        for _ in range(rounds):
            cache_dir = work / f"cache-{next(counter)}"
            cold.append(timed(lambda d=cache_dir: start(d)))  # type: ignore[misc]
            shutil.rmtree(cache_dir)
        warm_dir = work / "warm"
        start(warm_dir)
        for _ in range(rounds):
            warm.append(timed(lambda: start(warm_dir)))
            host.append(timed(lambda: start(None)))
    finally:
        runtime.shutdown()
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("pull only (empty cache)", median_ms(pulls)),
        ("sandbox start, cold cache (pull + unpack + start)", median_ms(cold)),
        ("sandbox start, cached image", median_ms(warm)),
        ("sandbox start, host userland (no image)", median_ms(host)),
    ]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Emulator images ({when}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"median of {rounds})",
        "",
        f"Image: static busybox + {BULK_MIB} MiB of random files, {size / (1 << 20):.1f} MiB "
        "compressed, 2 layers, served by a registry on 127.0.0.1 with token auth.",
        "",
        "| case | time |",
        "|---|---|",
        *(f"| {case} | {value} |" for case, value in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "results-images.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
