"""Checks of the connection values a user gives (API base URL, API token), shared by the
settings and the client. Plain standard library, so validating settings imports nothing heavy.

Each check returns what is wrong as a phrase, or None. No phrase ever repeats a token, or a
URL's user name or password.
"""

from __future__ import annotations

import urllib.parse

__all__ = ["describe_url", "token_problem", "url_problem"]


def describe_url(url: str) -> str:
    """``url`` quoted for a message, with any ``user:password@`` part left out."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return repr(url)
    if "@" not in parts.netloc:
        return repr(url)
    host = parts.netloc.rpartition("@")[2]
    return repr(urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}")))


def url_problem(url: str) -> str | None:
    """What keeps ``url`` from being an API base URL (``http(s)://host[:port][/path]``)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains whitespace or a control character"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or too big
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        return (
            "must not contain a user name or password; the API token goes in the environment "
            "variable NORTHFLANK_API_TOKEN"
        )
    if parts.query or parts.fragment:
        return "must not have a query string or a fragment"
    return None


def token_problem(token: str) -> str | None:
    """What keeps ``token`` from being sent as ``Authorization: Bearer <token>``."""
    if not token.strip():
        return "is empty"
    if any(ch.isspace() for ch in token):
        return "contains whitespace"
    if not token.isascii() or not token.isprintable():
        return "contains characters that are not printable ASCII"
    return None
