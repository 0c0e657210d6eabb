"""Who owns a service: the run id, the worker and the deadline, in the name and the description.

Every service this tool creates is named ``nft-<run>-<worker>-<n>[-<hint>]`` and described as
``pytest-northflank run=<run> worker=<worker> created=<iso> [deadline=<iso>]``, so both a person
reading the dashboard and ``pytest-northflank reap`` can tell which run made it, and no cleanup
ever touches a service another run (or a human) created. A sandbox kept after its tests gets
`` kept=<failed|error|always> test=<node id>`` appended, so ``pytest-northflank list`` (on any
machine) says which test kept it and why.
"""

from __future__ import annotations

import re
import secrets
import string
import sys
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

NAME_PREFIX = "nft"
DESCRIPTION_PREFIX = "pytest-northflank"
MAX_NAME_LENGTH = 54

# The API's service name rule (contract section 2.2).
SERVICE_NAME_RE = re.compile(r"^[a-zA-Z]((-|\s)?[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*)?$")

_RUN_ID_ALPHABET = string.ascii_lowercase + string.digits
_DESCRIPTION_FIELD_RE = re.compile(r"(\w+)=(\S+)")
_RUN_NAME_RE = re.compile(rf"^{NAME_PREFIX}-[a-z][a-z0-9]*-(m|w[0-9]+)-[0-9]+(-[a-z0-9-]+)?$")


def new_run_id() -> str:
    """Six characters, a letter first: short enough for names, about 2 billion values."""
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(_RUN_ID_ALPHABET) for _ in range(5)
    )


def worker_tag(worker_id: str) -> str:
    """``gw12`` -> ``w12``; the controller or a run without xdist -> ``m``."""
    digits = worker_id.removeprefix("gw")
    return f"w{digits}" if digits.isdigit() else "m"


# pytest writes non-ASCII parametrize ids as escapes ("\\xfc", "\\u30c6"); read them back.
_ESCAPE_RE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")


def _unescape(match: re.Match[str]) -> str:
    code = int(next(group for group in match.groups() if group), 16)
    return chr(code) if code <= sys.maxunicode else ""


def slugify(text: str) -> str:
    """Reduce any text (a test id, unicode included) to ``[a-z0-9]`` words joined by ``-``."""
    text = _ESCAPE_RE.sub(_unescape, text)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Ownership:
    """The owner of the services one process creates within a run."""

    run_id: str
    worker_id: str
    deadline: datetime | None = None

    def service_name(self, counter: int, hint: str = "") -> str:
        """A valid, unique-within-the-run service name; ``hint`` (a test name) is cut to fit."""
        base = f"{NAME_PREFIX}-{self.run_id}-{worker_tag(self.worker_id)}-{counter}"
        room = MAX_NAME_LENGTH - len(base) - 1
        slug = slugify(hint)[:room].strip("-") if room > 0 else ""
        return f"{base}-{slug}" if slug else base

    def description(self, created: datetime) -> str:
        text = f"{DESCRIPTION_PREFIX} run={self.run_id} worker={self.worker_id}"
        text += f" created={_iso(created)}"
        if self.deadline is not None:
            text += f" deadline={_iso(self.deadline)}"
        return text

    def owns(self, service_name: str) -> bool:
        return service_name.startswith(f"{NAME_PREFIX}-{self.run_id}-")


# The API's limit on a description, and the characters its schema allows (plus '=').
DESCRIPTION_MAX = 200
_NOT_IN_DESCRIPTION = re.compile(r"[^a-zA-Z0-9.,?\\/'\"()\[\];`%^&*\-_:!=]")


def kept_description(description: str, reason: str, test: str | None) -> str:
    """``description`` with why the sandbox was kept appended (and any earlier note replaced),
    cut to the API's limit; the node id loses its head first (its test name is at the end)."""
    base = description.split(" kept=", 1)[0]
    note = f" kept={reason}"
    if test:
        cleaned = _NOT_IN_DESCRIPTION.sub("_", test)
        room = DESCRIPTION_MAX - len(base) - len(note) - len(" test=")
        if room >= 12:
            shown = cleaned if len(cleaned) <= room else "..." + cleaned[-(room - 3) :]
            note += f" test={shown}"
    return (base + note)[:DESCRIPTION_MAX]


@dataclass(frozen=True)
class ServiceOwner:
    """Ownership read back from a service's description (see :func:`parse_description`)."""

    run_id: str
    worker_id: str
    created: datetime | None
    deadline: datetime | None
    #: Why it was kept (failed, error, always) and the test, when it was kept.
    kept: str | None = None
    kept_by_test: str | None = None


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_description(name: str, description: str | None) -> ServiceOwner | None:
    """Return the owner of a service this tool created, or ``None`` for anybody else's.

    Both marks must agree: the ``nft-<run>-`` name prefix and the description naming the same
    run. A human who happens to use one of them does not make a service ours.
    """
    if not description or not description.startswith(DESCRIPTION_PREFIX + " "):
        return None
    fields = dict(_DESCRIPTION_FIELD_RE.findall(description))
    run_id = fields.get("run")
    if not run_id or not name.startswith(f"{NAME_PREFIX}-{run_id}-"):
        return None
    return ServiceOwner(
        run_id=run_id,
        worker_id=fields.get("worker", "?"),
        created=_parse_time(fields.get("created")),
        deadline=_parse_time(fields.get("deadline")),
        kept=fields.get("kept"),
        kept_by_test=fields.get("test"),
    )


def is_name_of_run(name: str, run_id: str) -> bool:
    """Whether ``name`` is a service name this tool gives in run ``run_id``
    (``nft-<run>-<worker>-<n>[-<hint>]``, valid and no longer than the tool makes them)."""
    return (
        len(name) <= MAX_NAME_LENGTH
        and _RUN_NAME_RE.match(name) is not None
        and name.startswith(f"{NAME_PREFIX}-{run_id}-")
        and SERVICE_NAME_RE.match(name) is not None
    )


def verified_owner(run_id: str, name: str, description: str | None) -> bool:
    """Whether a service read back from the API (its ``name`` and ``description``) is one this
    tool made in run ``run_id``: both marks must say so."""
    owner = parse_description(name, description)
    return owner is not None and owner.run_id == run_id and is_name_of_run(name, run_id)


def delete_refusal(run_id: str, expected: str, name: str, description: str | None) -> str | None:
    """Why a service read back as ``name``/``description`` must not be deleted as this run's
    ``expected`` service, or None when both marks say it is."""
    if name != expected:
        return f"it is service {name!r}, not {expected!r}"
    if not verified_owner(run_id, name, description):
        return f"service {name!r} does not carry run {run_id}'s ownership description"
    return None
