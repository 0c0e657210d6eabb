"""The option table: every setting's command-line option, ini twin (same help) and environment
variables, and the plain-Python first pass over them (precedence, the token, the backend).

Plain Python on purpose: the header, the backend choice and the token/project check need no
pydantic, so a run that never asks for a sandbox never imports it.
:mod:`pytest_northflank.config.settings` validates what is gathered here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_northflank.checks import token_problem


@dataclass(frozen=True)
class OptionSpec:
    """One setting: its command-line option, its ini twin (same help) and environment variables."""

    field: str
    flag: str
    ini: str
    help: str
    default: Any = None
    env: tuple[str, ...] = ()
    metavar: str = "VALUE"
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return f"nf_{self.field}"


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "backend",
        "--nf-backend",
        "nf_backend",
        "Where sandboxes run: auto (Northflank when NORTHFLANK_API_TOKEN is set, otherwise the "
        "embedded emulator), northflank, or emulator. Default: auto.",
        metavar="auto|northflank|emulator",
        default="auto",
    ),
    OptionSpec(
        "project",
        "--nf-project",
        "nf_project",
        "Northflank project id the sandboxes are created in (required for the real backend).",
        env=("NORTHFLANK_PROJECT_ID",),
        metavar="ID",
        default=None,
    ),
    OptionSpec(
        "team",
        "--nf-team",
        "nf_team",
        "Northflank team id, for organisation-scoped tokens (team API routes).",
        env=("NORTHFLANK_TEAM_ID",),
        metavar="ID",
        default=None,
    ),
    OptionSpec(
        "api_url",
        "--nf-api-url",
        "nf_api_url",
        "Northflank API base URL. Default: https://api.northflank.com.",
        env=("NORTHFLANK_API_BASE_URL",),
        metavar="URL",
        default="https://api.northflank.com",
    ),
    OptionSpec(
        "image",
        "--nf-image",
        "nf_image",
        "Container image of each sandbox. Default: ubuntu:22.04.",
        metavar="IMAGE",
        default="ubuntu:22.04",
    ),
    OptionSpec(
        "plan",
        "--nf-plan",
        "nf_plan",
        "Northflank deployment plan of each sandbox. Default: nf-compute-20.",
        metavar="PLAN",
        default="nf-compute-20",
    ),
    OptionSpec(
        "tags",
        "--nf-tag",
        "nf_tags",
        "Tag put on each sandbox (repeat the option; in ini, a space-separated list), e.g. "
        "spot-workload on clusters that only have spot nodes.",
        metavar="TAG",
        repeatable=True,
        default=(),
    ),
    OptionSpec(
        "ports",
        "--nf-port",
        "nf_ports",
        "Port each sandbox declares (repeat the option; in ini, a space-separated list): "
        "PORT or PORT/PROTOCOL (HTTP, HTTP/2, TCP, UDP), e.g. 8000 or 5432/TCP; private, "
        "named p<PORT>. Reach it with Sandbox.url(), forward() or address().",
        metavar="PORT[/PROTOCOL]",
        repeatable=True,
        default=(),
    ),
    OptionSpec(
        "command",
        "--nf-command",
        "nf_command",
        "Main command of each sandbox; an empty value keeps the image's own. "
        "Default: sleep infinity (stock images exit at once otherwise).",
        metavar="COMMAND",
        default="sleep infinity",
    ),
    OptionSpec(
        "ready_timeout",
        "--nf-ready-timeout",
        "nf_ready_timeout",
        "Seconds to wait for a sandbox to become ready. Default: 120.",
        metavar="SECONDS",
        default=120.0,
    ),
    OptionSpec(
        "command_timeout",
        "--nf-command-timeout",
        "nf_command_timeout",
        "Seconds a command or file transfer in a sandbox may take when the call sets no "
        "timeout; then it is stopped and CommandTimeout raised. 0: no limit. Default: 900.",
        metavar="SECONDS",
        default=900.0,
    ),
    OptionSpec(
        "keep",
        "--nf-keep",
        "nf_keep",
        "Keep sandboxes after their tests instead of deleting them: never, on-failure (those "
        "used by a failed test) or always; the summary says how to reach and delete them. "
        "Default: never.",
        metavar="never|on-failure|always",
        default="never",
    ),
    OptionSpec(
        "expiry",
        "--nf-expiry",
        "nf_expiry",
        "Last-resort deadline, in seconds: written into each sandbox's description (so "
        "'pytest-northflank reap --expired' finds leftovers) and sent as Northflank's "
        "createOptions.expiryTime. Cleanup never depends on it. Default: none.",
        metavar="SECONDS",
        default=None,
    ),
    OptionSpec(
        "warm_ahead",
        "--nf-warm-ahead",
        "nf_warm_ahead",
        "Sandboxes each pytest process provisions ahead of the nf_sandbox tests that will "
        "use them (planned from the collected tests and their markers; xdist workers share "
        "them). auto: 8 until measured, then provisioning time / test time, between 1 and 8 "
        "per process; N: exactly N ahead, e.g. --nf-warm-ahead 4; 0: off. Sandboxes no "
        "test took are deleted at the end. Default: auto.",
        metavar="auto|N",
        default="auto",
    ),
    OptionSpec(
        "emulator_isolation",
        "--nf-emulator-isolation",
        "nf_emulator_isolation",
        "How the embedded emulator isolates sandboxes: auto (namespaces when the kernel allows "
        "them), namespace (Linux mount+PID namespace with a private overlay root), or "
        "directory (a private directory; weaker). Default: auto.",
        metavar="auto|namespace|directory",
        default="auto",
    ),
    OptionSpec(
        "emulator_ready_delay",
        "--nf-emulator-ready-delay",
        "nf_emulator_ready_delay",
        "Seconds the embedded emulator takes to report a sandbox ready, to rehearse slow "
        "provisioning. Default: 0.",
        metavar="SECONDS",
        default=0.0,
    ),
    OptionSpec(
        "emulator_images",
        "--nf-emulator-images",
        "nf_emulator_images",
        "Where the embedded emulator's sandboxes get their image: pull (from its registry into "
        "the user cache; when no registry answers and it is not cached, this machine's "
        "userland, said loudly), require (fail the sandbox instead), or off (always this "
        "machine's userland). Default: the emulator's own, pull unless the variable "
        "NF_EMULATOR_IMAGES says otherwise.",
        metavar="pull|require|off",
        default=None,
    ),
)

DEFAULTS: dict[str, Any] = {spec.field: spec.default for spec in OPTIONS}
TOKEN_ENV_VARS = ("NORTHFLANK_API_TOKEN", "NF_API_TOKEN")

SANDBOX_FIXTURES = frozenset(
    {
        "nf_sandbox",
        "nf_sandbox_session",
        "nf_sandbox_shared",
        "nf_sandbox_factory",
        "nf_client",
        "nf_provisioner",
    }
)

MARKER_HELP = (
    "nf_sandbox(image=None, plan=None, env=None, tags=None, command=None, ready_timeout=None, "
    "keep=None, ready=None, ports=None): options of the test's nf_sandbox; keywords left out "
    "come from the --nf-* settings. Markers layer (module, then class, then test): the closest "
    "marker wins per keyword; env, tags and ports merge (the closest value wins per variable "
    "or port number). "
    "nf_sandbox_factory(...) layers its keywords on top the same way. image: container image; "
    "plan: Northflank plan id; env: dict of environment variables; tags: tag names, e.g. "
    "['spot-workload']; command: main command ('' = the image's own); ready_timeout: seconds; "
    "keep: 'never', 'on-failure' or 'always'; ready: a readiness probe "
    "(pytest_northflank.probe: http(port, path), tcp(port), command('...')) that must pass "
    "before the test gets the sandbox; ports: list of port numbers or dicts "
    "{'port', 'protocol', 'public', 'name'}, e.g. [8000, {'port': 5432, 'protocol': 'TCP'}]."
)
NORTHFLANK_MARKER_HELP = (
    "northflank: the test uses a Northflank sandbox or the API (added automatically; "
    'deselect those tests with -m "not northflank").'
)


def option_source(spec: OptionSpec) -> str:
    return f"option {spec.flag}"


def ini_source(spec: OptionSpec, inipath: Path | None) -> str:
    where = f" in {inipath}" if inipath is not None else ""
    return f"ini key {spec.ini}{where}"


def env_source(variable: str) -> str:
    return f"environment variable {variable}"


@dataclass(frozen=True)
class RawSettings:
    """What the user set (``given``), where each value came from, and the token."""

    given: dict[str, Any]
    sources: dict[str, str]
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    # A token variable that is set but blank: a CI secret that is missing or misnamed.
    blank_token_variable: str | None = None

    def value(self, name: str) -> Any:
        return self.given.get(name, DEFAULTS[name])

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "the default")

    @property
    def backend_in_use(self) -> str:
        return choose_backend(str(self.value("backend")), self.token is not None)

    @property
    def backend_reason(self) -> str:
        return backend_reason(str(self.value("backend")), self.token_source, self.source_of)

    def usage_problem(self) -> str | None:
        # A blank token with a project (or the Northflank backend) asked for is a CI secret gone
        # missing: running on the local emulator instead would pass a job that tested nothing.
        wants_northflank = self.value("backend") == "northflank" or (
            self.value("backend") == "auto" and self.value("project") not in (None, "")
        )
        if self.token is None and self.blank_token_variable and wants_northflank:
            return (
                f"the environment variable {self.blank_token_variable} is set but empty, so "
                "there is no API token (in CI: check that the secret exists and is passed to "
                "this step). To run on the embedded emulator, unset it or pass "
                "--nf-backend=emulator."
            )
        if self.backend_in_use == "northflank" and self.token is not None:
            problem = token_problem(self.token)
            if problem is not None:
                return f"the API token in the environment variable {self.token_source} {problem}"
        return usage_problem(
            self.backend_in_use,
            has_token=self.token is not None,
            has_project=self.value("project") not in (None, ""),
            backend_source=self.source_of("backend"),
        )


def gather_settings(
    *,
    cli: Mapping[str, Any],
    ini: Mapping[str, Any],
    environ: Mapping[str, str],
    inipath: Path | None = None,
) -> RawSettings:
    """Apply the precedence command line > environment > ini; defaults stay out of ``given``.

    ``cli`` and ``ini`` hold what the user gave (None, [] or missing = not given; an empty
    string is a value); in ``environ`` an empty variable counts as unset. The token loses
    surrounding whitespace (a secret read from a file often ends in a newline).
    """
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in OPTIONS:
        name = spec.field
        cli_value = cli.get(name)
        env_hit = next(((var, environ[var]) for var in spec.env if environ.get(var)), None)
        ini_value = ini.get(name)
        if cli_value is not None and cli_value != []:
            given[name], sources[name] = cli_value, option_source(spec)
        elif env_hit is not None:
            given[name], sources[name] = env_hit[1], env_source(env_hit[0])
        elif ini_value is not None and ini_value != []:
            given[name], sources[name] = ini_value, ini_source(spec, inipath)
    token, token_source = token_from_environment(environ)
    blank = next((name for name in TOKEN_ENV_VARS if name in environ), None) if not token else None
    return RawSettings(given, sources, token, token_source, blank)


def token_from_environment(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The API token and the variable it came from; a blank variable counts as unset."""
    for variable in TOKEN_ENV_VARS:
        token = environ.get(variable, "").strip()
        if token:
            return token, variable
    return None, None


