"""The plugin's configuration as a user meets it: options, ini keys, environment, header, errors,
marker validation and auto-marking. None of these runs provision a sandbox."""

from __future__ import annotations

import json
import sys

import pytest

SECRET = "nf-secret-token-0123456789"

DUMP_SETTINGS = """
import json, os

def test_dump(nf_settings):
    data = nf_settings.model_dump(exclude={"token"})
    data["backend_in_use"] = nf_settings.backend_in_use
    with open(os.environ["SETTINGS_OUT"], "w") as out:
        json.dump(data, out)
"""


pytestmark = pytest.mark.usefixtures("clean_environment")


def settings_of(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    out = pytester.path / "settings.json"
    pytester.makepyfile(test_dump=DUMP_SETTINGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SETTINGS_OUT", str(out))
        result = pytester.runpytest_inprocess(*args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_defaults_pick_the_emulator(pytester: pytest.Pytester) -> None:
    data = settings_of(pytester)
    assert data["backend_in_use"] == "emulator"
    assert data["image"] == "ubuntu:22.04"
    assert data["plan"] == "nf-compute-20"
    assert data["command"] == "sleep infinity"
    assert data["ready_timeout"] == 120.0
    assert data["keep"] == "never"
    assert data["tags"] == []
    assert data["warm_ahead"] == "auto"
    assert data["sources"] == {}


def test_every_option_reaches_the_settings(pytester: pytest.Pytester) -> None:
    data = settings_of(
        pytester,
        "--nf-backend=emulator",
        "--nf-project=proj-1",
        "--nf-team=team-1",
        "--nf-api-url=http://127.0.0.1:9/",
        "--nf-image=alpine:3.20",
        "--nf-plan=nf-compute-50",
        "--nf-tag=spot-workload",
        "--nf-tag=ci",
        "--nf-port=8000",
        "--nf-port=5432/tcp",
        "--nf-command=sleep 600",
        "--nf-ready-timeout=30",
        "--nf-command-timeout=60",
        "--nf-keep=on-failure",
        "--nf-expiry=7200",
        "--nf-warm-ahead=5",
        "--nf-emulator-isolation=directory",
        "--nf-emulator-ready-delay=0.5",
        "--nf-emulator-images=require",
    )
    assert {k: v for k, v in data.items() if k != "sources"} == {
        "backend": "emulator",
        "backend_in_use": "emulator",
        "project": "proj-1",
        "team": "team-1",
        "api_url": "http://127.0.0.1:9",
        "image": "alpine:3.20",
        "plan": "nf-compute-50",
        "tags": ["spot-workload", "ci"],
        "ports": [
            {"name": "p8000", "internalPort": 8000, "protocol": "HTTP", "public": False},
            {"name": "p5432", "internalPort": 5432, "protocol": "TCP", "public": False},
        ],
        "command": "sleep 600",
        "ready_timeout": 30.0,
        "command_timeout": 60.0,
        "keep": "on-failure",
        "expiry": 7200.0,
        "warm_ahead": 5,
        "emulator_isolation": "directory",
        "emulator_ready_delay": 0.5,
        "emulator_images": "require",
        "token_source": None,
    }
    sources = data["sources"]
    assert isinstance(sources, dict)
    assert sources["tags"] == "option --nf-tag"
    assert sources["emulator_ready_delay"] == "option --nf-emulator-ready-delay"


def test_every_ini_key_reaches_the_settings(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        nf_backend = emulator
        nf_project = proj-2
        nf_team = team-2
        nf_api_url = https://api.example.com
        nf_image = debian:12
        nf_plan = nf-compute-100
        nf_tags = spot-workload other-tag
        nf_command =
        nf_ready_timeout = 45
        nf_command_timeout = 0
        nf_keep = always
        nf_expiry = 3600
        nf_warm_ahead = auto
        nf_emulator_isolation = namespace
        nf_emulator_ready_delay = 2
        """
    )
    data = settings_of(pytester)
    expected = {
        "project": "proj-2",
        "team": "team-2",
        "api_url": "https://api.example.com",
        "image": "debian:12",
        "plan": "nf-compute-100",
        "tags": ["spot-workload", "other-tag"],
        "command": "",
        "ready_timeout": 45.0,
        "command_timeout": 0.0,
        "keep": "always",
        "expiry": 3600.0,
        "warm_ahead": "auto",
        "emulator_isolation": "namespace",
        "emulator_ready_delay": 2.0,
    }
    assert {k: data[k] for k in expected} == expected
    sources = data["sources"]
    assert isinstance(sources, dict)
    assert sources["plan"] == f"ini key nf_plan in {pytester.path / 'tox.ini'}"
    assert sources["warm_ahead"] == f"ini key nf_warm_ahead in {pytester.path / 'tox.ini'}"


def test_tags_in_pyproject_as_a_list(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        nf_tags = ["spot-workload", "ci"]
        nf_plan = "nf-compute-40"
        """
    )
    data = settings_of(pytester)
    assert (data["tags"], data["plan"]) == (["spot-workload", "ci"], "nf-compute-40")


def test_precedence_command_line_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        """
        [pytest]
        nf_project = from-ini
        nf_team = team-ini
        nf_api_url = https://ini.example.com
        nf_plan = plan-ini
        """
    )
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "from-env")
    monkeypatch.setenv("NORTHFLANK_TEAM_ID", "team-env")
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", "https://env.example.com")
    data = settings_of(pytester, "--nf-team=team-cli")
    assert data["project"] == "from-env"
    assert data["team"] == "team-cli"
    assert data["api_url"] == "https://env.example.com"
    assert data["plan"] == "plan-ini"
    sources = data["sources"]
    assert isinstance(sources, dict)
    assert sources["project"] == "environment variable NORTHFLANK_PROJECT_ID"
    assert sources["team"] == "option --nf-team"


def test_token_from_the_environment_picks_northflank(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NF_API_TOKEN", SECRET)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "p")
    data = settings_of(pytester)
    assert (data["backend_in_use"], data["token_source"]) == ("northflank", "NF_API_TOKEN")


def test_there_is_no_token_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--nf-token=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unrecognized arguments: --nf-token" in result.stderr.str()


# -------------------------------------------------------------------------------- header


def test_header_for_the_emulator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess(
        "--nf-tag=spot-workload", "--nf-emulator-isolation=directory"
    )
    result.stdout.fnmatch_lines(
        [
            "northflank: backend=emulator (no NORTHFLANK_API_TOKEN in the environment) "
            "isolation=directory ready-delay=0s image=ubuntu:22.04 plan=nf-compute-20 "
            "tags=spot-workload command='sleep infinity' ready-timeout=120s keep=never"
        ]
    )


def test_header_for_northflank_never_shows_the_token(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", SECRET)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", "my-project")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess("-v", "--nf-tag=spot-workload", "--nf-plan=nf-compute-50")
    result.stdout.fnmatch_lines(
        [
            "northflank: backend=northflank (NORTHFLANK_API_TOKEN is set) "
            "api=https://api.northflank.com project=my-project team=- image=ubuntu:22.04 "
            "plan=nf-compute-50 tags=spot-workload command='sleep infinity' "
            "ready-timeout=120s keep=never"
        ]
    )
    assert result.ret == 0
    assert SECRET not in result.stdout.str() + result.stderr.str()


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            ["--nf-plan=nf compute"],
            "",
            "ERROR: pytest-northflank: bad value for plan from option --nf-plan: "
            "'nf compute' is not a plan id*",
        ),
        (
            [],
            "nf_keep = sometimes",
            "ERROR: pytest-northflank: bad value for keep from ini key nf_keep in *tox.ini: "
            "'sometimes' is not one of 'never', 'on-failure' or 'always'",
        ),
        (
            ["--nf-ready-timeout=soon"],
            "",
            "ERROR: pytest-northflank: bad value for ready_timeout from option "
            "--nf-ready-timeout: expected a number of seconds, got str 'soon'",
        ),
        (
            [],
            "nf_tags = spot_workload",
            "ERROR: pytest-northflank: bad value for tags[[]0[]] from ini key nf_tags in *: "
            "'spot_workload' is not a tag name*",
        ),
        (
            ["--nf-warm-ahead=-2"],
            "",
            "ERROR: pytest-northflank: bad value for warm_ahead from option --nf-warm-ahead: "
            "'-2' must be at least 0 (0 turns warm-ahead off)",
        ),
        (
            [],
            "nf_warm_ahead = deep",
            "ERROR: pytest-northflank: bad value for warm_ahead from ini key nf_warm_ahead in "
            "*tox.ini: expected auto or a whole number, got str 'deep'",
        ),
        (
            ["--nf-backend=northflank"],
            "",
            "ERROR: pytest-northflank: backend 'northflank' (option --nf-backend) "
            "needs an API token in the environment variable NORTHFLANK_API_TOKEN*",
        ),
    ],
)
def test_bad_settings_are_usage_errors_naming_their_source(
    pytester: pytest.Pytester, args: list[str], ini: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    result.stdout.no_fnmatch_line("*passed*")


def test_bad_environment_variable_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", "api.northflank.com")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-northflank: bad value for api_url from environment variable "
            "NORTHFLANK_API_BASE_URL: 'api.northflank.com' is not an http:// or https:// URL"
        ]
    )


