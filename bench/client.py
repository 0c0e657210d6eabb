"""Benchmark: our client beside the official Python SDK (northflank 2.1.0), on one emulator.

    python bench/client.py            # full run: files up to 512 MiB (needs ~2 GiB free in /tmp)
    python bench/client.py --quick    # files up to 64 MiB

One ``EmulatorServer`` runs in this process; every measured case runs in a fresh subprocess
(``--worker``), so peak-RSS figures never mix: after a warm-up the kernel's peak mark is
reset (``/proc/self/clear_refs``), and the growth is ``VmHWM`` after minus ``VmRSS`` before.
The two latency cases run both clients in one subprocess with their calls interleaved, so
load on the machine hits both alike.
Results are checked (sha256 of what arrived) outside the timed part.
The table is printed and saved to ``bench/results-client.md``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROJECT = "default-project"
MiB = 1024 * 1024
EXEC_ROUNDS = 200
REST_ROUNDS = 200
READY_DELAYS = (6.0, 30.0)  # seconds from create to COMPLETED (--quick: the first only)
TREE_FILES = 2000
RESULTS = Path(__file__).with_name("results-client.md")


# ----------------------------------------------------------------------------- worker side


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _quiet_sdk_warnings() -> None:
    import warnings

    # The SDK opens session WebSockets without a context manager; websockets >= 17.1 warns.
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _ours(job: dict[str, Any]) -> Any:
    from pytest_northflank.client import NorthflankClient

    return NorthflankClient(job["token"], base_url=job["url"])


def _sdk(job: dict[str, Any]) -> Any:
    _quiet_sdk_warnings()
    import northflank

    return northflank.ApiClient(api_token=job["token"], base_url=job["url"])


def _latency(job: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Both clients in one process, calls interleaved (the order alternating every round), so
    that load on the machine hits both alike."""
    service, rounds = job["service"], job["rounds"]
    ours, sdk = _ours(job), _sdk(job)
    if job["case"] == "exec":
        calls = {
            "ours": lambda: ours.run(PROJECT, service, ["true"]),
            "sdk": lambda: sdk.exec.run_service_command(
                project_id=PROJECT, service_id=service, command=["true"]
            ),
        }
    else:
        calls = {
            "ours": lambda: ours.get_service(PROJECT, service),
            "sdk": lambda: sdk.get.service(project_id=PROJECT, service_id=service),
        }

    def warm_up() -> None:
        for call in calls.values():
            call()

    def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"ours": [], "sdk": []}
        for i in range(rounds):
            for impl in ("ours", "sdk") if i % 2 == 0 else ("sdk", "ours"):
                started = time.perf_counter()
                calls[impl]()
                times[impl].append(time.perf_counter() - started)
        return times

    return warm_up, measure


