"""Settings resolution: precedence, defaults, and errors that name where a bad value came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_northflank import probe
from pytest_northflank.config.options import OPTIONS
from pytest_northflank.config.settings import (
    SANDBOX_KEYWORDS,
    SandboxOptions,
    Settings,
    apply_overrides,
    overrides_from,
    resolve,
    validate_marker,
)
from pytest_northflank.errors import ConfigError

INI = Path("/proj/pytest.ini")


def settle(
    cli: dict[str, Any] | None = None,
    ini: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Any:
    return resolve(cli=cli or {}, ini=ini or {}, environ=environ or {}, inipath=INI)


def error_of(**kw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settle(**kw)
    return str(caught.value)


def test_defaults() -> None:
    s = settle()
    assert (s.backend, s.backend_in_use) == ("auto", "emulator")
    assert s.project is None
    assert s.project_in_use == "default-project"
    assert s.api_url == "https://api.northflank.com"
    assert (s.image, s.plan, s.tags, s.command) == (
        "ubuntu:22.04",
        "nf-compute-20",
        (),
        "sleep infinity",
    )
    assert (s.ready_timeout, s.keep) == (120.0, "never")
    assert (s.emulator_isolation, s.emulator_ready_delay) == ("auto", 0.0)
    assert s.warm_ahead == "auto"
    assert s.source_of("plan") == "the default"
    assert s.backend_reason == "no NORTHFLANK_API_TOKEN in the environment"


def test_every_setting_has_an_option_an_ini_key_and_a_model_field() -> None:
    fields = {spec.field for spec in OPTIONS}
    assert fields == {
        "backend", "project", "team", "api_url", "image", "plan", "tags", "command",
        "ready_timeout", "command_timeout", "keep", "expiry", "warm_ahead",
        "emulator_isolation", "emulator_ready_delay", "emulator_images", "ports",
    }  # fmt: skip
    for spec in OPTIONS:
        singular = {"tags": "tag", "ports": "port"}
        assert spec.flag == "--nf-" + singular.get(spec.field, spec.field.replace("_", "-"))
        assert spec.ini == f"nf_{spec.field}"


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("backend", "emulator", "emulator"),
        ("project", "my-project", "my-project"),
        ("team", "my-team", "my-team"),
        ("api_url", "http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("image", "python:3.12-slim", "python:3.12-slim"),
        ("plan", "nf-compute-50", "nf-compute-50"),
        ("tags", ["spot-workload", "ci"], ("spot-workload", "ci")),
        ("command", "/bin/server --port 80", "/bin/server --port 80"),
        ("command", "", ""),
        ("ready_timeout", "300", 300.0),
        ("command_timeout", "60", 60.0),
        ("command_timeout", "0", 0.0),
        ("keep", "on-failure", "on-failure"),
        ("emulator_isolation", "directory", "directory"),
        ("emulator_ready_delay", "1.5", 1.5),
        ("warm_ahead", "0", 0),
        ("warm_ahead", "8", 8),
        ("warm_ahead", "auto", "auto"),
        ("warm_ahead", " Auto ", "auto"),
        ("warm_ahead", 12, 12),
    ],
)
def test_each_setting_from_cli_and_from_ini(field: str, raw: Any, expected: Any) -> None:
    from_cli = settle(cli={field: raw})
    from_ini = settle(ini={field: raw})
    assert getattr(from_cli, field) == getattr(from_ini, field) == expected
    spec = next(s for s in OPTIONS if s.field == field)
    assert from_cli.source_of(field) == f"option {spec.flag}"
    assert from_ini.source_of(field) == f"ini key {spec.ini} in {INI}"


def test_precedence_cli_over_env_over_ini_over_default() -> None:
    env = {"NORTHFLANK_PROJECT_ID": "from-env"}
    assert (
        settle(cli={"project": "from-cli"}, ini={"project": "from-ini"}, environ=env).project
        == "from-cli"
    )
    both = settle(ini={"project": "from-ini"}, environ=env)
    assert both.project == "from-env"
    assert both.source_of("project") == "environment variable NORTHFLANK_PROJECT_ID"
    assert settle(ini={"project": "from-ini"}).project == "from-ini"


def test_cli_tags_replace_ini_tags() -> None:
    assert settle(cli={"tags": ["a"]}, ini={"tags": ["b", "c"]}).tags == ("a",)


@pytest.mark.parametrize(
    ("variable", "field", "value"),
    [
        ("NORTHFLANK_PROJECT_ID", "project", "p1"),
        ("NORTHFLANK_TEAM_ID", "team", "t1"),
        ("NORTHFLANK_API_BASE_URL", "api_url", "https://api.example.com"),
    ],
)
def test_environment_variables(variable: str, field: str, value: str) -> None:
    assert getattr(settle(environ={variable: value}), field) == value


def test_empty_environment_variables_count_as_unset() -> None:
    s = settle(
        environ={"NORTHFLANK_PROJECT_ID": "", "NORTHFLANK_API_TOKEN": ""}, ini={"project": "p"}
    )
    assert s.project == "p"
    assert s.token is None


@pytest.mark.parametrize("variable", ["NORTHFLANK_API_TOKEN", "NF_API_TOKEN"])
def test_token_only_from_the_environment_and_never_shown(variable: str) -> None:
    s = settle(environ={variable: "s3cr3t-token-value", "NORTHFLANK_PROJECT_ID": "p"})
    assert s.token is not None
    assert s.token.get_secret_value() == "s3cr3t-token-value"
    assert (s.token_source, s.backend_in_use) == (variable, "northflank")
    assert s.backend_reason == f"{variable} is set"
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "s3cr3t" not in text
    assert "token" not in {spec.field for spec in OPTIONS}


def test_northflank_token_wins_over_nf_token() -> None:
    s = settle(environ={"NF_API_TOKEN": "b", "NORTHFLANK_API_TOKEN": "a"})
    assert s.token_source == "NORTHFLANK_API_TOKEN"


def test_backend_choice() -> None:
    assert (
        settle(cli={"backend": "emulator"}, environ={"NORTHFLANK_API_TOKEN": "x"}).backend_in_use
        == "emulator"
    )
    assert settle(cli={"backend": "northflank"}).backend_in_use == "northflank"


def test_real_backend_without_project_is_a_usage_error_naming_all_three_places() -> None:
    s = settle(environ={"NORTHFLANK_API_TOKEN": "x"})
    with pytest.raises(ConfigError) as caught:
        s.check_usable()
    message = str(caught.value)
    for place in ("--nf-project", "nf_project", "NORTHFLANK_PROJECT_ID"):
        assert place in message


def test_real_backend_without_token() -> None:
    s = settle(cli={"backend": "northflank", "project": "p"})
    with pytest.raises(ConfigError, match="NORTHFLANK_API_TOKEN") as caught:
        s.check_usable()
    assert "option --nf-backend" in str(caught.value)


def test_emulator_needs_neither_token_nor_project() -> None:
    settle().check_usable()


ERRORS_WITH_SOURCES = [
    ({"cli": {"plan": "nf compute"}}, "plan from option --nf-plan: 'nf compute' is not a plan id"),
    ({"ini": {"keep": "sometimes"}}, f"keep from ini key nf_keep in {INI}: 'sometimes' is not one"),
    ({"ini": {"keep": "sometimes"}}, "not one of 'never', 'on-failure' or 'always'"),
    (
        {"cli": {"ready_timeout": "soon"}},
        "from option --nf-ready-timeout: expected a number of seconds, got str 'soon'",
    ),
    ({"ini": {"ready_timeout": "0"}}, f"nf_ready_timeout in {INI}: '0' must be more than 0"),
    ({"cli": {"ready_timeout": "inf"}}, "is not a finite number of seconds"),
    (
        {"ini": {"tags": ["ok", "not_ok"]}},
        f"tags[1] from ini key nf_tags in {INI}: 'not_ok' is not",
    ),
    (
        {"environ": {"NORTHFLANK_API_BASE_URL": "api.northflank.com"}},
        "api_url from environment variable NORTHFLANK_API_BASE_URL: 'api.northflank.com' is not",
    ),
    (
        {"environ": {"NORTHFLANK_PROJECT_ID": "my project"}},
        "bad value for project from environment variable NORTHFLANK_PROJECT_ID",
    ),
    ({"cli": {"backend": "cloud"}}, "backend from option --nf-backend: 'cloud' is not one of"),
    ({"ini": {"emulator_isolation": "vm"}}, "from ini key nf_emulator_isolation"),
    ({"cli": {"emulator_ready_delay": "-1"}}, "--nf-emulator-ready-delay: '-1' must be at least 0"),
    ({"ini": {"command_timeout": "-5"}}, f"nf_command_timeout in {INI}: '-5' must be at least 0"),
    (
        {"cli": {"warm_ahead": "-1"}},
        "bad value for warm_ahead from option --nf-warm-ahead: '-1' must be at least 0 "
        "(0 turns warm-ahead off)",
    ),
    (
        {"ini": {"warm_ahead": "lots"}},
        f"warm_ahead from ini key nf_warm_ahead in {INI}: expected auto or a whole number, "
        "got str 'lots'",
    ),
    (
        {"cli": {"warm_ahead": "2.5"}},
        "--nf-warm-ahead: expected auto or a whole number, got str '2.5'",
    ),
    ({"ini": {"warm_ahead": "automatic"}}, "expected auto or a whole number, got str 'autom"),
    ({"cli": {"warm_ahead": ""}}, "--nf-warm-ahead: expected auto or a whole number, got str ''"),
    ({"cli": {"warm_ahead": True}}, "--nf-warm-ahead: expected auto or a whole number, got bool"),
    ({"cli": {"warm_ahead": -3}}, "--nf-warm-ahead: -3 must be at least 0"),
    ({"cli": {"image": "ubuntu 22.04"}}, "--nf-image: 'ubuntu 22.04' is not an image reference"),
    ({"cli": {"team": "a/b"}}, "bad value for team from option --nf-team"),
]


@pytest.mark.parametrize(("kw", "expected"), ERRORS_WITH_SOURCES)
def test_errors_name_the_source(kw: dict[str, Any], expected: str) -> None:
    assert expected in error_of(**kw)


def test_every_bad_value_is_reported_at_once() -> None:
    message = error_of(cli={"plan": "a b"}, ini={"keep": "x"})
    assert "--nf-plan" in message
    assert "nf_keep" in message


def test_error_without_an_ini_file_names_just_the_key() -> None:
    with pytest.raises(ConfigError, match=r"from ini key nf_plan: "):
        resolve(cli={}, ini={"plan": "a b"}, environ={}, inipath=None)


# ---------------------------------------------------------------------- marker and factory


def test_marker_overrides_replace_settings() -> None:
    base = settle(cli={"plan": "nf-compute-50", "tags": ["a"]}).sandbox_options()
    marker = validate_marker(
        (), {"image": "alpine:3.20", "env": {"A": "1"}, "tags": "spot-workload"}, "t::x"
    )
    options = apply_overrides(base, marker)
    assert options == SandboxOptions(
        image="alpine:3.20",
        plan="nf-compute-50",
        env={"A": "1"},
        tags=("spot-workload",),
        command="sleep infinity",
        ready_timeout=120.0,
        keep="never",
    )


def test_marker_accepts_every_keyword() -> None:
    given = validate_marker(
        (),
        {
            "image": "i:1",
            "plan": "p",
            "env": {"K": "v w"},
            "tags": ["a", "b"],
            "command": "",
            "ready_timeout": 5,
            "keep": "always",
            "ready": probe.tcp(80),
            "ports": [8000, {"port": 5432, "protocol": "TCP"}],
        },
        "t::x",
    ).given()
    assert set(given) == set(SANDBOX_KEYWORDS)
    assert given["ready"] == probe.tcp(80)
    assert given["ready_timeout"] == 5.0
    assert given["command"] == ""


MARKER_ERRORS = [
    ((), {"ready": 8000}, "ready=8000 is wrong: must be a readiness probe: probe.http(port)"),
    (
        (),
        {"imag": "x"},
        "on t.py::test_a: unknown keyword 'imag' (did you mean 'image'?); it accepts image, plan,",
    ),
    (
        (),
        {"imag": "x", "pln": "y"},
        "unknown keywords 'imag' (did you mean 'image'?), 'pln' (did you mean 'plan'?)",
    ),
    (("ubuntu",), {}, "@pytest.mark.nf_sandbox on t.py::test_a: takes keyword arguments only"),
    ((), {"plan": 20}, "on t.py::test_a: plan=20 is wrong: expected a string, got int 20"),
    # Environment values may be secrets: the messages name the variable and the type only.
    ((), {"env": {"A": 1}}, "env['A']=*** is wrong: expected a string, got int"),
    ((), {"env": ["A=1"]}, "env=*** is wrong: expected a dict of str to str, got list"),
    ((), {"env": {"1A": "x"}}, "'1A' is not an environment variable name"),
    ((), {"tags": ["ok", 3]}, "tags[1]=3 is wrong: expected a string, got int 3"),
    ((), {"tags": {"a"}}, "expected a list of strings"),
    ((), {"ready_timeout": "5"}, "ready_timeout='5' is wrong: expected a number of seconds"),
    ((), {"ready_timeout": True}, "got bool True"),
    ((), {"ready_timeout": -3}, "-3 must be more than 0"),
    ((), {"keep": "sometimes"}, "keep='sometimes' is wrong: 'sometimes' is not one of 'never'"),
    ((), {"command": ["sleep", "1"]}, "command=['sleep', '1'] is wrong: expected a string"),
]


@pytest.mark.parametrize(("args", "kwargs", "expected"), MARKER_ERRORS)
def test_marker_errors_name_the_test_and_keyword(
    args: tuple[Any, ...], kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_marker(args, kwargs, "t.py::test_a")
    assert expected in str(caught.value)
    assert "t.py::test_a" in str(caught.value)


def test_factory_keywords_name_their_source() -> None:
    with pytest.raises(
        ConfigError, match=r"^nf_sandbox_factory\(\.\.\.\) in fixture 'web': keep='x'"
    ):
        overrides_from({"keep": "x"}, "nf_sandbox_factory(...) in fixture 'web'")


def test_a_value_changed_in_the_nf_settings_fixture_says_so() -> None:
    first = Settings.model_validate(
        {"plan": "nf-compute-50", "sources": {"plan": "option --nf-plan"}}
    )
    changed = first.model_copy(update={"plan": "nf-compute-200"})  # the README's override recipe
    assert changed.source_of("plan") == "the nf_settings fixture"
    assert changed.source_of("image") == "the default"
    assert first.source_of("plan") == "option --nf-plan"
