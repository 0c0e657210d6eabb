"""The ``pytest-northflank`` command: list, enter and reap this tool's services, or serve the
emulator.

    pytest-northflank list --project my-project     # who kept each one, why, age, deadline
    pytest-northflank shell nft-k3x9qa-m-1-test-x   # an interactive shell in a kept sandbox
    pytest-northflank exec nft-k3x9qa-m-1-test-x -- cat /var/log/app.log
    pytest-northflank reap --run k3x9qa            # dry run: says what it would delete
    pytest-northflank reap --expired --yes         # deletes those past their deadline
    pytest-northflank reap --stale --yes           # removes run directories of dead runs
    pytest-northflank reap --all                   # every one of ours, after a confirmation
    pytest-northflank emulator --port 8080         # Northflank on localhost
    pytest-northflank images load ubuntu.tar       # an image for offline sandboxes
    pytest-northflank forward nft-k3x9qa-gw0-1 8000  # a kept sandbox's port on 127.0.0.1

Only services this tool created are ever listed or deleted: both the ``nft-<run>-`` name and
the ``pytest-northflank run=<run> ...`` description must say so, in the listing and again in a
fresh read of the service just before its delete.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pytest_northflank.config.options import DEFAULTS, token_from_environment
from pytest_northflank.errors import NorthflankError
from pytest_northflank.run.ownership import ServiceOwner, parse_description, verified_owner

if TYPE_CHECKING:
    from pytest_northflank.client import NorthflankClient
    from pytest_northflank.client.models import ServiceSummary

DEFAULT_API_URL = DEFAULTS["api_url"]


class UsageError(Exception):
    """A command-line mistake: printed as ``pytest-northflank: error: ...`` with exit code 2."""


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_RUN_ID = re.compile(r"^[a-z][a-z0-9]{0,31}$")


def _check_ids(args: argparse.Namespace) -> None:
    """Ids go into URLs and paths: refuse anything that cannot be one, naming the option."""
    for option, value, pattern in (
        ("--project", getattr(args, "project", None), _ID),
        ("--team", getattr(args, "team", None), _ID),
        ("--run", getattr(args, "run", None), _RUN_ID),
    ):
        if value is not None and not pattern.match(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise UsageError(f"{option}: {shown!r} is not an id ({len(value)} characters)")


def _token() -> str:
    token, _ = token_from_environment(os.environ)
    if token is not None:
        return token
    raise UsageError(
        "no API token: set NORTHFLANK_API_TOKEN (or NF_API_TOKEN); tokens are never read from flags"
    )


def _client(args: argparse.Namespace) -> NorthflankClient:
    from pytest_northflank.client import NorthflankClient

    ca_file = getattr(args, "ca_file", None)
    return NorthflankClient(_token(), base_url=args.api_url, team_id=args.team, ca_file=ca_file)


def _age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return "?"
    seconds = int((now - created).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _ours(client: NorthflankClient, project: str) -> list[tuple[ServiceSummary, ServiceOwner]]:
    found = []
    for service in client.list_services(project):
        owner = parse_description(service.name, service.description)
        if owner is not None:
            found.append((service, owner))
    return found


def _print_table(rows: list[tuple[ServiceSummary, ServiceOwner]], now: datetime) -> None:
    header = ("SERVICE", "RUN", "WORKER", "AGE", "DEADLINE", "KEPT", "TEST")
    lines = [header] + [
        (
            service.id,
            owner.run_id,
            owner.worker_id,
            _age(owner.created, now),
            owner.deadline.strftime("%Y-%m-%d %H:%M UTC") if owner.deadline else "-",
            owner.kept or "-",
            owner.kept_by_test or "-",
        )
        for service, owner in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def cmd_list(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    with _client(args) as client:
        rows = _ours(client, args.project)
    if args.run:
        rows = [row for row in rows if row[1].run_id == args.run]
    if not rows:
        print(f"no pytest-northflank services in project {args.project}")
        return 0
    _print_table(rows, now)
    return 0


def _still_ours(client: NorthflankClient, project: str, service: ServiceSummary) -> bool:
    """A fresh read just before the delete: still this tool's, of the same run."""
    owner = parse_description(service.name, service.description)
    fresh = client.get_service(project, service.id)
    return (
        owner is not None
        and fresh.name == service.name
        and verified_owner(owner.run_id, fresh.name, fresh.description)
    )