def test_missing_project_on_the_real_backend_names_option_ini_key_and_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", SECRET)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for place in ("--nf-project", "nf_project", "NORTHFLANK_PROJECT_ID", "--nf-backend=emulator"):
        assert place in err
    assert SECRET not in err + result.stdout.str()


def test_help_is_not_blocked_by_a_bad_setting(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--nf-keep=sometimes", "--help")
    assert result.ret == 0


def test_options_and_ini_keys_share_their_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--help")
    text = " ".join(result.stdout.str().split())
    for name in ("plan", "keep", "ready_timeout", "emulator_isolation", "tags"):
        assert f"nf_{name} " in text
    assert (
        "--nf-plan=PLAN Northflank deployment plan of each sandbox. Default: nf-compute-20." in text
    )
    assert (
        "nf_plan (string): Northflank deployment plan of each sandbox. Default: nf-compute-20."
        in text
    )
    assert "nf_tags (args): Tag put on each sandbox" in text
    assert "--nf-project=ID Northflank project id" in text
    assert "--nf-warm-ahead=auto|N Sandboxes each pytest process provisions ahead" in text
    assert "e.g. --nf-warm-ahead 4; 0: off." in text
    assert "Environment: NORTHFLANK_PROJECT_ID." in text


def test_markers_are_registered_with_their_signature(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.nf_sandbox(image=None, plan=None, env=None, tags=None, command=None, "
            "ready_timeout=None, keep=None, ready=None, ports=None): options of the test's "
            "nf_sandbox*",
            "@pytest.mark.northflank: the test uses a Northflank sandbox*",
        ]
    )


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--fixtures")
    out = result.stdout.str()
    for name in (
        "nf_sandbox",
        "nf_sandbox_session",
        "nf_sandbox_factory",
        "nf_client",
        "nf_settings",
        "nf_provisioner",
    ):
        assert f"{name} [" in out or f"{name} --" in out, name
    assert "A fresh, ready Linux sandbox for this test, deleted afterwards." in out
    assert 'return nf_sandbox_factory(env={"PORT": "8080"})  # deleted after the module' in out


# ----------------------------------------------------------------------- marker validation


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        (
            "@pytest.mark.nf_sandbox(imag='alpine')",
            "@pytest.mark.nf_sandbox on test_bad.py::test_one: unknown keyword 'imag' "
            "(did you mean 'image'?); it accepts image, plan, env, tags, command, "
            "ready_timeout, keep, ready, ports",
        ),
        (
            "@pytest.mark.nf_sandbox(ready_timeout='10')",
            "@pytest.mark.nf_sandbox on test_bad.py::test_one: ready_timeout='10' is wrong: "
            "expected a number of seconds, got str '10'",
        ),
        (
            "@pytest.mark.nf_sandbox(env={'PORT': 8080})",
            # The value is never shown: environment values may be secrets.
            "*test_bad.py::test_one: env[[]'PORT'[]]=[*][*][*] is wrong: expected a string, got *",
        ),
        (
            "@pytest.mark.nf_sandbox('alpine')",
            "*test_bad.py::test_one: takes keyword arguments only*",
        ),
    ],
)
def test_a_bad_marker_fails_collection_naming_test_and_keyword(
    pytester: pytest.Pytester, marker: str, expected: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest

        {marker}
        def test_one(nf_sandbox):
            pass

        def test_two():
            pass
        """
    )
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", expected, "*1 error*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_a_bad_class_marker_is_reported_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_cls="""
        import pytest

        @pytest.mark.nf_sandbox(keep="sometimes")
        class TestBoxes:
            def test_a(self): pass
            def test_b(self): pass
        """
    )
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    # The short summary repeats the error, in full or cut to the terminal's width (pytest
    # prints it whole when CI is set), so only the error section is counted.
    errors = result.stdout.str().partition("short test summary info")[0]
    assert "test_cls.py::TestBoxes::test_a: keep='sometimes' is wrong" in errors
    # One message per distinct problem: test_b's is the same but for its name.
    assert errors.count("is wrong") == 2


def test_a_good_marker_collects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.nf_sandbox(env={"A": "1"}, tags="spot-workload")

        @pytest.mark.nf_sandbox(image="alpine:3.20", plan="nf-compute-10", env={"B": "2"},
                                tags=["a", "b"], command="", ready_timeout=5, keep="always")
        def test_one(nf_sandbox):
            pass
        """
    )
    result = pytester.runpytest_inprocess("--collect-only", "-q")
    assert result.ret == 0


