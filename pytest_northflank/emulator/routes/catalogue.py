"""Identity and catalogue routes: login, auth, plans, regions (contract sections 11, 15).

``GET /v1/login`` is what ``northflank login`` checks a token with: any 2xx means valid.
The gate in front of ``/v1`` already refused a wrong token with 401, so reaching the route
means the token is good. These routes have no team form (no client sends one).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pytest_northflank.emulator.catalogue import cloud_provider_views, plan_views, region_views
from pytest_northflank.emulator.context import context_of, ok
from pytest_northflank.emulator.pagination import paginate
from pytest_northflank.emulator.state import REGION, iso

TEAM_ID = "emulator"


def identity(created_at: str) -> dict[str, Any]:
    """The token's identity (``GET /v1/auth``); never the token itself."""
    return {
        "id": "emulator-api-token",
        "name": "Emulator API token",
        "entityType": "team",
        "entityId": TEAM_ID,
        "entityUid": TEAM_ID,
        "tokenKind": "api",
        "createdAt": created_at,
        "expiresAt": None,
        "scope": "role",
        "permissions": {"projectScope": [], "teamScope": []},
    }


async def login(request: Request) -> Response:
    ctx = context_of(request)
    return ok(identity(_created_at(request)) | {"apiVersion": ctx.version})


async def auth(request: Request) -> Response:
    return ok(identity(_created_at(request)))


def _created_at(request: Request) -> str:
    projects = list(context_of(request).state.projects.values())
    return iso(min(p.created_at for p in projects)) if projects else "1970-01-01T00:00:00.000Z"


async def list_plans(request: Request) -> Response:
    return ok({"plans": plan_views()})


async def list_regions(request: Request) -> Response:
    return ok({"regions": region_views(REGION)})


async def list_cloud_regions(request: Request) -> Response:
    page, pagination = paginate(cloud_provider_views(REGION), request.query_params)
    return ok({"providers": page}, pagination)


ROUTES: list[BaseRoute] = [
    Route("/v1/login", login, methods=["GET"]),
    Route("/v1/auth", auth, methods=["GET"]),
    Route("/v1/plans", list_plans, methods=["GET"]),
    Route("/v1/regions", list_regions, methods=["GET"]),
    Route("/v1/cloud-providers/regions", list_cloud_regions, methods=["GET"]),
]
