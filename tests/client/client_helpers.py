"""Shared helpers for the client tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import secrets

PROJECT = "default-project"


def unique_name(prefix: str) -> str:
    """A valid, unique service or tag name starting with ``prefix``."""
    return f"{prefix}-{secrets.token_hex(3)}"