# ---------------------------------------------------------------------------- auto-marking


SANDBOX_SUITE = """
import pytest

@pytest.fixture
def built_on_the_factory(nf_sandbox_factory):
    return nf_sandbox_factory()

def test_plain():
    pass

def test_direct(nf_sandbox):
    pass

def test_session(nf_sandbox_session):
    pass

def test_indirect(built_on_the_factory):
    pass

def test_client(nf_client):
    pass
"""


def test_sandbox_tests_are_marked_northflank(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SANDBOX_SUITE)
    result = pytester.runpytest_inprocess("--collect-only", "-q", "-m", "northflank")
    result.stdout.fnmatch_lines(
        [
            "test_suite.py::test_direct",
            "test_suite.py::test_session",
            "test_suite.py::test_indirect",
            "test_suite.py::test_client",
            "4/5 tests collected (1 deselected)*",
        ]
    )


def test_not_northflank_runs_the_rest_without_provisioning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SANDBOX_SUITE)
    result = pytester.runpytest_inprocess("-m", "not northflank")
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.no_fnmatch_line("*sandboxes:*")


# ----------------------------------------------------------------------- loading the plugin


def test_disabled_plugin_has_no_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(nf_sandbox): pass")
    result = pytester.runpytest_subprocess("-p", "no:northflank")
    result.stdout.fnmatch_lines(["*fixture 'nf_sandbox' not found*"])
    assert "northflank: backend" not in result.stdout.str()


