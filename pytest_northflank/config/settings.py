"""Settings: one validated model built from marker > command line > environment > ini > default.

(About 550 lines: the models, their validators and the messages that name a bad value's
source belong together; the option table itself lives in :mod:`.options`.)

Every bad value is reported with where it came from (option ``--nf-plan``, ini key ``nf_plan``,
an environment variable, or ``@pytest.mark.nf_sandbox(plan=...)`` on a test), because "invalid
plan" alone sends people hunting through four places.

The option table, the precedence rules and the defaults live in :mod:`.options`
(plain Python, so loading the plugin and running tests without sandboxes never imports pydantic);
this module validates what they gathered.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    ValidationError,
)

from pytest_northflank.checks import describe_url, url_problem
from pytest_northflank.client.ports import PortSpec, check_ports
from pytest_northflank.config.options import (
    DEFAULTS,
    RawSettings,
    backend_reason,
    choose_backend,
    gather_settings,
    missing_project_message,
    usage_problem,
)
from pytest_northflank.errors import ConfigError
from pytest_northflank.probe import Probe

Backend = Literal["auto", "northflank", "emulator"]
KeepMode = Literal["never", "on-failure", "always"]
Isolation = Literal["auto", "namespace", "directory"]
ImagesMode = Literal["pull", "require", "off"]

EMULATOR_DEFAULT_PROJECT = "default-project"

# The keywords @pytest.mark.nf_sandbox and nf_sandbox_factory accept, in signature order.
SANDBOX_KEYWORDS = (
    "image",
    "plan",
    "env",
    "tags",
    "command",
    "ready_timeout",
    "keep",
    "ready",
    "ports",
)


def _probe(value: Any) -> Probe:
    if not isinstance(value, Probe):
        raise ValueError(
            "must be a readiness probe: probe.http(port), probe.tcp(port) or "
            "probe.command('...') from pytest_northflank.probe"
        )
    return value


ReadyProbe = Annotated[Probe, PlainValidator(_probe)]

_TAG = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
_PLAN = re.compile(r"^[A-Za-z0-9-]+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _plan(value: str) -> str:
    _not_too_long(value, "a plan id")
    if not _PLAN.match(value):
        raise ValueError(
            f"{value!r} is not a plan id (letters, digits and '-', for example nf-compute-20)"
        )
    return value


def _image(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not an image reference (for example ubuntu:22.04)")
    return value


def _tag(value: str) -> str:
    _not_too_long(value, "a tag name")
    if not _TAG.match(value):
        raise ValueError(
            f"{value!r} is not a tag name (letters and digits in groups joined by single '-', "
            "for example spot-workload)"
        )
    return value


# Longest id, plan or tag accepted (Northflank's own are far shorter); a longer value is a
# mistake, and would only fail later as a URL too long to send.
MAX_ID_LENGTH = 100
# Longest duration accepted for any setting in seconds: a year. Longer ones are mistakes, and
# overflow date arithmetic (an expiry deadline).
MAX_SECONDS = 365 * 24 * 3600.0


def _not_too_long(value: str, what: str) -> None:
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{value[:20]!r}... is not {what} ({len(value)} characters; at most {MAX_ID_LENGTH})"
        )


def _identifier(value: str) -> str:
    _not_too_long(value, "an id")
    if not _ID.match(value):
        raise ValueError(f"{value!r} is not an id (letters, digits, '-' and '_', no spaces)")
    return value


def _api_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"{describe_url(value)} {problem}")
    return value.rstrip("/")


def _env(value: Mapping[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _ENV_NAME.match(name):
            raise ValueError(
                f"{name!r} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if "\0" in text:
            raise ValueError(f"the value of {name} contains a NUL character")
    return dict(value)


def _seconds(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number of seconds")
    if value > MAX_SECONDS:
        raise ValueError(f"{value:g} seconds is more than a year (at most {MAX_SECONDS:.0f})")
    return value


WarmAheadMode = Literal["auto"] | int
MAX_WARM_AHEAD = 1000


def _warm_ahead(value: Any) -> WarmAheadMode:
    # "auto" or a whole number of sandboxes; ini files and options give text, conftests ints.
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        number = int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"expected auto or a whole number, got {type(value).__name__} {value!r}")
    if number < 0:
        raise ValueError(f"{value!r} must be at least 0 (0 turns warm-ahead off)")
    if number > MAX_WARM_AHEAD:
        raise ValueError(f"{value!r} is more than {MAX_WARM_AHEAD} sandboxes ahead")
    return number


def _one_or_many(value: Any) -> Any:
    # tags="spot-workload" reads naturally in a marker; treat it as a one-item list.
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _ports(value: Any) -> tuple[PortSpec, ...]:
    try:
        return check_ports(value, "ports")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("bad ").replace(" in ports: ", ": ")) from None


PlanId = Annotated[str, AfterValidator(_plan)]
Image = Annotated[str, AfterValidator(_image)]
TagName = Annotated[str, AfterValidator(_tag)]
Identifier = Annotated[str, AfterValidator(_identifier)]
Seconds = Annotated[float, AfterValidator(_seconds)]
EnvVars = Annotated[dict[str, str], AfterValidator(_env)]
Tags = Annotated[tuple[TagName, ...], BeforeValidator(_one_or_many)]
Ports = Annotated[
    tuple[PortSpec, ...],
    PlainValidator(_ports),
    PlainSerializer(lambda ports: [port.to_payload() for port in ports], return_type=list),
]


class _HidesEnvValues(BaseModel):
    """Shows ``env`` as names only (``{'DB_PASSWORD': '***'}``): values may be secrets, and
    reprs end up in tracebacks, reports and logs."""

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_env(value) if name == "env" else value


def redact_env(env: Any) -> Any:
    """``env`` with every value replaced by ``***`` (anything but a dict becomes ``***``)."""
    if isinstance(env, Mapping):
        return {name: REDACTED for name in env}
    return REDACTED


REDACTED = "***"


class SandboxOptions(_HidesEnvValues):
    """What one sandbox is made of; the defaults come from the settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: Image = DEFAULTS["image"]
    plan: PlanId = DEFAULTS["plan"]
    env: EnvVars = Field(default_factory=dict)
    tags: Tags = DEFAULTS["tags"]
    # The service's main command; "" keeps the image's own command.
    command: str = DEFAULTS["command"]
    ready_timeout: Annotated[Seconds, Field(gt=0)] = DEFAULTS["ready_timeout"]
    keep: KeepMode = DEFAULTS["keep"]
    # Checked before the sandbox is handed out (and sent as Northflank's readiness probe).
    ready: ReadyProbe | None = None
    ports: Ports = ()


