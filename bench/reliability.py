"""Benchmark: what a wrong configuration costs a run of 12 sandbox tests.

    python bench/reliability.py

Each case runs ``pytest`` in a subprocess on a suite of 12 ``nf_sandbox`` tests, against an
emulator in its own process playing the remote API (or a port nobody listens on, or a tiny
server that refuses every token), and prints wall time, API requests the server saw, the exit
code, and services left on the server afterwards. Saves the table to
``bench/results-reliability.md``. Tests assert the outcomes; this prints the figures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from remote_emulator import (
    RemoteEmulator,
    start_remote_emulator,
    stop_remote_emulator,
)

RESULTS = Path(__file__).with_name("results-reliability.md")
SUITE = """
import pytest

@pytest.mark.parametrize("n", range(12))
def test_box(nf_sandbox, n):
    assert nf_sandbox.run("true").ok
"""


class Refusing(BaseHTTPRequestHandler):
    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        body = json.dumps({"error": {"status": 401, "message": "Unauthorized"}}).encode()
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def run(suite: Path, env: dict[str, str], *args: str) -> tuple[float, int, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite), *args],
        env=env,
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return time.monotonic() - started, done.returncode, done.stdout + done.stderr


def used(emulator: RemoteEmulator) -> int:
    return int(emulator.control.state()["rateLimit"]["used"])


def main() -> None:
    suite = Path(tempfile.mkdtemp(prefix="nf-bench-reliability-"))
    (suite / "test_suite.py").write_text(SUITE)
    rows = []
    emulator = start_remote_emulator()
    try:
        base = emulator.env()

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        seconds, code, _ = run(
            suite, {**base, "NORTHFLANK_API_BASE_URL": f"http://127.0.0.1:{port}"}
        )
        rows.append(("API unreachable (nothing on the port)", seconds, 0, code, 0))

        emulator.control.reset()
        seconds, code, _ = run(suite, {**base, "NORTHFLANK_PROJECT_ID": "no-such-project"})
        rows.append(("wrong project", seconds, used(emulator), code, len(emulator.service_names())))

        server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        refusing_url = f"http://127.0.0.1:{server.server_address[1]}"
        seconds, code, _ = run(suite, {**base, "NORTHFLANK_API_BASE_URL": refusing_url})
        rows.append(("wrong token (401)", seconds, Refusing.count, code, 0))
        server.shutdown()

        emulator.control.reset()
        emulator.control.fail_next_creates(count=100, status=401, message="token revoked")
        seconds, code, _ = run(suite, base)
        state = emulator.control.state()
        creates = 100 - state["faults"]["create"]["remaining"]
        rows.append(
            (
                f"token revoked mid-run (breaker; {creates} creates sent)",
                seconds,
                used(emulator),
                code,
                len(emulator.service_names()),
            )
        )

        emulator.control.reset()
        seconds, code, _ = run(suite, base)
        rows.append(
            ("correct configuration", seconds, used(emulator), code, len(emulator.service_names()))
        )
    finally:
        stop_remote_emulator(emulator)
    lines = [
        "| case (12 sandbox tests) | wall time | API requests | exit code | services left |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {case} | {s:.1f} s | {r} | {c} | {left} |" for case, s, r, c, left in rows]
    table = "\n".join(lines)
    print(table)
    RESULTS.write_text(f"# bench/reliability.py ({os.cpu_count()} cores)\n\n{table}\n")


if __name__ == "__main__":
    main()