def _operation(job: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(warm-up, measured operation) for one job."""
    impl, case, service = job["impl"], job["case"], job["service"]
    if impl == "both":
        return _latency(job)
    client = _ours(job) if impl == "ours" else _sdk(job)

    def exec_true() -> Any:
        if impl == "ours":
            return client.run(PROJECT, service, ["true"])
        return client.exec.run_service_command(
            project_id=PROJECT, service_id=service, command=["true"]
        )

    if case == "create":
        return (lambda: None), (lambda: _create_and_wait(job, client))

    if case == "upload":

        def upload() -> Any:
            if impl == "ours":
                return client.upload(PROJECT, service, job["local"], job["remote"])
            return client.files.upload(
                project_id=PROJECT, service_id=service, local_path=job["local"],
                remote_path=job["remote"], timeout=1800,
            )  # fmt: skip

        return exec_true, upload

    if case == "download":

        def download() -> Any:
            if impl == "ours":
                return client.download(PROJECT, service, job["remote"], job["local"])
            return client.files.download(
                project_id=PROJECT, service_id=service, remote_path=job["remote"],
                local_path=job["local"], timeout=1800,
            )  # fmt: skip

        return exec_true, download

    raise SystemExit(f"unknown case {case!r}")


def _create_and_wait(job: dict[str, Any], client: Any) -> dict[str, Any]:
    """Requests and seconds for one create plus the wait until COMPLETED."""
    name = job["name"]
    spec = {
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "instances": 1,
            "external": {"imagePath": "ubuntu:22.04"},
            "docker": {"configType": "customCommand", "customCommand": "sleep infinity"},
        },
    }
    started = time.perf_counter()
    if job["impl"] == "ours":
        from pytest_northflank.client import DeploymentServiceSpec

        before = client.request_count
        created = client.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name=name, command="sleep infinity")
        )
        client.wait_for_service_ready(PROJECT, created.id)
        requests = client.request_count - before
    else:
        import northflank.endpoint as endpoint

        sent = 0
        original = endpoint._send_via_stdlib

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal sent
            sent += 1
            return original(*args, **kwargs)

        endpoint._send_via_stdlib = counting  # type: ignore[assignment]
        created = client.create.service.deployment(project_id=PROJECT, data=spec).data
        client.helpers.wait_for_service_ready(project_id=PROJECT, service_id=created["id"])
        requests = sent
    return {"requests": requests, "seconds": time.perf_counter() - started}


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def worker(job: dict[str, Any]) -> None:
    warm_up, operation = _operation(job)
    warm_up()
    gc.collect()
    if _reset_peak_rss():
        # Precise: the peak is reset to the current RSS, so VmHWM afterwards is the
        # operation's own peak.
        before = _memory_kib("VmRSS") / 1024
        peak: Callable[[], float] = lambda: _memory_kib("VmHWM") / 1024  # noqa: E731
    else:
        before = _peak_rss_mib()
        peak = _peak_rss_mib
    started = time.perf_counter()
    value = operation()
    seconds = time.perf_counter() - started
    growth = max(0.0, peak() - before)
    if not isinstance(value, (list, dict)):
        value = None
    print(json.dumps({"seconds": seconds, "rss_growth_mib": growth, "value": value}))


# ----------------------------------------------------------------------------- parent side


class LatencyProxy:
    """A TCP proxy adding ``one_way`` seconds to every chunk in each direction, plus one round
    trip before a new connection's first bytes (what the TCP handshake costs on a real link;
    TLS would add one or two more). Latency only: chunks are not throttled."""

    def __init__(self, target: str, one_way: float) -> None:
        import asyncio
        import threading

        host, port = target.split("//", 1)[1].rsplit(":", 1)
        self._target = (host, int(port))
        self._one_way = one_way
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait()
        self.url = f"http://127.0.0.1:{self._port}"

    def _serve(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        async def pipe(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: float
        ) -> None:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def deliver() -> None:
                while True:
                    due, data = await queue.get()
                    if not data:
                        writer.close()
                        return
                    await asyncio.sleep(max(0.0, due - self._loop.time()))
                    writer.write(data)
                    await writer.drain()

            sender = asyncio.create_task(deliver())
            delay = self._one_way + extra
            while data := await reader.read(256 * 1024):
                queue.put_nowait((self._loop.time() + delay, data))
                delay = self._one_way
            queue.put_nowait((0.0, b""))
            await sender

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            handshake = 2 * self._one_way
            await asyncio.gather(
                pipe(reader, up_writer, handshake),
                pipe(up_reader, writer, 0.0),
                return_exceptions=True,
            )

        async def start() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self._port = server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            piece = min(remaining, 4 * MiB)
            handle.write(os.urandom(piece))
            remaining -= piece


def _source_tree(root: Path) -> int:
    """``TREE_FILES`` small text files in nested packages, like a repository checkout."""
    total = 0
    for i in range(TREE_FILES):
        folder = root / f"pkg{i % 20}" / f"mod{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(f"line_{i}_{j} = {j * i}\n" for j in range(20 + i % 200))
        (folder / f"file_{i}.py").write_text(text)
        total += len(text)
    return total


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class Bench:
    def __init__(self, quick: bool) -> None:
        from pytest_northflank.client import DeploymentServiceSpec, NorthflankClient
        from pytest_northflank.emulator import EmulatorServer

        self.quick = quick
        self.work = Path(tempfile.mkdtemp(prefix="nf-bench-"))
        self.server = EmulatorServer().start()
        self.nf = NorthflankClient(self.server.token, base_url=self.server.url)
        created = self.nf.create_deployment_service(
            PROJECT, DeploymentServiceSpec(name="bench target", command="sleep infinity")
        )
        self.service = self.nf.wait_for_service_ready(PROJECT, created.id, poll_interval=0.05).id
        self.isolation = self.server.isolation
        self.rows: list[tuple[str, str, str, str]] = []

    def close(self) -> None:
        self.nf.close()
        self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def remote(self, command: str) -> str:
        result = self.nf.run(PROJECT, self.service, command)
        if not result.ok:
            raise RuntimeError(f"{command}: {result.stderr_text}")
        return result.stdout_text

    def job(self, impl: str, case: str, **extra: Any) -> dict[str, Any]:
        job = {
            "impl": impl,
            "case": case,
            "url": self.server.url,
            "token": self.server.token,
            "service": self.service,
        }
        job.update(extra)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)],
            capture_output=True,
            text=True,
            env=env,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{impl} {case} failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def add(self, what: str, ours: str, sdk: str, ratio: str) -> None:
        self.rows.append((what, ours, sdk, ratio))
        print(f"  {what:<44} ours {ours:>22}   SDK {sdk:>22}   {ratio}", flush=True)

    # ------------------------------------------------------------------ cases

    def exec_latency(self) -> None:
        times = self.job("both", "exec", rounds=EXEC_ROUNDS)["value"]
        median = {impl: statistics.median(times[impl]) * 1000 for impl in times}
        p90 = {impl: sorted(times[impl])[int(EXEC_ROUNDS * 0.9)] * 1000 for impl in times}
        self.add(
            f"exec `true`, median of {EXEC_ROUNDS} (p90)",
            f"{median['ours']:.1f} ms ({p90['ours']:.1f})",
            f"{median['sdk']:.1f} ms ({p90['sdk']:.1f})",
            f"{median['sdk'] / median['ours']:.2f}x faster",
        )

    def rest_latency(self) -> None:
        self._rest_latency("loopback", self.server.url)
        # Pooling only pays where a new connection costs round trips: model a 10 ms link.
        proxy = LatencyProxy(self.server.url, one_way=0.005)
        try:
            self._rest_latency("10 ms RTT link", proxy.url)
        finally:
            proxy.close()

    def _rest_latency(self, label: str, url: str) -> None:
        times = self.job("both", "rest", url=url, rounds=REST_ROUNDS)["value"]
        median = {impl: statistics.median(times[impl]) * 1000 for impl in times}
        self.add(
            f"REST get service, {label}, median of {REST_ROUNDS}",
            f"{median['ours']:.2f} ms",
            f"{median['sdk']:.2f} ms",
            f"{median['sdk'] / median['ours']:.2f}x faster",
        )

    def create_and_wait(self, delay: float) -> None:
        self.server.control.set_ready(delay=delay)
        results = {}
        try:
            for impl in ("ours", "sdk"):
                results[impl] = self.job(impl, "create", name=f"bench create {impl}")["value"]
        finally:
            self.server.control.set_ready(delay=0)
            for service in self.nf.list_services(PROJECT):
                if service.name.startswith("bench create"):
                    self.nf.delete_service(PROJECT, service.id)
        ours, sdk = results["ours"], results["sdk"]
        self.add(
            f"create + wait ready, {delay:g} s deploy: REST requests",
            f"{ours['requests']} req, ready seen at {ours['seconds']:.1f} s",
            f"{sdk['requests']} req, ready seen at {sdk['seconds']:.1f} s",
            f"{sdk['requests'] / ours['requests']:.2f}x fewer",
        )

    def transfer(self, label: str, size: int, local: Path, is_tree: bool) -> None:
        expected = _tree_digest(local) if is_tree else _sha256(local)
        up: dict[str, dict[str, Any]] = {}
        down: dict[str, dict[str, Any]] = {}
        for impl in ("ours", "sdk"):
            remote_dir = f"/tmp/bench-{impl}"
            self.remote(f"rm -rf {remote_dir} && mkdir -p {remote_dir}")
            remote = f"{remote_dir}/tree" if is_tree else f"{remote_dir}/data.bin"
            up[impl] = self.job(impl, "upload", local=str(local), remote=remote)
            if is_tree:
                count = self.remote(f"find {remote} -type f | wc -l").strip()
                assert count == str(TREE_FILES), (impl, count)
            else:
                digest = self.remote(f"sha256sum {remote}").split()[0]
                assert digest == expected, f"{impl} upload corrupted {label}"
            target = self.work / f"down-{impl}"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            local_target = target / "tree" if is_tree else target / "data.bin"
            down[impl] = self.job(impl, "download", local=str(local_target), remote=remote)
            got = _tree_digest(local_target) if is_tree else _sha256(local_target)
            assert got == expected, f"{impl} download corrupted {label}"
            shutil.rmtree(target, ignore_errors=True)
            self.remote(f"rm -rf {remote_dir}")
        for direction, results in (("upload", up), ("download", down)):
            rate = {impl: size / MiB / results[impl]["seconds"] for impl in results}
            rss = {impl: results[impl]["rss_growth_mib"] for impl in results}
            self.add(
                f"{direction} {label}",
                f"{rate['ours']:.1f} MiB/s, +{rss['ours']:.0f} MiB",
                f"{rate['sdk']:.1f} MiB/s, +{rss['sdk']:.0f} MiB",
                f"{rate['ours'] / rate['sdk']:.2f}x throughput",
            )

    def run(self) -> None:
        print(f"emulator {self.server.url} ({self.server.isolation})", flush=True)
        self.exec_latency()
        self.rest_latency()
        for delay in READY_DELAYS[:1] if self.quick else READY_DELAYS:
            self.create_and_wait(delay)
        sizes = [1, 64] if self.quick else [1, 64, 512]
        for mib in sizes:
            path = self.work / f"random-{mib}.bin"
            _random_file(path, mib * MiB)
            self.transfer(f"{mib} MiB random", mib * MiB, path, is_tree=False)
            path.unlink()
        tree = self.work / "tree"
        tree_bytes = _source_tree(tree)
        self.transfer(
            f"tree: {TREE_FILES} files, {tree_bytes / MiB:.1f} MiB", tree_bytes, tree, True
        )

    def table(self) -> str:
        import northflank

        from pytest_northflank import __version__

        lines = [
            "# Client benchmark: pytest-northflank client vs the official SDK",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `python bench/client.py"
            f"{' --quick' if self.quick else ''}`: pytest-northflank {__version__}, northflank "
            f"SDK {getattr(northflank, '__version__', '2.1.0')}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, emulator isolation "
            f"`{self.isolation}`. One emulator in the benchmark process; each case in a "
            "fresh subprocess (latencies: both clients in one subprocess, calls interleaved). "
            "RSS = how far the process's peak RSS rose above its RSS at the "
            "start of the operation (kernel peak mark reset before it, read from `VmHWM` after).",
            "",
            "| case | ours | official SDK | ours vs SDK |",
            "|---|---|---|---|",
        ]
        lines += [f"| {what} | {ours} | {sdk} | {ratio} |" for what, ours, sdk, ratio in self.rows]
        lines += [
            "",
            "Notes:",
            "- exec latency is dominated by the emulator starting the command (a process entering "
            "the sandbox's namespaces); each client's own share is ~2-3 ms.",
            "- REST on loopback: a new TCP connection costs next to nothing, so pooling cannot "
            "show. The 10 ms RTT row goes through a proxy that delays every chunk by 5 ms each "
            "way and a new connection's first bytes by one more round trip (the TCP handshake); "
            "TLS, which the real API uses, would add one or two more round trips per SDK call.",
            "- create + wait: our client checks at once, then after 1.5 s, backing off x1.5 "
            "to every 6 s (and stretching further when the rate-limit figures run low); "
            "the SDK polls every 3 s. "
            "Short deploys cost us a request or two more, long ones fewer (real deploys take "
            "tens of seconds to minutes against a 1000 requests/hour quota).",
            "- Transfers: our client streams an uncompressed tar in 192 KiB frames (2 exec round "
            "trips per copy); the SDK builds a gzip tar in memory (3-4 round trips) and, on "
            "download, holds the whole archive in memory before extracting.",
        ]
        return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="files up to 64 MiB only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to save the table")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    free = shutil.disk_usage(tempfile.gettempdir()).free
    needed = (200 if args.quick else 2048) * MiB
    if free < needed:
        raise SystemExit(f"need {needed // MiB} MiB free in {tempfile.gettempdir()}, have "
                         f"{free // MiB} MiB")  # fmt: skip
    bench = Bench(args.quick)
    try:
        bench.run()
    finally:
        bench.close()
    table = bench.table()
    print()
    print(table)
    args.out.write_text(table)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
