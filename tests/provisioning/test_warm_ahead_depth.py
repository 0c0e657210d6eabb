"""Warm-ahead depth policies, fed measurements through a fake clock: no sandbox, no waiting."""

from __future__ import annotations

import pytest

from pytest_northflank.provisioning.depth import (
    AUTO_CAP,
    AUTO_START,
    AutoDepth,
    FixedDepth,
    depth_policy,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tests_taking(policy: AutoDepth, clock: FakeClock, *seconds: float) -> None:
    """Tests that held their sandbox for these times, one after the other."""
    for held in seconds:
        policy.note_given()
        clock.now += held
        policy.note_asked()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy(clock: FakeClock) -> AutoDepth:
    return AutoDepth(clock=clock)


def test_it_starts_at_the_cap_until_both_times_are_known(
    policy: AutoDepth, clock: FakeClock
) -> None:
    assert AUTO_START == AUTO_CAP
    assert policy.depth(remaining=100, may_grow=True) == AUTO_CAP
    policy.note_provisioning(0.5)  # provisioning known, test time not yet
    assert policy.depth(remaining=100, may_grow=True) == AUTO_CAP
    fresh = AutoDepth(clock=clock)
    tests_taking(fresh, clock, 30.0)  # test time known, provisioning not yet
    assert fresh.depth(remaining=100, may_grow=True) == AUTO_CAP
    assert fresh.depth(remaining=3, may_grow=True) == 3  # a short suite starts what it needs


def test_slow_tests_bring_it_down_from_the_start(policy: AutoDepth, clock: FakeClock) -> None:
    assert policy.depth(remaining=100, may_grow=True) == AUTO_CAP
    policy.note_provisioning(2.0)
    tests_taking(policy, clock, 10.0)
    assert policy.depth(remaining=100, may_grow=True) == 1
    assert policy.reached == AUTO_CAP


def test_depth_is_provisioning_time_over_test_time_rounded_up(
    policy: AutoDepth, clock: FakeClock
) -> None:
    policy.note_provisioning(2.0)
    tests_taking(policy, clock, 0.5)
    assert policy.depth(remaining=100, may_grow=True) == 4
    policy.note_provisioning(2.0)
    policy.note_provisioning(2.6)  # median of 2.0, 2.0, 2.6: 2.0
    tests_taking(policy, clock, 0.6, 0.6)  # median of 0.5, 0.6, 0.6: 0.6 -> 3.33
    assert policy.depth(remaining=100, may_grow=True) == 4


@pytest.mark.parametrize(
    ("provisioning", "test_time", "expected"),
    [
        (30.0, 0.1, AUTO_CAP),  # 300 wanted: capped at 8 per process
        (2.0, 0.0, AUTO_CAP),  # tests that take no time at all
        (2.0, 10.0, 1),  # slow tests: one ahead still spares each its wait
        (2.0, 2.0, 1),
        (2.0, 1.9, 2),
        (7.0, 1.0, 7),
    ],
)
def test_depth_stays_between_one_and_the_cap(
    policy: AutoDepth, clock: FakeClock, provisioning: float, test_time: float, expected: int
) -> None:
    policy.note_provisioning(provisioning)
    tests_taking(policy, clock, test_time)
    assert policy.depth(remaining=100, may_grow=True) == expected


def test_one_outlier_does_not_swing_it(policy: AutoDepth, clock: FakeClock) -> None:
    for _ in range(4):
        policy.note_provisioning(4.0)
    tests_taking(policy, clock, 1.0, 1.0, 1.0, 60.0)  # one test that ran a minute
    policy.note_provisioning(200.0)  # one deploy that hung
    assert policy.depth(remaining=100, may_grow=True) == 4


def test_recent_measurements_win(policy: AutoDepth, clock: FakeClock) -> None:
    policy.note_provisioning(4.0)
    tests_taking(policy, clock, *[4.0] * 8)
    assert policy.depth(remaining=100, may_grow=True) == 1
    # The tests got quick: after a window's worth of them, the old ones no longer count.
    tests_taking(policy, clock, *[0.5] * 8)
    assert policy.depth(remaining=100, may_grow=True) == 8


def test_waiting_for_a_sandbox_is_not_test_time(policy: AutoDepth, clock: FakeClock) -> None:
    policy.note_provisioning(3.0)
    # A test asks, then waits 3 s for its sandbox: only given -> next ask counts.
    policy.note_asked()
    clock.now += 3.0
    policy.note_given()
    clock.now += 0.5
    policy.note_asked()
    clock.now += 3.0  # the next wait (no note_given yet) counts for nothing either
    policy.note_asked()
    assert policy.depth(remaining=100, may_grow=True) == 6


def test_never_more_than_the_tests_still_to_come(policy: AutoDepth, clock: FakeClock) -> None:
    policy.note_provisioning(30.0)
    tests_taking(policy, clock, 0.1)
    assert policy.depth(remaining=3, may_grow=True) == 3
    assert policy.depth(remaining=0, may_grow=True) == 0
    assert policy.reached == 3


def test_a_low_request_budget_freezes_growth_but_not_shrinking(
    clock: FakeClock,
) -> None:
    policy = AutoDepth(start=2, clock=clock)
    policy.note_provisioning(30.0)
    tests_taking(policy, clock, 0.1)  # wants 8
    assert policy.depth(remaining=100, may_grow=False) == 2  # stays at the start depth
    assert policy.reached == 2
    assert policy.depth(remaining=100, may_grow=True) == 8  # the budget recovered
    tests_taking(policy, clock, *[20.0] * 8)  # slow tests now: wants 2
    assert policy.depth(remaining=100, may_grow=False) == 2
    tests_taking(policy, clock, *[0.1] * 8)  # quick again, but the budget is low
    assert policy.depth(remaining=100, may_grow=False) == 2
    assert policy.reached == 8


def test_fixed_depth_ignores_what_it_is_told() -> None:
    fixed = FixedDepth(3)
    fixed.note_provisioning(100.0)
    fixed.note_given()
    fixed.note_asked()
    assert fixed.depth(remaining=1, may_grow=False) == 3  # the shelf never makes too many
    assert (fixed.mode, fixed.reached) == ("fixed", 3)


def test_the_setting_picks_the_policy() -> None:
    assert isinstance(depth_policy("auto"), AutoDepth)
    assert depth_policy("auto").mode == "auto"
    chosen = depth_policy(5)
    assert isinstance(chosen, FixedDepth)
    assert chosen.reached == 5