class SandboxOverrides(_HidesEnvValues):
    """Keywords of ``@pytest.mark.nf_sandbox`` and ``nf_sandbox_factory``, typed strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    image: Image | None = None
    plan: PlanId | None = None
    env: EnvVars | None = None
    tags: Annotated[tuple[TagName, ...], BeforeValidator(_one_or_many)] | None = None
    command: str | None = None
    ready_timeout: Annotated[Seconds, Field(gt=0)] | None = None
    keep: KeepMode | None = None
    ready: ReadyProbe | None = None
    ports: Ports | None = None

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in self if value is not None}


class Settings(BaseModel):
    """Every setting of one pytest run, validated; ``sources`` says where each value came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Backend = DEFAULTS["backend"]
    project: Identifier | None = DEFAULTS["project"]
    team: Identifier | None = DEFAULTS["team"]
    api_url: Annotated[str, AfterValidator(_api_url)] = DEFAULTS["api_url"]
    image: Image = DEFAULTS["image"]
    plan: PlanId = DEFAULTS["plan"]
    tags: Tags = DEFAULTS["tags"]
    command: str = DEFAULTS["command"]
    ready_timeout: Annotated[Seconds, Field(gt=0)] = DEFAULTS["ready_timeout"]
    keep: KeepMode = DEFAULTS["keep"]
    ports: Ports = DEFAULTS["ports"]
    # What Sandbox.run and the transfers use when the call gives no timeout; 0 is no limit.
    command_timeout: Annotated[Seconds, Field(ge=0)] = DEFAULTS["command_timeout"]
    expiry: Annotated[Seconds, Field(gt=0)] | None = DEFAULTS["expiry"]
    # "auto" (adapts per process) or a fixed number of sandboxes ahead; 0 is off.
    warm_ahead: Annotated[WarmAheadMode, PlainValidator(_warm_ahead)] = DEFAULTS["warm_ahead"]
    emulator_isolation: Isolation = DEFAULTS["emulator_isolation"]
    emulator_ready_delay: Annotated[Seconds, Field(ge=0)] = DEFAULTS["emulator_ready_delay"]
    emulator_images: ImagesMode | None = DEFAULTS["emulator_images"]
    token: SecretStr | None = Field(default=None, repr=False)
    # The environment variable the token came from (never the token itself).
    token_source: str | None = None
    sources: dict[str, str] = Field(default_factory=dict, repr=False)
    # The values as first validated: a copy changed in the nf_settings fixture (model_copy
    # keeps this) can then say its values came from there, not from their first source.
    _first_values: dict[str, Any] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._first_values = dict(self.__dict__)

    @property
    def backend_in_use(self) -> Literal["northflank", "emulator"]:
        """``auto`` becomes ``northflank`` when a token is set, otherwise ``emulator``."""
        chosen = choose_backend(self.backend, self.token is not None)
        return "northflank" if chosen == "northflank" else "emulator"

    @property
    def backend_reason(self) -> str:
        return backend_reason(self.backend, self.token_source, self.source_of)

    @property
    def project_in_use(self) -> str:
        if self.project is not None:
            return self.project
        if self.backend_in_use == "emulator":
            return EMULATOR_DEFAULT_PROJECT
        raise ConfigError(missing_project_message())

    def source_of(self, name: str) -> str:
        if name in self._first_values and getattr(self, name) != self._first_values[name]:
            return "the nf_settings fixture"
        return self.sources.get(name, "the default")

    def sandbox_options(self) -> SandboxOptions:
        """The options of a sandbox nobody asked anything special of."""
        return SandboxOptions(
            image=self.image,
            plan=self.plan,
            tags=self.tags,
            command=self.command,
            ready_timeout=self.ready_timeout,
            keep=self.keep,
            ports=self.ports,
        )

    def check_usable(self) -> None:
        """Raise ConfigError when the chosen backend cannot work with these settings."""
        problem = usage_problem(
            self.backend_in_use,
            has_token=self.token is not None,
            has_project=self.project is not None,
            backend_source=self.source_of("backend"),
        )
        if problem is not None:
            raise ConfigError(problem)


