"""Service ports: what a user writes (``8000`` or ``{"port": 9000, "protocol": "TCP"}``),
checked and turned into the API's ``ports[]`` entries, with names generated when missing.

Rules (the API's, contract section 16.1): ``internalPort`` 1..65535, ``protocol`` one of
HTTP, HTTP/2, TCP, UDP; ``public`` only with HTTP or HTTP/2; a name of 1..8 characters
(a letter, then letters and digits, single dashes between), unique, as are port numbers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_northflank.errors import ConfigError

PROTOCOLS = ("HTTP", "HTTP/2", "TCP", "UDP")
PUBLIC_PROTOCOLS = ("HTTP", "HTTP/2")
NAME_MAX = 8
_NAME = re.compile(r"^[a-zA-Z](-?[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)?$")
_KEYS = ("port", "protocol", "public", "name")


@dataclass(frozen=True)
class PortSpec:
    """One port of a sandbox, as sent in the create payload."""

    port: int
    protocol: str = "HTTP"
    public: bool = False
    name: str = ""

    def to_payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "internalPort": self.port,
            "protocol": self.protocol,
            "public": self.public,
        }


def _problem(source: str, index: int, message: str) -> ConfigError:
    return ConfigError(f"bad port #{index + 1} in {source}: {message}")


def _one(raw: Any, index: int, source: str) -> PortSpec:
    if isinstance(raw, PortSpec):
        raw = {"port": raw.port, "protocol": raw.protocol, "public": raw.public, "name": raw.name}
    if isinstance(raw, str):  # "8000" or "5432/TCP" from the command line or an ini file
        number, _, suffix = raw.strip().partition("/")
        if not number.isdigit():
            raise _problem(source, index, f"expected PORT or PORT/PROTOCOL, got {raw!r}")
        raw = {"port": int(number), **({"protocol": suffix} if suffix else {})}
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"port": raw}
    if not isinstance(raw, Mapping):
        raise _problem(source, index, f"expected a port number or a dict, got {raw!r}")
    unknown = sorted(str(key) for key in raw if key not in _KEYS)
    if unknown:
        raise _problem(source, index, f"unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    port_number = raw.get("port")
    if (
        isinstance(port_number, bool)
        or not isinstance(port_number, int)
        or not 1 <= port_number <= 65535
    ):
        raise _problem(source, index, f"'port' must be a whole number 1-65535, got {port_number!r}")
    given = raw.get("protocol", "HTTP")
    if not isinstance(given, str) or given.upper() not in PROTOCOLS:
        raise _problem(
            source, index, f"'protocol' must be one of {', '.join(PROTOCOLS)}, got {given!r}"
        )
    protocol = given.upper()
    public = raw.get("public", False)
    if not isinstance(public, bool):
        raise _problem(source, index, f"'public' must be True or False, got {public!r}")
    if public and protocol not in PUBLIC_PROTOCOLS:
        raise _problem(source, index, f"a public port must be HTTP or HTTP/2, not {protocol}")
    name = raw.get("name", "")
    if name != "" and (not isinstance(name, str) or len(name) > NAME_MAX or not _NAME.match(name)):
        raise _problem(
            source,
            index,
            f"'name' must be 1-{NAME_MAX} characters: a letter, then letters and digits with "
            f"single dashes between, got {name!r}",
        )
    return PortSpec(port_number, protocol, public, name)


def check_ports(value: Any, source: str) -> tuple[PortSpec, ...]:
    """Validate ``value`` (a list of numbers and dicts) and name the unnamed ports.

    ``source`` says where the value came from for the error (``marker nf_sandbox``, ``option
    --nf-port``...). Raises :class:`ConfigError`.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes, int, Mapping)) or not isinstance(value, Iterable):
        value = [value]
    ports = [_one(raw, index, source) for index, raw in enumerate(value)]
    numbers: set[int] = set()
    names: set[str] = set()
    for index, port in enumerate(ports):
        if port.port in numbers:
            raise _problem(source, index, f"port {port.port} is listed twice")
        numbers.add(port.port)
        if port.name:
            if port.name.lower() in names:
                raise _problem(source, index, f"the name {port.name!r} is used twice")
            names.add(port.name.lower())
    named = []
    for port in ports:
        if not port.name:
            port = PortSpec(port.port, port.protocol, port.public, _free_name(port.port, names))
            names.add(port.name)
        named.append(port)
    return tuple(named)


def _free_name(number: int, taken: set[str]) -> str:
    """``p8000``; another letter if a user took that (at most 6 characters)."""
    for letter in "p" + string.ascii_lowercase:
        candidate = f"{letter}{number}"
        if candidate not in taken:
            return candidate
    raise ConfigError(f"cannot generate a name for port {number}: give it one")  # 27 taken
