"""The run's shared rate-limit figures (provisioning/budget.py): what is kept, and the pace."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pytest_northflank.client import RateLimitStatus
from pytest_northflank.provisioning.budget import FILE_NAME, SharedQuota

NOW = 1_800_000_000.0


def status(
    remaining: int, *, limit: int = 1000, reset: float = 600.0, at: float = NOW
) -> RateLimitStatus:
    return RateLimitStatus(
        limit=limit,
        remaining=remaining,
        reset_after=reset,
        observed_at=datetime.fromtimestamp(at, tz=timezone.utc),
    )


def quota(tmp_path: Path, *, processes: int = 1, now: float = NOW) -> SharedQuota:
    """The run's figures as one process sees them at the wall-clock time ``now``."""
    return SharedQuota(tmp_path / "run" / FILE_NAME, processes=processes, clock=lambda: now)


def test_nothing_shared_yet_means_no_pacing(tmp_path: Path) -> None:
    shared = quota(tmp_path)
    assert shared.figures() is None
    assert (shared.spacing(), shared.is_low()) == (0.0, False)
    shared.publish(None)  # a response without figures
    assert shared.figures() is None


def test_plenty_left_means_no_pacing(tmp_path: Path) -> None:
    shared = quota(tmp_path)
    shared.publish(status(900))
    assert (shared.spacing(), shared.is_low()) == (0.0, False)


def test_low_figures_spread_each_process_share_over_the_window(tmp_path: Path) -> None:
    shared = quota(tmp_path, processes=4)
    shared.publish(status(100, reset=600.0))  # under a quarter of 1000 left
    assert shared.is_low()
    assert shared.spacing() == pytest.approx(4 * 600 / 100)


def test_a_small_quota_is_low_from_the_start(tmp_path: Path) -> None:
    shared = quota(tmp_path)
    shared.publish(status(45, limit=60, reset=3600.0))
    assert shared.is_low()
    assert shared.spacing() == pytest.approx(3600 / 45)


def test_nothing_left_waits_for_the_reset_then_not_at_all(tmp_path: Path) -> None:
    quota(tmp_path).publish(status(0, reset=30.0))
    assert quota(tmp_path, now=NOW + 10).spacing() == pytest.approx(20.0)
    after_reset = quota(tmp_path, now=NOW + 31)
    assert (after_reset.spacing(), after_reset.is_low()) == (0.0, False)


def test_every_process_reads_the_newest_figures(tmp_path: Path) -> None:
    first, second = quota(tmp_path), quota(tmp_path)
    first.publish(status(500, at=NOW))
    second.publish(status(40, at=NOW + 1))
    first.publish(status(480, at=NOW - 5))  # older than what the file holds: ignored
    figures = first.figures()
    assert figures is not None
    assert (figures.remaining, figures.limit) == (40, 1000)
    assert figures.reset_at == pytest.approx(NOW + 1 + 600)
    assert first.is_low()
    assert second.is_low()


def test_the_figures_cross_process_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "run" / FILE_NAME
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from pathlib import Path\n"
        "from pytest_northflank.provisioning.budget import SharedQuota\n"
        "from pytest_northflank.client import RateLimitStatus\n"
        "SharedQuota(Path(sys.argv[1])).publish(RateLimitStatus(limit=1000, remaining=7,"
        " reset_after=100.0, observed_at=datetime.now(timezone.utc)))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    shared = SharedQuota(path, processes=2)
    figures = shared.figures()
    assert figures is not None
    assert figures.remaining == 7
    assert shared.spacing() == pytest.approx(2 * 100 / 7, rel=0.1)


def test_a_damaged_file_means_no_pacing(tmp_path: Path) -> None:
    shared = quota(tmp_path)
    shared.path.parent.mkdir(parents=True)
    shared.path.write_text("{not json")
    assert (shared.figures(), shared.spacing()) == (None, 0.0)
    shared.publish(status(10))
    assert shared.is_low()
