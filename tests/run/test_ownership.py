from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_northflank.run.ownership import (
    DESCRIPTION_MAX,
    MAX_NAME_LENGTH,
    SERVICE_NAME_RE,
    Ownership,
    kept_description,
    new_run_id,
    parse_description,
    worker_tag,
)

CREATED = datetime(2026, 11, 28, 20, 30, tzinfo=timezone.utc)


def test_run_ids_are_short_name_safe_and_distinct() -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    for run_id in ids:
        assert len(run_id) == 6
        assert run_id[0].isalpha()
        assert run_id.isalnum()


@pytest.mark.parametrize(("worker", "tag"), [("gw0", "w0"), ("gw12", "w12"), ("master", "m")])
def test_worker_tag(worker: str, tag: str) -> None:
    assert worker_tag(worker) == tag


@given(hint=st.text(max_size=300), counter=st.integers(min_value=0, max_value=10**6))
def test_any_test_id_gives_a_valid_service_name(hint: str, counter: int) -> None:
    name = Ownership("abc123", "gw3").service_name(counter, hint)
    assert SERVICE_NAME_RE.match(name)
    assert len(name) <= MAX_NAME_LENGTH
    assert name.startswith(f"nft-abc123-w3-{counter}")


def test_service_name_keeps_a_readable_test_hint() -> None:
    name = Ownership("abc123", "gw0").service_name(7, "test_upload[Ünïcode dir-2]")
    assert name == "nft-abc123-w0-7-test-upload-unicode-dir-2"


def test_description_round_trips_ownership() -> None:
    owner = Ownership("abc123", "gw1", deadline=CREATED + timedelta(hours=2))
    name = owner.service_name(1, "t")
    parsed = parse_description(name, owner.description(CREATED))
    assert parsed is not None
    assert (parsed.run_id, parsed.worker_id) == ("abc123", "gw1")
    assert parsed.created == CREATED
    assert parsed.deadline == CREATED + timedelta(hours=2)
    assert owner.owns(name)
    assert not Ownership("zzz999", "gw1").owns(name)


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("my-api", "pytest-northflank run=abc123 worker=gw0 created=2026-11-28T20:30:00Z"),
        ("nft-abc123-m-1", "hand made"),
        ("nft-abc123-m-1", None),
        ("nft-abc123-m-1", "pytest-northflank run=other1 worker=gw0"),
    ],
)
def test_services_not_created_by_this_tool_are_not_ours(name: str, description: str | None) -> None:
    assert parse_description(name, description) is None


def test_a_kept_note_fits_the_description_limit_and_reads_back() -> None:
    created = datetime(2026, 1, 5, 17, 0, tzinfo=timezone.utc)
    owner = Ownership("k3x9qa", "gw3", deadline=created)
    base = owner.description(created)
    long_test = "tests/" + "deep/" * 40 + "test_db.py::test_upgrade[unicode ü and spaces]"
    text = kept_description(base, "failed", long_test)
    assert len(text) <= DESCRIPTION_MAX
    assert text.startswith(base + " kept=failed test=...")
    parsed = parse_description(owner.service_name(1, "x"), text)
    assert parsed is not None
    assert (parsed.kept, parsed.run_id, parsed.deadline) == ("failed", "k3x9qa", created)
    assert parsed.kept_by_test is not None
    assert parsed.kept_by_test.endswith("test_db.py::test_upgrade[unicode___and_spaces]")
    # Keeping it again replaces the note instead of adding a second one.
    again = kept_description(text, "always", "t.py::test_b")
    assert again == base + " kept=always test=t.py::test_b"
