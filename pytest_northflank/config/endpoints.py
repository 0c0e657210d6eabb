"""Where things are: Northflank's own API host and dashboard, and a service's address for people."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pytest_northflank.config.settings import Settings

DASHBOARD = "https://app.northflank.com"
# The API host the dashboard belongs to (any other URL is an emulator or a proxy).
NORTHFLANK_API_HOST = "api.northflank.com"


def is_northflank_api(base_url: str) -> bool:
    """Whether ``base_url`` is Northflank's own API (not an emulator or a proxy): where its
    dashboard and CLI apply."""
    return urlsplit(base_url).hostname == NORTHFLANK_API_HOST


def dashboard_url(settings: Settings, base_url: str, project_id: str, service_id: str) -> str:
    """Where a person looks at a service: the Northflank dashboard when the API is Northflank's,
    otherwise (the emulator, a standalone one included) the service's address in the API."""
    if not is_northflank_api(base_url):
        scope = f"/v1/teams/{settings.team}" if settings.team else "/v1"
        return f"{base_url.rstrip('/')}{scope}/projects/{project_id}/services/{service_id}"
    team = settings.team or "personal"
    return f"{DASHBOARD}/t/{team}/project/{project_id}/services/{service_id}"
