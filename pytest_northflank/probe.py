"""Readiness probes: what must answer before a sandbox is handed to a test.

::

    from pytest_northflank import probe

    @pytest.mark.nf_sandbox(command="python3 -m http.server 8000", ready=probe.http(8000))
    def test_app(nf_sandbox): ...

``probe.http(port, path="/", status=200)``, ``probe.tcp(port)`` and
``probe.command("pg_isready -U postgres")`` are checked inside the sandbox with the shell
programs below (no curl, nc or python needed for ``tcp``; ``http`` uses bash's ``/dev/tcp``,
else curl, wget or python3). On Northflank the probe is also sent as the service's
``healthChecks`` readiness probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pytest_northflank.errors import ArgumentError

__all__ = ["HTTP_PROBE", "TCP_PROBE", "Probe", "command", "http", "tcp"]

# Something listens on TCP port $1 (IPv4 or IPv6), read from /proc/net/tcp{,6}: only the
# shell's own `read`, `case` and arithmetic, so it works in any image with /bin/sh. Exit 0
# when listening, 1 when not.
TCP_PROBE = r"""
want=$1
for table in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$table" ] || continue
  while read -r _ local _ state _; do
    [ "$state" = 0A ] || continue
    [ $((0x${local##*:})) -eq "$want" ] && exit 0
  done < "$table"
done
exit 1
"""

# GET http://127.0.0.1:$1$2 and print the status code (nothing when nothing answered).
# bash's /dev/tcp first (Debian/Ubuntu images have bash, not curl), then curl, wget, python3.
HTTP_PROBE = r"""
port=$1 path=$2
if command -v bash >/dev/null 2>&1; then
  exec bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 3
printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$1" "$0" >&3
IFS=" " read -t 5 -r _ code _ <&3 && printf "%s" "$code"' "$port" "$path" 2>/dev/null
elif command -v curl >/dev/null 2>&1; then
  exec curl -s -o /dev/null -m 5 -w "%{http_code}" "http://127.0.0.1:$port$path"
elif command -v wget >/dev/null 2>&1; then
  wget -S -q -T 5 -O /dev/null "http://127.0.0.1:$port$path" 2>&1 |
    while read -r proto code _; do
      case "$proto" in HTTP/*) printf "%s" "$code"; break;; esac
    done
elif command -v python3 >/dev/null 2>&1; then
  exec python3 -c 'import sys, http.client as h
c = h.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5); c.request("GET", sys.argv[2])
print(c.getresponse().status, end="")' "$port" "$path" 2>/dev/null
else
  echo "no bash, curl, wget or python3 in the image to send an HTTP request" >&2
  exit 2
fi
"""

# Northflank's rule for a health check path (northflank-api-more.md section 12.4).
_NORTHFLANK_PATH = re.compile(r"^\/([a-zA-Z0-9-._]+\/)*[a-zA-Z0-9-._]+$")
# Northflank's ranges: timeoutSeconds 1..60, failureThreshold 1..255, periodSeconds >= 10.
_PERIOD_SECONDS = 10
_TIMEOUT_SECONDS = 5


def _check_port(port: object, where: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ArgumentError(f"{where}: port must be a whole number from 1 to 65535, got {port!r}")
    return port


@dataclass(frozen=True)
class Probe:
    """A readiness check; make one with :func:`http`, :func:`tcp` or :func:`command`."""

    kind: Literal["http", "tcp", "command"]
    port: int | None = None
    path: str = "/"
    status: int = 200
    command: str | None = None

    def __str__(self) -> str:
        if self.kind == "http":
            return f"probe.http({self.port}, path={self.path!r}, status={self.status})"
        if self.kind == "tcp":
            return f"probe.tcp({self.port})"
        return f"probe.command({self.command!r})"

    def health_check(self, ready_timeout: float) -> dict[str, Any]:
        """The Northflank ``healthChecks`` item for this probe (a ``readinessProbe``).

        A path Northflank would refuse (``/`` alone, a query string) is sent as a TCP check
        on the same port; the plugin's own check still asks for the path.
        """
        item: dict[str, Any] = {
            "type": "readinessProbe",
            "initialDelaySeconds": 1,
            "periodSeconds": _PERIOD_SECONDS,
            "timeoutSeconds": _TIMEOUT_SECONDS,
            # Probes fail while the service starts: allow the whole ready timeout.
            "failureThreshold": min(max(int(ready_timeout // _PERIOD_SECONDS) + 1, 1), 255),
            "successThreshold": 1,
        }
        if self.kind == "command":
            return {**item, "protocol": "CMD", "cmd": self.command}
        if self.kind == "http" and _NORTHFLANK_PATH.match(self.path):
            return {**item, "protocol": "HTTP", "port": self.port, "path": self.path}
        return {**item, "protocol": "TCP", "port": self.port}


def http(port: int, path: str = "/", status: int = 200) -> Probe:
    """Ready when ``GET http://127.0.0.1:{port}{path}`` inside the sandbox answers ``status``."""
    _check_port(port, "probe.http")
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ArgumentError(f"probe.http: path must start with '/' and hold no spaces: {path!r}")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ArgumentError(f"probe.http: status must be an HTTP status code, got {status!r}")
    return Probe("http", port=port, path=path, status=status)


def tcp(port: int) -> Probe:
    """Ready when something listens on TCP ``port`` inside the sandbox."""
    return Probe("tcp", port=_check_port(port, "probe.tcp"))


def command(cmd: str) -> Probe:
    """Ready when the shell command ``cmd`` exits 0 inside the sandbox (``sh -c``)."""
    if not isinstance(cmd, str) or not cmd.strip() or "\0" in cmd:
        raise ArgumentError(f"probe.command: give a non-empty shell command, got {cmd!r}")
    return Probe("command", command=cmd)
