"""Secret masking: the values of secret-looking environment variables never reach a message,
report or file this plugin writes (command output itself stays exact).

Values shorter than :data:`MIN_MASKED_LENGTH` characters are not masked: replacing every
``on`` or ``1`` in a message would mangle unrelated text, and such a value is no secret worth
the name."""

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
#: Shorter values are not masked (see the module docstring).
MIN_MASKED_LENGTH = 6


def secret_values(*envs: Mapping[str, str] | None) -> tuple[str, ...]:
    """The values of the variables in ``envs`` whose names look secret (``DB_PASSWORD``,
    ``API_KEY``...) and that are at least :data:`MIN_MASKED_LENGTH` characters long, longest
    first so that no part of a longer one is left showing."""
    found = {
        value
        for env in envs
        if env
        for name, value in env.items()
        if isinstance(value, str) and len(value) >= MIN_MASKED_LENGTH and _SECRET_NAME.search(name)
    }
    return tuple(sorted(found, key=len, reverse=True))


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
