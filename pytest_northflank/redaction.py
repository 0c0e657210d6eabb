"""Secret masking: the values of secret-looking environment variables never reach a message,
report or file this plugin writes (command output itself stays exact)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Environment variables whose names say they hold a secret: their values are masked in the
# messages and reports this plugin writes (command output itself stays exact).
_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|CERT|SIGNATURE|SALT|COOKIE|SESSION|DSN",
    re.IGNORECASE,
)
MASK = "***"


def secret_values(*envs: Mapping[str, str] | None) -> tuple[str, ...]:
    """The values of the variables in ``envs`` whose names look secret (``DB_PASSWORD``,
    ``API_KEY``...), longest first so that no part of a longer one is left showing."""
    found = {
        value
        for env in envs
        if env
        for name, value in env.items()
        if value and _SECRET_NAME.search(name)
    }
    return tuple(sorted(found, key=len, reverse=True))


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
