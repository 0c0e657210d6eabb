"""Unit tests of list paging (contract section 1.6)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_northflank.emulator.pagination import (
    DEFAULT_PER_PAGE,
    decode_cursor,
    encode_cursor,
    paginate,
)
from pytest_northflank.errors import ApiValidationError


def walk(items: list[int], per_page: int) -> list[list[int]]:
    """Follow cursors the way the JS client's .all() does: while a cursor is present."""
    pages = []
    query = {"per_page": str(per_page)}
    while True:
        page, pagination = paginate(items, query)
        pages.append(page)
        assert pagination["count"] == len(page)
        if "cursor" not in pagination:
            assert pagination["hasNextPage"] is False
            return pages
        assert pagination["hasNextPage"] is True
        query = {"per_page": str(per_page), "cursor": pagination["cursor"]}


@given(st.integers(min_value=0, max_value=450), st.integers(min_value=1, max_value=100))
def test_following_cursors_yields_every_item_once_and_ends(total: int, per_page: int) -> None:
    items = list(range(total))
    pages = walk(items, per_page)
    assert [item for page in pages for item in page] == items
    assert all(len(page) == per_page for page in pages[:-1])


def test_the_last_page_has_no_cursor_key_at_all() -> None:
    page, pagination = paginate(list(range(3)), {})
    assert page == [0, 1, 2]
    assert pagination == {"hasNextPage": False, "count": 3}


def test_default_page_size_and_page_numbers() -> None:
    items = list(range(120))
    first, pagination = paginate(items, {})
    assert first == items[:DEFAULT_PER_PAGE]
    assert pagination["hasNextPage"] is True
    third, pagination = paginate(items, {"page": "3"})
    assert third == items[100:]
    assert "cursor" not in pagination


@given(st.integers(min_value=0, max_value=10**9))
def test_cursors_are_url_safe_and_round_trip(offset: int) -> None:
    cursor = encode_cursor(offset)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert decode_cursor(cursor) == offset


@pytest.mark.parametrize(
    "cursor", ["nonsense!", "abc", encode_cursor(5)[:-2] + "@@", "b2Zmc2V0Oi0x"]
)
def test_a_foreign_cursor_is_a_400(cursor: str) -> None:
    with pytest.raises(ApiValidationError, match="Invalid cursor") as caught:
        paginate([1, 2, 3], {"cursor": cursor})
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("key", "value"), [("per_page", "0"), ("per_page", "101"), ("per_page", "x"), ("page", "0")]
)
def test_bad_page_parameters_are_a_400_naming_the_parameter(key: str, value: str) -> None:
    with pytest.raises(ApiValidationError, match=key):
        paginate([1], {key: value})