# --------------------------------------------------------------------------------------------
# Validation


def marker_source(nodeid: str) -> str:
    return f"@pytest.mark.nf_sandbox on {nodeid}"


def validate(raw: RawSettings) -> Settings:
    """The validated settings; every bad value is reported with where it came from."""
    data: dict[str, Any] = {**raw.given, "sources": dict(raw.sources)}
    if raw.token is not None:
        data["token"], data["token_source"] = raw.token, raw.token_source
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error, raw.source_of)) from None


def resolve(
    *,
    cli: Mapping[str, Any],
    ini: Mapping[str, Any],
    environ: Mapping[str, str],
    inipath: Path | None = None,
) -> Settings:
    """Gather (command line > environment > ini > default) and validate, in one call."""
    return validate(gather_settings(cli=cli, ini=ini, environ=environ, inipath=inipath))


def overrides_from(keywords: Mapping[str, Any], source: str) -> SandboxOverrides:
    """Validate marker or factory keywords; the error names ``source`` and the keyword."""
    # The error belongs to the marker's or the factory call's line, and the locals hold env
    # values pytest would print.
    __tracebackhide__ = True
    problems = []
    unknown = [name for name in keywords if name not in SANDBOX_KEYWORDS]
    if unknown:
        names = ", ".join(_unknown_keyword(name) for name in unknown)
        word = "keyword" if len(unknown) == 1 else "keywords"
        problems.append(
            f"{source}: unknown {word} {names}; it accepts {', '.join(SANDBOX_KEYWORDS)}"
        )
    known = {name: value for name, value in keywords.items() if name in SANDBOX_KEYWORDS}
    try:
        overrides = SandboxOverrides.model_validate(known)
    except ValidationError as error:
        problems.append(_explain(error, lambda field: source, keyword_style=True))
    if problems:
        raise ConfigError("\n".join(problems))
    return overrides


def _unknown_keyword(name: str) -> str:
    """``'imgae' (did you mean 'image'?)``, or just ``'xyz'`` when nothing is close."""
    close = difflib.get_close_matches(str(name), SANDBOX_KEYWORDS, n=1, cutoff=0.6)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def apply_overrides(options: SandboxOptions, overrides: SandboxOverrides) -> SandboxOptions:
    return options.model_copy(update=overrides.given())


def validate_marker(
    args: Sequence[Any], kwargs: Mapping[str, Any], nodeid: str
) -> SandboxOverrides:
    """The overrides of one ``@pytest.mark.nf_sandbox(...)`` as seen on test ``nodeid``."""
    __tracebackhide__ = True  # as above
    source = marker_source(nodeid)
    if args:
        raise ConfigError(
            f"{source}: takes keyword arguments only (got {len(args)} positional); "
            f"write for example nf_sandbox(image={args[0]!r})"
        )
    return overrides_from(kwargs, source)


