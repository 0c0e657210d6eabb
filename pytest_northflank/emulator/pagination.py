"""Paging of list endpoints, by the rules both official clients need (contract section 1.6).

The last page carries ``hasNextPage: false`` and no ``cursor`` key at all (a ``null`` cursor
makes the JS client loop forever); other pages carry a cursor made of ``[A-Za-z0-9_-]`` only,
because the JS client does not URL-encode query values.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pytest_northflank.errors import ApiValidationError

T = TypeVar("T")

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
_CURSOR_PREFIX = "offset:"


def encode_cursor(offset: int) -> str:
    raw = f"{_CURSOR_PREFIX}{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset a cursor stands for; :class:`ApiValidationError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError(raw)
        offset = int(raw[len(_CURSOR_PREFIX) :])
        if offset < 0:
            raise ValueError(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiValidationError(
            f"Invalid cursor {cursor[:60]!r}: pass the cursor of a previous page unchanged",
            status=400,
            details=[{"path": ["cursor"], "message": "is not a cursor this API issued"}],
        ) from None
    return offset


def _positive_int(query: Mapping[str, str], key: str, default: int, maximum: int | None) -> int:
    text = query.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise ApiValidationError(
            f"Invalid query parameter {key}={text[:30]!r}: must be an integer >= 1{limit}",
            status=400,
            details=[{"path": [key], "message": f"must be an integer >= 1{limit}"}],
        )
    return value


def paginate(items: Sequence[T], query: Mapping[str, str]) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` for the ``per_page``/``page``/``cursor`` query, and the
    ``pagination`` object to send with it. ``cursor`` wins over ``page`` (both 1-based)."""
    per_page = _positive_int(query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    cursor = query.get("cursor")
    if cursor:
        offset = decode_cursor(cursor)
    else:
        offset = (_positive_int(query, "page", 1, None) - 1) * per_page
    page = list(items[offset : offset + per_page])
    pagination: dict[str, Any] = {"hasNextPage": False, "count": len(page)}
    if offset + per_page < len(items):
        pagination["hasNextPage"] = True
        pagination["cursor"] = encode_cursor(offset + per_page)
    return page, pagination
