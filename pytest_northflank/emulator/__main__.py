"""``python -m pytest_northflank.emulator``: serve the emulator until SIGINT or SIGTERM.

Prints its URL on the first line; ``--info-file PATH`` also writes it (with the pid, the
isolation and where the token comes from) as JSON for programs (see ``info_file``). The token
comes from ``--token``, else from the environment variable ``NORTHFLANK_EMULATOR_TOKEN``;
without either a random one is made and printed (it opens nothing but this emulator). On exit
every sandbox is stopped.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pytest_northflank.emulator.info_file import (
    EmulatorInfo,
    TokenSource,
    remove_info_file,
    write_info_file,
)
from pytest_northflank.emulator.runtime.limits import DEFAULT_MAX_PROCESSES
from pytest_northflank.emulator.validation import TagSpec, check_tag_body
from pytest_northflank.errors import NorthflankError

if TYPE_CHECKING:  # httpx and the registry client load only when the emulator starts
    from pytest_northflank.emulator.images.options import ImageOptions

TOKEN_ENV = "NORTHFLANK_EMULATOR_TOKEN"


# The spot tag a spot-only account has (the README's recipes use it).
SPOT_TAG = "spot-workload"


def spot_tag_spec() -> TagSpec:
    """The tag ``--spot-only`` creates, checked as ``POST /v1/tags`` would check it."""
    spec = check_tag_body({"name": SPOT_TAG, "useSpotNodes": True})
    assert isinstance(spec, TagSpec)
    return spec


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _process_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


PROG = "python -m pytest_northflank.emulator"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local Northflank API emulator until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="port to bind (0: a free one)")
    parser.add_argument(
        "--token", help=f"the API token clients must send (default: ${TOKEN_ENV}, else random)"
    )
    parser.add_argument(
        "--ready-delay",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="time from create to COMPLETED (0)",
    )
    parser.add_argument(
        "--isolation",
        choices=("auto", "namespace", "directory"),
        default="auto",
        help="sandbox isolation (auto: namespaces when available)",
    )
    parser.add_argument(
        "--project",
        action="append",
        dest="projects",
        metavar="ID",
        help="a project that exists (repeatable; default: default-project)",
    )
    parser.add_argument(
        "--spot-only",
        action="store_true",
        help="reject services without a tag whose useSpotNodes is true, as a spot-only cluster "
        "does; a tag spot-workload with useSpotNodes is created, as such an account has one",
    )
    parser.add_argument(
        "--rate-limit", type=int, metavar="PER_HOUR", help="hourly request quota (none)"
    )
    parser.add_argument("--state-dir", type=Path, help="where sandboxes live (a temp dir)")
    images = parser.add_argument_group("images")
    images.add_argument(
        "--image-cache",
        type=Path,
        metavar="DIR",
        help="image cache (default: $XDG_CACHE_HOME/pytest-northflank/images)",
    )
    images.add_argument(
        "--registry-mirror", metavar="URL", help="a registry serving Docker Hub images"
    )
    images.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a registry spoken to over plain HTTP (repeatable; localhost always is)",
    )
    images.add_argument(
        "--registry-credentials",
        type=Path,
        metavar="FILE",
        help='saved registry credentials: {"<id>": {"username", "password", "registry"}}, '
        "named by deployment.external.credentials",
    )
    images.add_argument(
        "--require-images",
        action="store_true",
        help="fail a deployment whose image cannot be pulled, instead of using this "
        "machine's userland",
    )
    images.add_argument(
        "--no-images",
        action="store_true",
        help="never pull: every sandbox uses this machine's userland (as before images)",
    )
    parser.add_argument(
        "--max-processes",
        type=_process_count,
        default=DEFAULT_MAX_PROCESSES,
        metavar="N",
        help=f"processes each sandbox may run ({DEFAULT_MAX_PROCESSES}); memory follows the plan",
    )
    parser.add_argument(
        "--exit-with-pid",
        type=int,
        metavar="PID",
        help="stop (deleting every sandbox) when process PID ends, e.g. the pytest run it serves",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        metavar="PATH",
        help="write the CA certificate (PEM) of the forwarding tunnel's TLS endpoint to PATH, "
        "e.g. for NODE_EXTRA_CA_CERTS (the certificate is made at start)",
    )
    parser.add_argument(
        "--info-file",
        type=Path,
        metavar="PATH",
        help="once listening, write the URL, pid, isolation and where the token comes from to "
        "PATH as JSON (mode 0600, replaced atomically); removed on exit",
    )
    return parser


def use_it_line(
    url: str, project: str, token_source: TokenSource, token: str, info_file: Path | None
) -> str:
    """``Use it: export ...``: what a shell (pytest, ``pytest-northflank list``) needs. A token
    the user gave is named where it came from, never printed; a generated one is printed only
    when no info file holds it."""
    if token_source == "env":
        token_text = f'"${TOKEN_ENV}"'
    elif token_source == "argument":
        token_text = "<the --token value>"
    elif info_file is not None:
        token_text = f"<the token in {info_file}>"
    else:
        token_text = shlex.quote(token)
    return (
        f"Use it: export NORTHFLANK_API_BASE_URL={shlex.quote(url)} "
        f"NORTHFLANK_API_TOKEN={token_text} NORTHFLANK_PROJECT_ID={shlex.quote(project)}"
    )


def _watch_process(pid: int, stop_requested: threading.Event) -> None:
    """Set ``stop_requested`` once ``pid`` no longer exists (checked twice a second)."""

    def watch() -> None:
        while not stop_requested.wait(0.5):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                stop_requested.set()
            except PermissionError:
                pass  # alive, owned by someone else

    threading.Thread(target=watch, name="emulator-exit-with-pid", daemon=True).start()


def _image_options(args: argparse.Namespace) -> ImageOptions:
    from pytest_northflank.emulator.images.options import ImageOptions, options_from_environment

    default = options_from_environment()  # NF_EMULATOR_IMAGES; the flags win
    return ImageOptions(
        enabled=default.enabled and not args.no_images,
        cache_dir=args.image_cache,
        mirror=args.registry_mirror,
        insecure=tuple(args.insecure_registry),
        credentials_file=args.registry_credentials,
        require=default.require or args.require_images,
    )


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Serve until interrupted; ``prog`` is how help and errors name the command."""
    args = build_parser(prog).parse_args(argv)
    from pytest_northflank.emulator.server import (
        EmulatorExposureWarning,
        EmulatorServer,
        exposure_warning,
    )

    token = args.token or os.environ.get(TOKEN_ENV) or None
    token_source: TokenSource = (
        "argument" if args.token else "env" if token is not None else "generated"
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exposure = None if token is None else exposure_warning(args.host, token)
    if exposure is not None:
        print(f"warning: {exposure}", file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmulatorExposureWarning)  # printed above
            server = EmulatorServer(
                host=args.host,
                port=args.port,
                token=token,
                ready_delay=args.ready_delay,
                isolation=args.isolation,
                project_ids=tuple(args.projects or ("default-project",)),
                spot_only=args.spot_only,
                rate_limit_per_hour=args.rate_limit,
                state_dir=args.state_dir,
                max_processes=args.max_processes,
                images=_image_options(args),
                ca_file=args.ca_file,
            )
        server.start()
    except NorthflankError as exc:  # EmulatorError, or a ConfigError of the credentials file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.exit_with_pid is not None:
        _watch_process(args.exit_with_pid, stop_requested)
    try:
        if args.spot_only:
            server.state.add_tag(spot_tag_spec())
        if args.info_file is not None:
            info = EmulatorInfo(
                url=server.url,
                pid=os.getpid(),
                isolation=server.isolation,
                isolation_reason=server.isolation_reason,
                token_source=token_source,
                token_env=TOKEN_ENV if token_source == "env" else None,
                token=server.token if token_source == "generated" else None,
                ca_file=str(args.ca_file.absolute() if args.ca_file else server.ca_file),
            )
            try:
                write_info_file(args.info_file, info)
            except OSError as exc:
                print(f"error: cannot write the info file {args.info_file}: {exc}", file=sys.stderr)
                return 1
        print(f"Northflank emulator listening on {server.url}", flush=True)
        print(f"isolation: {server.isolation} ({server.isolation_reason})", flush=True)
        if token is None and args.info_file is None:
            # With an info file the generated token is written there (0600) and nowhere else.
            print(f"token (generated): {server.token}", flush=True)
        print(f"limits: {server.limits_reason}", flush=True)
        project = (args.projects or ("default-project",))[0]
        print(
            f"{use_it_line(server.url, project, token_source, server.token, args.info_file)}; "
            "stop with Ctrl-C",
            flush=True,
        )
        stop_requested.wait()
    finally:
        if args.info_file is not None:
            remove_info_file(args.info_file, os.getpid())
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Northflank emulator stopped; every sandbox is gone", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