def test_explicit_p_northflank_without_autoload(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile("def test_x(nf_settings): assert nf_settings.plan == 'nf-compute-20'")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without.stdout.fnmatch_lines(["*fixture 'nf_settings' not found*"])
    loaded = pytester.runpytest_subprocess("-p", "northflank", "-p", "no:cacheprovider")
    loaded.assert_outcomes(passed=1)
    loaded.stdout.fnmatch_lines(["northflank: backend=emulator*"])


@pytest.mark.parametrize(
    "code",
    [
        "import pytest_northflank.plugin.hooks",
        "import pytest_northflank; pytest_northflank.CommandFailed",
        "import pytest; pytest.main(['--collect-only', '-q', '-p', 'northflank'])",
    ],
)
def test_loading_the_plugin_imports_no_network_or_emulator_code(
    pytester: pytest.Pytester, code: str
) -> None:
    pytester.makepyfile(test_plain="def test_plain(): pass")
    script = pytester.path / "probe.py"
    script.write_text(
        f"{code}\n"
        "import sys\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'websockets',"
        " 'starlette', 'uvicorn', 'httpcore', 'pydantic')\n"
        "    or m.startswith(('pytest_northflank.client', 'pytest_northflank.emulator')))\n"
        "print('HEAVY:', heavy)\n"
    )
    result = pytester.run(sys.executable, str(script))
    result.stdout.fnmatch_lines(["HEAVY: []"])


def test_package_exports() -> None:
    import pytest_northflank

    assert pytest_northflank.__version__
    assert pytest_northflank.Sandbox.__name__ == "Sandbox"
    assert pytest_northflank.CommandResult.__name__ == "CommandResult"
    with pytest.raises(AttributeError):
        pytest_northflank.Nope  # noqa: B018


def test_a_setup_error_shows_the_whole_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_refused="def test_one(nf_sandbox):\n    pass\n")
    result = pytester.runpytest_subprocess("--nf-plan=nf-compute-9999", "--nf-warm-ahead=0")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "E       pytest_northflank.errors.ProvisioningError: Northflank refused" in out
    assert "plan nf-compute-9999 (from option --nf-plan)" in out
