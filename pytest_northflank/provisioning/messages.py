"""User-facing texts for what goes wrong while provisioning, as plain functions.

API errors that real accounts run into first (``northflank-api.md`` section 10) are turned here
into messages that say what to do; a few of them look things up (tags, projects, the service's
logs) to name the fix.
"""

from __future__ import annotations

import contextlib

from pytest_northflank.client import NorthflankClient
from pytest_northflank.client.logs import chronological
from pytest_northflank.client.models import DeploymentServiceSpec, Service
from pytest_northflank.config.settings import Settings
from pytest_northflank.errors import (
    ApiError,
    ApiValidationError,
    AuthenticationError,
    ConfigError,
    NorthflankError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from pytest_northflank.redaction import mask, secret_values

LOG_LINES_IN_ERRORS = 20

# The API role permission each call needs (names from the official Python client).
PERMISSIONS = {
    "create": "Project > Services > General > Create",
    "read": "Project > Services > General > Read",
    "delete": "Project > Services > General > Delete",
    "projects": "Project > Projects > Manage > Read",
    "tags": "Account > Platform > Tags > Read",
}


# Refusals of a create that mean the API made nothing, and that the same spec would meet again:
# a body it rejects (a plan that does not exist, the spot-only rule: 400/422), a token it
# rejects or that lacks a permission, a project that does not exist.
RECURRING_REFUSALS = (ApiValidationError, AuthenticationError, PermissionDeniedError, NotFoundError)


def create_was_refused(error: ApiError) -> bool:
    """Whether the API answered a create with an error that means no service was made: a
    recurring refusal, or 429 (the quota was spent before the request was looked at). A 409 is
    not one (a service of that name exists), nor a 5xx (the create may have happened)."""
    return isinstance(error, (*RECURRING_REFUSALS, RateLimitedError))


def refusal_recurs(error: NorthflankError) -> bool:
    """Whether a failed create would fail the same way for every sandbox of the same spec (not
    a transient failure: 5xx, transport, 429). ``ConfigError``: the spec itself is invalid."""
    return isinstance(error, (ConfigError, *RECURRING_REFUSALS))


def not_ready_text(client: NorthflankClient, project_id: str, service: Service, what: str) -> str:
    """Why a sandbox did not become ready: its status, reason, message and last log lines."""
    status = service.deployment_status or "none"
    reason = service.deployment_reason or "none given"
    message = service.deployment_message
    if message is None:
        # A status seen in a listing has no message: ask for the service itself.
        with contextlib.suppress(NorthflankError):
            message = client.get_service(project_id, service.id).deployment_message
    if message:
        reason += f": {message}"
    text = (
        f"sandbox {service.name} (service {service.id} in project {project_id}) did not "
        f"become ready: {what}; last status {status}, reason {reason}."
    )
    return text + _log_tail(client, project_id, service.id)


def _log_tail(client: NorthflankClient, project_id: str, service_id: str) -> str:
    try:
        lines = client.fetch_logs(project_id, service_id, line_limit=LOG_LINES_IN_ERRORS)
    except NorthflankError as error:
        return f"\n(its logs could not be read: {error})"
    if not lines:
        return "\nIt wrote no log lines."
    body = "\n".join(f"  {line.log}" for line in chronological(lines)[-LOG_LINES_IN_ERRORS:])
    return f"\nLast log lines:\n{body}"


def explain_create_error(
    client: NorthflankClient,
    settings: Settings,
    project_id: str,
    error: ApiError,
    spec: DeploymentServiceSpec,
) -> str:
    """A refused create, said so that the user knows what to change."""
    what = f"creating sandbox {spec.name} in project {project_id}"
    message = (error.api_message or "").lower()
    if "tag" in message and ("not found" in message or "does not exist" in message):
        return _unknown_tag_text(client, error, spec)
    if "tagged as spot" in message or "spot nodes" in message:
        return _spot_text(client, error, spec)
    if isinstance(error, NotFoundError):
        return unknown_project_text(client, settings, project_id, error)
    if isinstance(error, ApiValidationError):
        # The error text already summarises the API's details.
        return mask(
            f"Northflank refused {what}: {error}. The sandbox was: image {spec.image} "
            f"(from {_origin(settings, 'image', spec.image)}), plan {spec.plan} (from "
            f"{_origin(settings, 'plan', spec.plan)}), tags {list(spec.tags) or 'none'}.",
            secret_values(spec.env),
        )
    return explain_api_error(settings, error, "create", what)


def _origin(settings: Settings, name: str, value: object) -> str:
    """Where a sandbox option came from: the settings, or the test's own request."""
    if getattr(settings, name) == value:
        return settings.source_of(name)
    return "the test's nf_sandbox marker or nf_sandbox_factory call"


def explain_api_error(settings: Settings, error: ApiError, permission: str, what: str) -> str:
    """An API error met doing ``what``: the permission, token or quota behind it."""
    if isinstance(error, PermissionDeniedError):
        return (
            f"the API token may not do this ({what}): 403 {error.api_message}\n"
            f"Its API role needs the permission {PERMISSIONS[permission]}: add it to the "
            "token's API role (or template) in the dashboard, or use a token that has it."
        )
    if isinstance(error, AuthenticationError):
        return (
            f"the API rejected the token from {settings.token_source or 'the emulator'} "
            f"({what}): 401 {error.api_message}\nCheck that it is valid and not expired."
        )
    if isinstance(error, RateLimitedError):
        reset = (
            f"; the quota resets in {error.reset_after:.0f} s"
            if error.reset_after is not None
            else ""
        )
        return f"the API's hourly request quota is spent ({what}){reset}."
    return f"{what} failed: {error}"


def _spot_text(client: NorthflankClient, error: ApiError, spec: DeploymentServiceSpec) -> str:
    had = f" (this one had tags: {', '.join(spec.tags)})" if spec.tags else ""
    head = (
        f'Northflank refused to create sandbox {spec.name}: "{error.api_message}".\n'
        "The project's cluster has only spot nodes, so every service needs a tag whose "
        f"useSpotNodes is on{had}.\n"
    )
    try:
        spot = [tag.name for tag in client.list_tags() if tag.use_spot_nodes]
    except PermissionDeniedError:
        return (
            f"{head}The token cannot list tags (that needs {PERMISSIONS['tags']}): find the "
            "spot tag in the dashboard and pass it with --nf-tag NAME (ini: nf_tags = NAME)."
        )
    except NorthflankError as list_error:
        return f"{head}(Listing the tags failed too: {list_error}.)"
    if not spot:
        return (
            f"{head}No tag of this account has useSpotNodes: create one in the dashboard "
            "with 'Use spot nodes' on, then pass it with --nf-tag NAME (ini: nf_tags = NAME)."
        )
    first = spot[0]
    return (
        f"{head}Tags with useSpotNodes: {', '.join(spot)}.\n"
        f"Use one: --nf-tag {first} (ini: nf_tags = {first}; marker: "
        f"@pytest.mark.nf_sandbox(tags=[{first!r}]))."
    )


def _unknown_tag_text(
    client: NorthflankClient, error: ApiError, spec: DeploymentServiceSpec
) -> str:
    head = (
        f'Northflank refused to create sandbox {spec.name}: "{error.api_message}".\n'
        f"Services may only carry tags that exist (this one had: {', '.join(spec.tags)}).\n"
    )
    try:
        names = [
            f"{tag.name} (useSpotNodes)" if tag.use_spot_nodes else tag.name
            for tag in client.list_tags()
        ]
    except NorthflankError as list_error:
        return f"{head}(Listing the tags failed too: {list_error}.)"
    return (
        f"{head}Tags of this account: {', '.join(names) or 'none'}.\n"
        "Fix --nf-tag / nf_tags or the marker's tags=, or create the tag in the dashboard."
    )


def unknown_project_text(
    client: NorthflankClient, settings: Settings, project_id: str, error: ApiError
) -> str:
    """The project is not there: where its id came from, and the projects the token sees."""
    source = settings.source_of("project")
    head = f"project {project_id!r} (from {source}) was not found: {error.api_message}\n"
    try:
        projects = client.list_projects()
    except PermissionDeniedError:
        return (
            f"{head}The token cannot list projects either (that needs "
            f"{PERMISSIONS['projects']}); check the id in the dashboard URL."
        )
    except NorthflankError as list_error:
        return f"{head}(Listing the projects failed too: {list_error}.)"
    if not projects:
        seen = "The token can see no project at all: is it a token of the right team?"
    else:
        listed = ", ".join(
            f"{p.id} ({p.name})" if p.name and p.name != p.id else p.id for p in projects
        )
        seen = f"Projects this token can see: {listed}."
    return (
        f"{head}{seen}\nSet the project with --nf-project, the ini key nf_project or "
        "NORTHFLANK_PROJECT_ID."
    )