def _reap_services(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    with _client(args) as client:
        rows = [
            (service, owner)
            for service, owner in _ours(client, args.project)
            if (args.run is None or owner.run_id == args.run)
            and (not args.expired or (owner.deadline is not None and owner.deadline < now))
        ]
        if not rows:
            print("nothing to reap")
            return 0
        _print_table(rows, now)
        if args.all and not args.yes:
            if not _confirmed(f"delete these {len(rows)} service(s) in project {args.project}?"):
                print("nothing deleted")
                return 1
        elif not args.yes:
            print(f"dry run: {len(rows)} service(s) would be deleted; add --yes to delete them")
            return 0
        failures = 0
        for service, _ in rows:
            try:
                if not _still_ours(client, args.project, service):
                    print(f"not deleting {service.id}: it no longer carries this tool's marks")
                    continue
                client.delete_service(args.project, service.id)
                print(f"deleted {service.id}")
            except NorthflankError as exc:
                failures += 1
                print(f"could not delete {service.id}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _reap_run_dirs(args: argparse.Namespace) -> None:
    """``--run``: that run's directory; ``--stale``: those of runs with no process left."""
    from pytest_northflank.run.leftovers import left_runs, remove

    for left in left_runs():
        if args.run is not None and left.run_id != args.run:
            continue
        if left.running:
            if args.run is not None:
                print(f"keeping {left.path}: a process of run {left.run_id} still runs")
            continue
        if left.alive_services and args.run is None:
            print(
                f"keeping {left.path}: its ledger lists {left.alive_services} service(s); "
                f"run: pytest-northflank reap --run {left.run_id} --yes"
            )
            continue
        if not args.yes:
            print(f"dry run: would remove {left.path}")
        elif remove(left.path):
            print(f"removed {left.path}")


def cmd_reap(args: argparse.Namespace) -> int:
    if not (args.run or args.expired or args.stale or args.all):
        raise UsageError("reap needs --run RUN_ID, --expired, --stale or --all")
    if args.all and (args.run or args.expired):
        raise UsageError("reap --all takes every service of ours: leave out --run and --expired")
    status = 0
    if args.run or args.expired or args.all:
        if not args.project:
            raise UsageError("no project: pass --project or set NORTHFLANK_PROJECT_ID")
        status = _reap_services(args)
    if status == 0 and (args.stale or args.run):
        _reap_run_dirs(args)
    return status


def cmd_forward(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with _client(args) as client:
            host, port = client.forward(args.project, args.name, args.port)
            print(
                f"forwarding {host}:{port} -> {args.name}:{args.port} "
                "(one tunnel per connection; Ctrl-C stops)",
                flush=True,
            )
            stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number 1-65535: {text!r}")
    return int(text)


def _confirmed(question: str) -> bool:
    """Ask on the terminal; anything but y/yes (or no terminal to ask on) is a no."""
    if not sys.stdin.isatty():
        print(f"{question} not confirmed: no terminal to ask on; pass --yes in scripts")
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _find_service(client: NorthflankClient, project: str, name: str) -> str:
    """The id of service ``name`` (a name or an id) in ``project``."""
    for service in client.list_services(project):
        if name in (service.id, service.name):
            return service.id
    raise UsageError(
        f"no service {name!r} in project {project}; 'pytest-northflank list' shows the kept ones"
    )


def cmd_exec(args: argparse.Namespace) -> int:
    from pytest_northflank.cli_terminal import bridge

    command = list(args.cmd)
    if not command:
        raise UsageError("exec needs a command after --, e.g. exec NAME -- ls -la /tmp")
    with _client(args) as client:
        service_id = _find_service(client, args.project, args.name)
        with client.open_session(args.project, service_id, command, tty=False) as session:
            return bridge(session, interactive=False)


def cmd_shell(args: argparse.Namespace) -> int:
    from pytest_northflank.cli_terminal import SHELL_ARGV, bridge, terminal_size

    if not sys.stdin.isatty():
        raise UsageError("shell needs a terminal; to run a command from a script, use exec")
    rows, columns = terminal_size(sys.stdin.fileno())
    with _client(args) as client:
        service_id = _find_service(client, args.project, args.name)
        with client.open_session(
            args.project, service_id, SHELL_ARGV, tty=True, rows=rows, columns=columns
        ) as session:
            return bridge(session, interactive=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-northflank",
        description="List, enter and reap pytest-northflank sandboxes, serve the local "
        "emulator, or manage its image cache.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def api_options(sub: argparse.ArgumentParser, *, by_run: bool = True) -> None:
        sub.add_argument(
            "--project",
            default=os.environ.get("NORTHFLANK_PROJECT_ID"),
            help="project id (default: $NORTHFLANK_PROJECT_ID)",
        )
        sub.add_argument("--team", default=None, help="team id, for organisation-scoped tokens")
        sub.add_argument(
            "--api-url",
            default=os.environ.get("NORTHFLANK_API_BASE_URL", DEFAULT_API_URL),
            help="API base URL (default: $NORTHFLANK_API_BASE_URL or %(default)s)",
        )
        if by_run:
            sub.add_argument("--run", default=None, help="only the services of this run id")

    listing = commands.add_parser(
        "list", help="list this tool's services: run, worker, age, deadline, who kept it and why"
    )
    api_options(listing)
    listing.set_defaults(handler=cmd_list)

    shell = commands.add_parser(
        "shell", help="an interactive shell in a sandbox (a terminal: resize, Ctrl-C, exit code)"
    )
    api_options(shell, by_run=False)
    shell.add_argument("name", help="service name or id (see list)")
    shell.set_defaults(handler=cmd_shell)

    execute = commands.add_parser(
        "exec", help="run one command in a sandbox: exec NAME -- CMD...; exits with its code"
    )
    api_options(execute, by_run=False)
    execute.add_argument("name", help="service name or id (see list)")
    execute.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its args")
    execute.set_defaults(handler=cmd_exec)

    reap = commands.add_parser(
        "reap", help="delete this tool's services by run id or past their deadline"
    )
    api_options(reap)
    reap.add_argument("--expired", action="store_true", help="only services past their deadline")
    reap.add_argument(
        "--stale",
        action="store_true",
        help="remove local run directories of runs whose processes are all gone",
    )
    reap.add_argument(
        "--all",
        action="store_true",
        help="every service this tool made in the project, after a confirmation",
    )
    reap.add_argument(
        "--yes", action="store_true", help="really delete, without asking (default: dry run)"
    )
    reap.set_defaults(handler=cmd_reap)

    forward = commands.add_parser(
        "forward",
        help="carry a local 127.0.0.1 port to a port of a (kept) sandbox until Ctrl-C",
    )
    forward.add_argument("name", metavar="NAME", help="the sandbox's service id")
    forward.add_argument("port", metavar="PORT", type=_port, help="its port (TCP or HTTP)")
    api_options(forward, by_run=False)
    forward.add_argument(
        "--ca-file",
        default=os.environ.get("NORTHFLANK_CA_FILE"),
        help="extra CA certificate for the tunnel's TLS, e.g. the emulator's --ca-file "
        "(default: $NORTHFLANK_CA_FILE)",
    )
    forward.set_defaults(handler=cmd_forward)

    from pytest_northflank.emulator.images.commands import add_parser as add_images_parser

    add_images_parser(commands)
    commands.add_parser(
        "emulator",
        help="serve the Northflank emulator; options as python -m pytest_northflank.emulator",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["emulator"]:
        # Every option after the word belongs to the emulator's own parser.
        from pytest_northflank.emulator.__main__ import main as emulator_main

        return emulator_main(arguments[1:], prog="pytest-northflank emulator")
    parser = build_parser()
    command: list[str] | None = None
    if arguments[:1] == ["exec"] and "--" in arguments:
        # Everything after -- is the command, even words that look like our options.
        split = arguments.index("--")
        arguments, command = arguments[:split], arguments[split + 1 :]
    args = parser.parse_args(arguments)
    if command is not None:
        args.cmd = command
    try:
        _check_ids(args)
        if args.command in ("list", "forward", "exec", "shell") and not args.project:
            raise UsageError("no project: pass --project or set NORTHFLANK_PROJECT_ID")
        return int(args.handler(args))
    except UsageError as exc:
        parser.error(str(exc))
    except NorthflankError as exc:
        print(f"pytest-northflank: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