# --------------------------------------------------------------------------------------------
# Layering: module, class and test markers, then the factory's keywords


def _merge_mapping(outer: Mapping[str, Any], closer: Mapping[str, Any]) -> dict[str, Any]:
    return {**outer, **closer}


def _merge_names(outer: Sequence[Any], closer: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys((*outer, *closer)))


def _merge_ports(outer: Sequence[PortSpec], closer: Sequence[PortSpec]) -> tuple[PortSpec, ...]:
    """Ports of both layers, one per port number, the closer layer's winning."""
    return tuple({**{p.port: p for p in outer}, **{p.port: p for p in closer}}.values())


# Keywords whose values add up across layers (the closer value winning per key) instead of
# being replaced; every other keyword takes the closest layer's value.
MERGED_KEYWORDS: dict[str, Callable[[Any, Any], Any]] = {
    "env": _merge_mapping,
    "tags": _merge_names,
    "ports": _merge_ports,
}


def layer(*layers: SandboxOverrides | None) -> SandboxOverrides | None:
    """``layers`` (farthest first) as one: per keyword the closest value wins, except that the
    keywords of :data:`MERGED_KEYWORDS` merge. None when no layer was given."""
    given = [overrides for overrides in layers if overrides is not None]
    if not given:
        return None
    merged: dict[str, Any] = {}
    for overrides in given:
        for name, value in overrides.given().items():
            if name in merged and name in MERGED_KEYWORDS:
                value = MERGED_KEYWORDS[name](merged[name], value)
            merged[name] = value
    return SandboxOverrides.model_validate(merged)


MarkerLayer = tuple[Sequence[Any], Mapping[str, Any]]


def layered_markers(markers: Sequence[MarkerLayer], nodeid: str) -> SandboxOverrides | None:
    """The ``nf_sandbox`` markers on test ``nodeid`` as ``(args, kwargs)``, closest first (the
    order of pytest's ``iter_markers``), validated one by one and layered (see :func:`layer`)."""
    __tracebackhide__ = True
    return layer(*(validate_marker(args, kwargs, nodeid) for args, kwargs in reversed(markers)))


# --------------------------------------------------------------------------------------------
# Turning pydantic's errors into sentences

_TYPE_WORDS = {
    "string_type": "a string",
    "float_type": "a number of seconds",
    "float_parsing": "a number of seconds",
    "int_type": "an integer",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "dict_type": "a dict of str to str",
    "tuple_type": "a list of strings",
    "list_type": "a list of strings",
}


def _explain(
    error: ValidationError,
    source_of: Any,
    *,
    keyword_style: bool = False,
) -> str:
    lines = []
    for item in error.errors():
        loc = item["loc"]
        field = str(loc[0]) if loc else "?"
        # Inner locations: a tag's index, an env variable's name.
        inner = _readable_inner(loc[1:])
        what = _describe(item)
        shown = item_input(item)
        if field == "env":  # name the variable and the type, never show a value
            original = item.get("input")
            what = _describe({**item, "input": redact_env(original)})
            if item["type"] in _TYPE_WORDS:
                what = f"expected {_TYPE_WORDS[item['type']]}, got {type(original).__name__}"
            shown = _redacted_repr(original)
        if keyword_style:
            lines.append(f"{source_of(field)}: {field}{inner}={shown} is wrong: {what}")
        else:
            lines.append(f"bad value for {field}{inner} from {source_of(field)}: {what}")
    return "\n".join(lines)


def _readable_inner(parts: Sequence[Any]) -> str:
    # pydantic adds validator names ("function-after[...]") to locations; keep only real keys.
    keys = [p for p in parts if isinstance(p, int) or (isinstance(p, str) and "[" not in p)]
    return "".join(f"[{key!r}]" for key in keys)


def _redacted_repr(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{name!r}: {REDACTED}" for name in value) + "}"
    return REDACTED


def item_input(item: Any) -> str:
    text = repr(item.get("input"))
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(item: Any) -> str:
    kind = item["type"]
    value = item.get("input")
    ctx = item.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "greater_than":
        return f"{value!r} must be more than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"{value!r} must be at least {ctx.get('ge')}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {type(value).__name__} {value!r}"
    return f"{item['msg']} (got {value!r})"