def choose_backend(backend: str, has_token: bool) -> str:
    """``auto`` is Northflank when a token is set, otherwise the embedded emulator."""
    if backend == "auto":
        return "northflank" if has_token else "emulator"
    return backend


def backend_reason(backend: str, token_source: str | None, source_of: Any) -> str:
    if backend != "auto":
        return f"chosen by {source_of('backend')}"
    if token_source is not None:
        return f"{token_source} is set"
    return "no NORTHFLANK_API_TOKEN in the environment"


def missing_project_message() -> str:
    return (
        "the Northflank backend needs a project: set it with the option --nf-project, the ini "
        "key nf_project or the environment variable NORTHFLANK_PROJECT_ID (the project id "
        "from the dashboard URL, for example my-project). To run on the embedded emulator "
        "instead, pass --nf-backend=emulator; to turn the plugin off, -p no:northflank."
    )


def usage_problem(
    backend_in_use: str, *, has_token: bool, has_project: bool, backend_source: str
) -> str | None:
    """Why the chosen backend cannot work with these settings, or None."""
    if backend_in_use != "northflank":
        return None
    if not has_token:
        return (
            f"backend 'northflank' ({backend_source}) needs an API token in the environment "
            "variable NORTHFLANK_API_TOKEN (or NF_API_TOKEN); tokens are never read from the "
            "command line or ini files. Without a token, use --nf-backend=emulator to run on "
            "the embedded emulator."
        )
    if not has_project:
        return missing_project_message()
    return None
