"""The environment variables that could point a pytester run somewhere else than where the
test says: runs inherit the environment, so tests that start them clear these first
(the ``clean_environment`` fixture of tests/conftest.py)."""

from __future__ import annotations

NF_VARIABLES = (
    "NORTHFLANK_API_TOKEN",
    "NF_API_TOKEN",
    "NORTHFLANK_PROJECT_ID",
    "NORTHFLANK_TEAM_ID",
    "NORTHFLANK_API_BASE_URL",
    "PYTEST_ADDOPTS",
)
