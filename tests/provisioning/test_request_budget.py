"""Spending API requests carefully, at the seams, against a real emulator: one poller for every
sandbox a process waits for (a listing instead of one request each), the run's shared
rate-limit figures holding polls back, and the warm-ahead pool's shelf."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.client import NorthflankClient, RateLimitStatus
from pytest_northflank.config.settings import SandboxOptions, resolve
from pytest_northflank.errors import NotFoundError
from pytest_northflank.provisioning.budget import FILE_NAME, SharedListing, SharedQuota
from pytest_northflank.provisioning.provisioner import Provisioner
from pytest_northflank.provisioning.readiness import ReadinessBoard
from pytest_northflank.provisioning.warm_ahead import Shelf, WarmPool
from pytest_northflank.run.ledger import Ledger
from pytest_northflank.run.ownership import Ownership
from pytest_northflank.run.stats import RunStats

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"


def provisioner(
    client: NorthflankClient,
    *,
    worker: str = "gw0",
    ledger: Ledger | None = None,
    quota: SharedQuota | None = None,
) -> Provisioner:
    settings = resolve(cli={"backend": "emulator"}, ini={}, environ={})
    return Provisioner(
        client,
        settings,
        RunStats(),
        owner=Ownership("abc123", worker),
        project_id=PROJECT,
        ledger=ledger,
        ledger_owner=f"{worker}:1",
        quota=quota,
    )


def create(maker: Provisioner, hint: str) -> tuple[str, str]:
    service = maker.create(maker.spec_for(maker.settings.sandbox_options(), hint))
    return service.id, service.name


def watch(board: ReadinessBoard, service: tuple[str, str], timeout: float = 60.0) -> None:
    now = time.monotonic()
    board.watch(service[0], service[1], status=None, created_at=now, deadline=now + timeout)


# ------------------------------------------------------------------------------- readiness


def test_sandboxes_waiting_together_share_one_listing(
    emulator_clean: EmulatorServer, client: NorthflankClient
) -> None:
    emulator_clean.control.set_ready(delay=60.0)
    maker = provisioner(client)
    services = [create(maker, f"together-{n}") for n in range(4)]
    board = ReadinessBoard(client, PROJECT)
    for service in services:
        watch(board, service)
    deadline = time.monotonic() + 30
    while board.listings < 3:
        if time.monotonic() >= deadline:
            pytest.fail("the board stopped polling")
        time.sleep(0.05)
    board.close()
    # Three polls, each one listing answering for all four: no request per sandbox.
    assert board.gets == 0
    assert all(board.wait(service_id, until=0).status == "PENDING" for service_id, _ in services)


def test_one_sandbox_alone_is_asked_for_by_id(
    emulator_clean: EmulatorServer, client: NorthflankClient
) -> None:
    emulator_clean.control.set_ready(delay=0.5)
    maker = provisioner(client)
    service = create(maker, "alone")
    board = ReadinessBoard(client, PROJECT)
    watch(board, service)
    assert board.wait(service[0], until=time.monotonic() + 60).status == "COMPLETED"
    board.close()
    assert board.listings == 0
    assert board.gets >= 1


def test_later_waits_start_polling_near_the_usual_provisioning_time(
    emulator_clean: EmulatorServer, client: NorthflankClient
) -> None:
    emulator_clean.control.set_ready(delay=3.0)
    maker = provisioner(client)
    board = ReadinessBoard(client, PROJECT)
    polls = []
    for n in range(2):
        before = board.gets
        service = create(maker, f"learn-{n}")
        watch(board, service)
        assert board.wait(service[0], until=time.monotonic() + 60).status == "COMPLETED"
        board.forget(service[0])
        polls.append(board.gets - before)
    board.close()
    estimate = board.estimate()
    assert estimate is not None
    assert estimate >= 2.0
    # The first wait backs off from 0.2 s (several polls); the second waits until about when
    # the first was ready, then looks closely.
    assert polls[1] < polls[0]
    assert polls[1] <= 3


def test_a_service_deleted_meanwhile_is_reported(
    emulator_clean: EmulatorServer, client: NorthflankClient
) -> None:
    emulator_clean.control.set_ready(delay=30.0)
    maker = provisioner(client)
    service = create(maker, "vanishing")
    board = ReadinessBoard(client, PROJECT)
    watch(board, service)
    emulator_clean.control.delete_service(PROJECT, service[0])
    seen = board.wait(service[0], until=time.monotonic() + 60)
    board.close()
    assert isinstance(seen.error, NotFoundError)


def test_workers_waiting_together_share_their_listings(
    emulator_clean: EmulatorServer, client: NorthflankClient, tmp_path: Path
) -> None:
    emulator_clean.control.set_ready(delay=1.0)
    maker = provisioner(client)
    first_pair = [create(maker, f"first-{n}") for n in range(2)]
    second_pair = [create(maker, f"second-{n}") for n in range(2)]
    shared = SharedListing(tmp_path / "listing.json", PROJECT)
    # Two processes' boards; the first lists before the second is due to.
    first = ReadinessBoard(client, PROJECT, shared_listing=shared)
    for service in first_pair:
        watch(first, service)
    deadline = time.monotonic() + 30
    while first.listings == 0:
        if time.monotonic() >= deadline:
            pytest.fail("the first board never listed")
        time.sleep(0.01)
    second = ReadinessBoard(client, PROJECT, shared_listing=shared)
    for service in second_pair:
        watch(second, service)
    for board, pair in ((first, first_pair), (second, second_pair)):
        for service_id, _ in pair:
            assert board.wait(service_id, until=time.monotonic() + 60).status == "COMPLETED"
        board.close()
    # The second board's first poll used the first one's listing (it covered its services).
    assert second.borrowed >= 1


def test_a_shared_listing_missing_a_service_is_not_used(
    emulator_clean: EmulatorServer, client: NorthflankClient, tmp_path: Path
) -> None:
    maker = provisioner(client)
    pair = [create(maker, f"missing-{n}") for n in range(2)]
    shared = SharedListing(tmp_path / "listing.json", PROJECT)
    shared.publish(time.time(), {pair[0][0]: ("COMPLETED", "DEPLOYING")})
    board = ReadinessBoard(client, PROJECT, shared_listing=shared)
    for service in pair:
        watch(board, service)
    for service_id, _ in pair:
        assert board.wait(service_id, until=time.monotonic() + 60).status == "COMPLETED"
    board.close()
    assert (board.borrowed, board.listings) == (0, 1)


def _publish(quota: SharedQuota, remaining: int, reset: float) -> None:
    quota.publish(
        RateLimitStatus(
            limit=1000,
            remaining=remaining,
            reset_after=reset,
            observed_at=datetime.now(timezone.utc),
        )
    )


def test_low_shared_figures_hold_polls_back_until_the_quota_recovers(
    emulator_clean: EmulatorServer, client: NorthflankClient, tmp_path: Path
) -> None:
    emulator_clean.control.set_ready(delay=0.5)
    emulator_clean.control.set_rate_limit(12, window_seconds=100.0)
    quota = SharedQuota(tmp_path / FILE_NAME, processes=2)
    maker = provisioner(client, quota=quota)
    service = create(maker, "held-back")
    # 11 requests left for the next 100 s, shared by two processes: this one may poll about
    # once every 2 * 100 / 11 = 18 s.
    figures = quota.figures()
    assert figures is not None
    assert figures.remaining == 11
    board = ReadinessBoard(client, PROJECT, quota=quota)
    watch(board, service)
    early = board.wait(service[0], until=time.monotonic() + 3.0)
    assert early.status != "COMPLETED"  # ready after 0.5 s, but not polled again since
    assert board.gets == 1
    # Another process of the run sees the quota back (a new window): polling resumes.
    emulator_clean.control.set_rate_limit(None)
    _publish(quota, 900, 3000.0)
    late = board.wait(service[0], until=time.monotonic() + 60)
    board.close()
    assert late.status == "COMPLETED"


def test_the_provisioner_shares_its_figures_with_the_run(
    emulator_clean: EmulatorServer, client: NorthflankClient, tmp_path: Path
) -> None:
    emulator_clean.control.set_rate_limit(500)
    quota = SharedQuota(tmp_path / FILE_NAME)
    maker = provisioner(client, quota=quota)
    sandbox = maker.provision(maker.settings.sandbox_options(), hint="shares")
    maker.release(sandbox)
    maker.release_leftovers()
    figures = quota.figures()
    assert figures is not None
    assert figures.limit == 500
    assert figures.remaining == 500 - client.request_count


# ------------------------------------------------------------------------------------ pool


def options_like(maker: Provisioner, **changes: object) -> SandboxOptions:
    return maker.settings.sandbox_options().model_copy(update=changes)


def wait_for_shelf(shelf: Shelf, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(shelf_items(shelf)) < count:
        if time.monotonic() >= deadline:
            pytest.fail("the pool never shelved its sandboxes")
        time.sleep(0.05)


def shelf_items(shelf: Shelf) -> list[dict[str, Any]]:
    try:
        return list(json.loads(shelf.path.read_text())["shelf"])
    except FileNotFoundError:
        return []


def test_the_pool_makes_ahead_hands_over_and_deletes_the_rest(
    client: NorthflankClient, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    maker = provisioner(client, ledger=ledger)
    plain = options_like(maker)
    shelf = Shelf(tmp_path / "warm-ahead.json")
    pool = WarmPool(maker, [plain] * 4, shelf, depth=2, owner="gw0:1")
    maker.pool = pool
    assert pool.take(plain) is None  # the first test: nothing made yet, it makes its own
    pool.refill()  # (once its create is sent) two start now
    wait_for_shelf(shelf, 2)
    # The ledger knew them before their create requests returned.
    assert {e.name for e in ledger.alive()} == {item["name"] for item in shelf_items(shelf)}
    handed = pool.take(plain)
    assert handed is not None
    assert handed.name.endswith("-ahead")
    assert handed.maker == "gw0:1"
    wait_for_shelf(shelf, 2)  # taking one started the next (the fourth test's)
    # The session ends: what was made ahead and not taken is deleted (the test's own one,
    # taken straight from the pool here, stays for its test to release).
    maker.release_leftovers()
    assert pool.made == 3  # two at first, one more when a test took one
    assert maker.stats.made_ahead_unused == 2
    assert [e.name for e in ledger.alive()] == [handed.name]
    assert [s.name for s in client.list_services(PROJECT)] == [handed.name]
    client.delete_service(PROJECT, handed.service_id)


def test_a_spec_gets_a_sandbox_of_its_own_kind(client: NorthflankClient, tmp_path: Path) -> None:
    maker = provisioner(client)
    plain, alpine = options_like(maker), options_like(maker, image="alpine:3.20")
    shelf = Shelf(tmp_path / "warm-ahead.json")
    pool = WarmPool(maker, [plain, alpine, plain, alpine], shelf, depth=3, owner="gw0:1")
    maker.pool = pool
    assert pool.take(plain) is None
    pool.refill()
    wait_for_shelf(shelf, 3)
    handed = pool.take(alpine)
    assert handed is not None
    assert client.get_service(PROJECT, handed.service_id).image == "alpine:3.20"
    client.delete_service(PROJECT, handed.service_id)
    # Nothing planned asks for busybox: the pool has none.
    assert pool.take(options_like(maker, image="busybox:1")) is None
    maker.release_leftovers()
    assert [s.name for s in client.list_services(PROJECT)] == []


def test_a_low_quota_stops_making_ahead(client: NorthflankClient, tmp_path: Path) -> None:
    maker = provisioner(client)
    plain = options_like(maker)
    pool = WarmPool(
        maker,
        [plain] * 3,
        Shelf(tmp_path / "warm-ahead.json"),
        depth=2,
        owner="gw0:1",
        allowed=lambda: False,
    )
    maker.pool = pool
    assert pool.take(plain) is None
    pool.refill()
    maker.release_leftovers()
    assert pool.made == 0
    assert client.list_services(PROJECT) == []


def test_a_failed_create_ahead_leaves_the_test_to_make_its_own(
    emulator_clean: EmulatorServer, client: NorthflankClient, tmp_path: Path
) -> None:
    # A refusal that is not fatal to the run (a 403, 401 or 404 would trip the breaker).
    emulator_clean.control.fail_next_creates(1, status=422, message="not this time")
    maker = provisioner(client)
    plain = options_like(maker)
    pool = WarmPool(maker, [plain] * 3, Shelf(tmp_path / "warm-ahead.json"), depth=1, owner="w:1")
    maker.pool = pool
    assert pool.take(plain) is None
    pool.refill()  # starts one ahead, whose create is refused
    sandbox = maker.provision(plain, hint="own", planned=True)
    assert not sandbox.name.endswith("-ahead")  # the test made its own
    # The next one ahead may have been sent alongside the refused one; none after the refusal.
    assert pool.made <= 1
    maker.release(sandbox)
    maker.release_leftovers()
    assert client.list_services(PROJECT) == []


def test_workers_take_each_others_sandboxes_and_the_ledger_follows(
    client: NorthflankClient, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    shelf = Shelf(tmp_path / "warm-ahead.json")
    first = provisioner(client, worker="gw0", ledger=ledger)
    second = provisioner(client, worker="gw1", ledger=ledger)
    plain = options_like(first)
    # Both workers collected the same four tests; the run makes what they need between them.
    first.pool = WarmPool(first, [plain] * 4, shelf, depth=3, owner="gw0:1")
    second.pool = WarmPool(second, [plain] * 4, shelf, depth=3, owner="gw1:1")
    assert first.pool.take(plain) is None  # gw0's first test, which makes its own
    first.pool.refill()  # gw0 starts the other three
    wait_for_shelf(shelf, 3)
    sandbox = second.provision(plain, hint="test-b", planned=True)
    assert sandbox.name.startswith("nft-abc123-w0-")  # made by gw0
    (entry,) = [e for e in ledger.alive() if e.name == sandbox.name]
    assert (entry.worker_id, entry.owner) == ("gw1", "gw1:1")
    assert second.stats.made_ahead_used == 1
    # The run needs four; gw0 made three ahead, so gw1 made none.
    assert (first.pool.made, second.pool.made) == (3, 0)
    second.release(sandbox)
    second.release_leftovers()
    first.release_leftovers()
    assert client.list_services(PROJECT) == []
    assert ledger.alive() == []
