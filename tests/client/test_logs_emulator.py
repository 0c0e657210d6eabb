"""Service logs against the emulator: a range fetch and a live tail."""

from __future__ import annotations

import time
from collections.abc import Callable

from client_helpers import PROJECT

from pytest_northflank.client import NorthflankClient, Service

TICKER = (
    "echo first line; echo to stderr >&2; "
    "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"
)


def test_fetch_logs_returns_recent_lines_oldest_first(
    nf: NorthflankClient, service_factory: Callable[..., Service]
) -> None:
    service = service_factory("c-logs", command=f"sh -c '{TICKER}'")
    for _ in range(100):
        lines = nf.fetch_logs(PROJECT, service.id, line_limit=1000)
        if sum(line.log.startswith("tick") for line in lines) >= 3:
            break
        time.sleep(0.05)
    texts = [line.log for line in lines]
    # stdout and stderr are separate pipes, so only the stdout order is fixed.
    assert next(t for t in texts if t != "to stderr") == "first line"
    assert "to stderr" in texts
    ticks = [int(t.split()[1]) for t in texts if t.startswith("tick")]
    assert ticks == sorted(ticks)
    assert all(line.ts is not None for line in lines)
    assert all(line.container_id for line in lines)
    last_two = nf.fetch_logs(PROJECT, service.id, line_limit=2)
    assert len(last_two) == 2
    assert last_two[0].ts is not None
    assert last_two[1].ts is not None
    assert last_two[0].ts <= last_two[1].ts
    only = nf.fetch_logs(PROJECT, service.id, text_includes="stderr")
    assert [line.log for line in only] == ["to stderr"]


def test_tail_logs_follows_new_lines(
    nf: NorthflankClient, service_factory: Callable[..., Service]
) -> None:
    service = service_factory("c-tail", command=f"sh -c '{TICKER}'")
    with nf.tail_logs(PROJECT, service.id, recv_timeout=10) as tail:
        seen = []
        for line in tail:
            if line.log.startswith("tick"):
                seen.append(int(line.log.split()[1]))
            if len(seen) == 3:
                break
    assert seen == list(range(seen[0], seen[0] + 3))


def test_tail_ends_after_recv_timeout_without_lines(nf: NorthflankClient, service: Service) -> None:
    with nf.tail_logs(PROJECT, service.id, recv_timeout=0.5) as tail:
        assert list(tail) == []
