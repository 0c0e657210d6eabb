"""Bad input: every case fails with an error that says what was wrong and where it came from,
and leaves nothing behind (the emulator playing the remote API holds no service afterwards)."""

from __future__ import annotations

import textwrap
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from reliability_helpers import (
    PROJECT,
    error_text,
    output,
    run_pytest,
    services_left,
)

from pytest_northflank.client import NorthflankClient
from pytest_northflank.emulator.validation import (
    DEPLOYMENT_PLANS,
    check_instances_body,
    check_service_body,
)
from pytest_northflank.errors import (
    ApiValidationError,
    CommandFailed,
    CommandTimeout,
    ConfigError,
    FileTransferError,
)
from pytest_northflank.run.ownership import MAX_NAME_LENGTH, SERVICE_NAME_RE, Ownership

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer
    from pytest_northflank.sandbox import Sandbox


def requests_seen(server: EmulatorServer) -> int:
    """API requests the emulator answered since its last reset (the control plane aside)."""
    rate = server.control.state()["rateLimit"]
    return int(rate["used"])


# ------------------------------------------------------------------------------ markers


def test_marker_keywords_of_a_wrong_type_or_unknown(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_markers="""
        import pytest

        @pytest.mark.nf_sandbox(plan=20, envv={"A": "1"})
        def test_two_problems(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox(env={"DB_PASSWORD": 12345})
        def test_env_value(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox(ready_timeout=0, keep="sometimes")
        def test_timeout_and_keep(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox("ubuntu:22.04")
        def test_positional(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox(tags="no spaces allowed")
        def test_tag(nf_sandbox):
            pass
        """,
        test_factory="""
        def test_factory(nf_sandbox_factory):
            nf_sandbox_factory(ready_timeout=-5)
        """,
    )
    result = run_pytest(pytester, "--continue-on-collection-errors")
    text = output(result)
    where = "@pytest.mark.nf_sandbox on test_markers.py::"
    for line in [
        f"{where}test_two_problems: unknown keyword 'envv' (did you mean 'env'?); it accepts",
        f"{where}test_two_problems: plan=20 is wrong: expected a string, got int 20",
        f"{where}test_env_value: env['DB_PASSWORD']=*** is wrong: expected a string, got int",
        f"{where}test_timeout_and_keep: ready_timeout=0 is wrong: 0 must be more than 0",
        f"{where}test_timeout_and_keep: keep='sometimes' is wrong: 'sometimes' is not one of",
        f"{where}test_positional: takes keyword arguments only (got 1 positional)",
        f"{where}test_tag: tags[0]='no spaces allowed' is wrong: 'no spaces allowed' is not a tag",
    ]:
        assert line in text
    assert "12345" not in text  # an env value is never shown, even a wrong one
    assert (
        "ConfigError: nf_sandbox_factory(...) in test_factory.py::test_factory: "
        "ready_timeout=-5 is wrong: -5 must be more than 0"
    ) in text
    result.assert_outcomes(failed=1, errors=1)
    assert services_left(remote) == []
    assert requests_seen(remote) == 1  # the run's one preflight check; nothing for the tests


# ------------------------------------------------------------------------ service names


def test_service_names_from_long_and_unicode_test_ids(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_names="""
        import pytest

        @pytest.mark.parametrize(
            "value",
            ["x" * 300, "ünïcödé テスト 🎉", "-- [weird] / ids; --", "", "日本語"],
            ids=["x" * 300, "ünïcödé テスト 🎉", "-- [weird] / ids; --", "", "日本語"],
        )
        def test_id(nf_sandbox, value):
            with open("names.txt", "a") as names:
                names.write(nf_sandbox.name + "\\n")
            assert nf_sandbox.run(["echo", value]).stdout == value + "\\n"

        def test_名前(nf_sandbox_factory):
            with open("names.txt", "a") as names:
                names.write(nf_sandbox_factory().name + "\\n")
        """
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=6)
    names = (pytester.path / "names.txt").read_text().split()
    assert len(set(names)) == 6
    for name in names:
        assert 3 <= len(name) <= MAX_NAME_LENGTH
        assert SERVICE_NAME_RE.match(name), name
    assert services_left(remote) == []


@pytest.mark.parametrize(
    ("test_name", "slug"),
    [
        # pytest escapes non-ASCII ids; names read the escapes back instead of spelling them.
        ("test_id[\\xfcn\\xefc\\xf6d\\xe9 \\u30c6\\u30b9\\u30c8 \\U0001f389]", "test-id-unicode"),
        ("test_id[\\u65e5\\u672c\\u8a9e]", "test-id"),
        ("test_\u540d\u524d", "test"),
        ("test_id[" + "x" * 300 + "]", "test-id-" + "x" * 27),
        ("test_id[-- [weird] / ids; --]", "test-id-weird-ids"),
        ("\U0001f389", ""),
    ],
)
def test_names_are_valid_and_readable(test_name: str, slug: str) -> None:
    name = Ownership("abcdef", "gw12").service_name(345, test_name)
    assert name == f"nft-abcdef-w12-345-{slug}".rstrip("-")
    assert len(name) <= MAX_NAME_LENGTH
    assert SERVICE_NAME_RE.match(name)


# ------------------------------------------------------------------ sandboxes that fail


def test_an_image_whose_main_command_cannot_start(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_image="""
        import pytest

        @pytest.mark.nf_sandbox(command="no-such-program-xyz --serve")
        def test_missing_program(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox(command="sh -c 'echo boot failed >&2; exit 3'")
        def test_exits_at_once(nf_sandbox):
            pass
        """
    )
    result = run_pytest(pytester)
    # A sandbox that never became ready is an error of the test's setup, not a failure.
    result.assert_outcomes(errors=2)
    text = error_text(result)
    assert "DeploymentFailed: sandbox nft-" in text
    assert "did not become ready: its deployment FAILED; last status FAILED, reason " in text
    assert "The main command could not be started" in text
    assert "no-such-program-xyz" in text
    assert "The main process exited with code 3 before the deployment was ready" in text
    assert "boot failed" in text  # its last log lines
    assert text.count("The sandbox was deleted.") == 2
    assert "2 never became ready" in result.stdout.str()
    assert services_left(remote) == []


def test_an_unknown_plan_is_refused_naming_where_it_came_from(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_plan="""
        import pytest

        def test_from_the_option(nf_sandbox):
            pass

        @pytest.mark.nf_sandbox(plan="nf-compute-9999")
        def test_from_the_marker(nf_sandbox):
            pass
        """
    )
    result = run_pytest(pytester, "--nf-plan=nf-compute-7")
    result.assert_outcomes(errors=2)
    text = error_text(result)
    assert "ProvisioningError: Northflank refused creating sandbox nft-" in text
    assert "'nf-compute-7' is not a deployment plan; the plans are nf-compute-10, " in text
    assert "plan nf-compute-7 (from option --nf-plan)" in text
    assert "'nf-compute-9999' is not a deployment plan" in text
    assert "plan nf-compute-9999 (from the test's nf_sandbox marker" in text
    assert services_left(remote) == []


def test_the_emulator_knows_the_deployment_plans() -> None:
    body = {
        "name": "plan-check",
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {"instances": 1, "external": {"imagePath": "ubuntu:22.04"}},
    }
    for plan in ("nf-compute-10", "nf-compute-20", "nf-compute-50", "nf-compute-200"):
        body["billing"] = {"deploymentPlan": plan}
        assert check_service_body(body).plan == plan
    body["billing"] = {"deploymentPlan": "nf-compute-21"}
    with pytest.raises(ApiValidationError) as refused:
        check_service_body(body)
    assert refused.value.status == 400
    assert refused.value.details == [
        {
            "path": ["billing", "deploymentPlan"],
            "message": "'nf-compute-21' is not a deployment plan; the plans are "
            + ", ".join(DEPLOYMENT_PLANS),
        }
    ]
    with pytest.raises(ApiValidationError, match="'huge' is not a deployment plan"):
        check_instances_body({"deploymentPlan": "huge"}, what="scale")
    with pytest.raises(ApiValidationError, match="must be a plan id, got integer"):
        check_instances_body({"deploymentPlan": 20}, what="scale")


# ---------------------------------------------------------------- settings at start-up


@pytest.mark.parametrize(
    ("args", "environment", "message"),
    [
        (
            ["--nf-api-url=htp:/api.example.com"],
            {},
            "bad value for api_url from option --nf-api-url: 'htp:/api.example.com' is not an "
            "http:// or https:// URL",
        ),
        (
            [],
            {"NORTHFLANK_API_BASE_URL": "http://api example.com"},
            "bad value for api_url from environment variable NORTHFLANK_API_BASE_URL: "
            "'http://api example.com' contains whitespace",
        ),
        (
            ["--nf-api-url=http://127.0.0.1:notaport"],
            {},
            "'http://127.0.0.1:notaport' is not a valid URL (Port could not be cast",
        ),
        (
            ["--nf-api-url=http://127.0.0.1:70000"],
            {},
            "'http://127.0.0.1:70000' is not a valid URL (Port out of range",
        ),
        (
            ["--nf-api-url=https://me:pa55word@api.example.com"],
            {},
            "'https://***@api.example.com' must not contain a user name or password",
        ),
        (
            ["--nf-ready-timeout=0"],
            {},
            "bad value for ready_timeout from option --nf-ready-timeout: '0' must be more than 0",
        ),
        (["--nf-ready-timeout=-1.5"], {}, "'-1.5' must be more than 0"),
        (["--nf-ready-timeout=nan"], {}, "nan is not a finite number of seconds"),
        (["--nf-keep=sometimes"], {}, "'sometimes' is not one of 'never', 'on-failure' or"),
        (
            ["--nf-backend=northflank"],
            {"NORTHFLANK_API_TOKEN": "  "},
            "the environment variable NORTHFLANK_API_TOKEN is set but empty, so there is no API "
            "token",
        ),
        (
            [],
            {"NORTHFLANK_API_TOKEN": "nf-token with-a-space"},
            "the API token in the environment variable NORTHFLANK_API_TOKEN contains whitespace",
        ),
        (
            [],
            {"NORTHFLANK_API_TOKEN": "nf-tökén"},
            "the API token in the environment variable NORTHFLANK_API_TOKEN contains "
            "characters that are not printable ASCII",
        ),
    ],
)
def test_bad_settings_stop_the_run_before_any_test(
    pytester: pytest.Pytester,
    remote: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environment: dict[str, str],
    message: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_one="def test_box(nf_sandbox):\n    pass\n")
    result = run_pytest(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = output(result)
    assert "ERROR: pytest-northflank: " in text
    assert message in " ".join(text.split())
    for secret in ("pa55word", "with-a-space", "nf-tökén"):
        assert secret not in text
    assert requests_seen(remote) == 0


@pytest.mark.parametrize(
    ("token", "base_url", "message"),
    [
        ("", "http://127.0.0.1:1", "a Northflank API token is required (it is empty)"),
        ("  \n", "http://127.0.0.1:1", "a Northflank API token is required (it is empty)"),
        (
            "secret part\nanother",
            "http://127.0.0.1:1",
            "the Northflank API token contains whitespace",
        ),
        ("sécret", "http://127.0.0.1:1", "token contains characters that are not printable ASCII"),
        ("tok", "api.northflank.com", "'api.northflank.com' is not an http:// or https:// URL"),
        ("tok", "http://[::1", "'http://[::1' is not a valid URL (Invalid IPv6 URL)"),
        (
            "tok",
            "http://h:99999",
            "'http://h:99999' is not a valid URL (Port out of range 0-65535)",
        ),
        ("tok", "https://u:secret@h", "'https://***@h' must not contain a user name or password"),
        ("tok", "https://h/v1?team=x", "must not have a query string or a fragment"),
    ],
)
def test_the_client_refuses_a_bad_token_or_base_url(
    token: str, base_url: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        NorthflankClient(token, base_url=base_url)
    assert message in str(caught.value)
    for secret in ("secret part", "sécret", "u:secret"):
        assert secret not in str(caught.value)


def test_a_base_url_with_a_path_and_a_trailing_slash_is_fine() -> None:
    with NorthflankClient("tok", base_url="https://proxy.example.com/northflank/") as client:
        assert client.base_url == "https://proxy.example.com/northflank"


def test_a_ready_timeout_from_the_ini_file_names_the_file(
    pytester: pytest.Pytester, remote: EmulatorServer
) -> None:
    pytester.makeini("[pytest]\nnf_ready_timeout = -3\n")
    pytester.makepyfile(test_one="def test_box(nf_sandbox):\n    pass\n")
    result = run_pytest(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"bad value for ready_timeout from ini key nf_ready_timeout in {pytester.path / 'tox.ini'}"
        in output(result)
    )
    assert requests_seen(remote) == 0


def test_a_blank_token_stops_the_run_and_a_trailing_newline_is_dropped(
    pytester: pytest.Pytester, remote: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CI secret that is missing or misnamed arrives as an empty variable: silently running on
    # the local emulator instead would pass a job that never touched Northflank.
    pytester.makepyfile(test_nothing="def test_plain():\n    pass\n")
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", " \n")
    blank = run_pytest(pytester)  # the remote fixture sets NORTHFLANK_PROJECT_ID
    assert blank.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "the environment variable NORTHFLANK_API_TOKEN is set but empty, so there is no API "
        "token (in CI: check that the secret exists and is passed to this step)" in output(blank)
    )
    # Asking for the emulator explicitly is fine, and so is a blank token with no project.
    on_purpose = run_pytest(pytester, "--nf-backend=emulator")
    on_purpose.assert_outcomes(passed=1)
    assert "backend=emulator (chosen by option --nf-backend)" in output(on_purpose)
    monkeypatch.delenv("NORTHFLANK_PROJECT_ID")
    run_pytest(pytester).assert_outcomes(passed=1)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)

    # A secret file's trailing newline must not turn into a broken Authorization header.
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", remote.token + "\n")
    pytester.makepyfile(
        test_box='def test_box(nf_sandbox):\n    assert nf_sandbox.run("true").ok\n'
    )
    run_pytest(pytester, "test_box.py").assert_outcomes(passed=1)
    assert services_left(remote) == []


# -------------------------------------------------------------- commands and files


@pytest.mark.parametrize(
    "command",
    ["echo a\0b", ["echo", "a\0b"], ["\0"]],
    ids=["string", "argument", "program"],
)
def test_a_command_containing_nul_is_refused_before_sending(
    sandbox: Sandbox, command: str | list[str]
) -> None:
    before = len(sandbox.history)
    with pytest.raises(ValueError, match="contains a NUL character, which no program can receive"):
        sandbox.run(command)
    assert len(sandbox.history) == before  # nothing was run


def test_a_command_of_the_wrong_type_is_refused_saying_so(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError, match=r"^the command must be a str or a list of str, not bytes"):
        sandbox.run(b"echo hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^command items must be str or path-like, got 3$"):
        sandbox.run(["echo", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^the command is an empty list$"):
        sandbox.run([])


def test_nul_in_env_or_cwd_is_refused_naming_the_variable(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match=r"^the value of DB_PASSWORD contains a NUL character$"):
        sandbox.run("true", env={"DB_PASSWORD": "hunt\0er2"})
    with pytest.raises(ValueError, match=r"^cwd contains a NUL character$"):
        sandbox.run("true", cwd="/tmp\0/x")
    with pytest.raises(TypeError, match=r"^the value of PORT must be a str, got int$"):
        sandbox.run("true", env={"PORT": 8080})  # type: ignore[dict-item]


def test_a_missing_local_path_cannot_be_uploaded(sandbox: Sandbox, tmp_path: Path) -> None:
    missing = tmp_path / "not-there.txt"
    with pytest.raises(FileTransferError) as caught:
        sandbox.upload(missing, "uploads/not-there.txt")
    assert f"the local path {missing} does not exist" in str(caught.value)
    assert not sandbox.exists("uploads")


def test_a_missing_remote_path_cannot_be_downloaded(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(FileTransferError) as caught:
        sandbox.download("no/such/file.txt", target)
    assert f"download of {sandbox.id}:no/such/file.txt to {target}: the remote path does not " in (
        str(caught.value)
    )
    assert not target.exists()
    with pytest.raises(FileTransferError, match=r"cannot read no/such/file\.txt"):
        sandbox.read_text("no/such/file.txt")


HOSTILE_NAMES = [
    "with space.txt",
    'it\'s "quoted".txt',
    "new\nline.txt",
    "-starts-with-dash",
    "$(touch pwned).txt",
    "`touch pwned`",
    "glob*?[x].txt",
    "tab\tand;semicolon&amp",
    "ünïcödé ✓.txt",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_remote_paths_with_spaces_quotes_or_newlines(
    sandbox: Sandbox, tmp_path: Path, name: str
) -> None:
    local = tmp_path / "source.bin"
    local.write_bytes(b"\x00payload " + name.encode())
    remote_dir = f"hostile dir/{name}.d"
    sandbox.upload(local, f"{remote_dir}/{name}")
    assert sandbox.read_bytes(f"{remote_dir}/{name}") == local.read_bytes()
    assert sandbox.exists(f"{remote_dir}/{name}")
    sandbox.write_text(f"{remote_dir}/{name}.copy", name)
    assert sandbox.read_text(f"{remote_dir}/{name}.copy") == name
    back = tmp_path / "back"
    back.mkdir()
    sandbox.download(f"{remote_dir}/{name}", back)
    assert (back / name).read_bytes() == local.read_bytes()
    tree = tmp_path / "tree"
    sandbox.download(remote_dir, tree)
    assert sorted(p.name for p in tree.iterdir()) == sorted([name, f"{name}.copy"])
    # Nothing in a name was ever run as a command.
    assert sandbox.run("ls -a / /root /tmp . | grep -c pwned || true").stdout == "0\n"


def test_a_hundred_megabytes_of_stdout(sandbox: Sandbox) -> None:
    size = 100 * 1000 * 1000
    tracemalloc.start()
    try:
        result = sandbox.run(f"head -c {size} /dev/zero | tr '\\0' 'x'", check=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.stdout_bytes) == size
    assert result.stdout_bytes.count(b"x") == size
    # The output is held once (plus frames in flight), not as chunks and a joined copy.
    assert peak < 1.5 * size, f"peak {peak / 1e6:.0f} MB for {size / 1e6:.0f} MB of output"


def test_output_that_is_not_utf8(sandbox: Sandbox) -> None:
    raw = b"ok \xff\xfe \xc3\x28 \xed\xa0\x80 \x80 end"
    result = sandbox.run(["printf", "%b", "".join(f"\\{byte:03o}" for byte in raw)])
    assert result.stdout_bytes == raw  # bytes exact
    assert result.stdout == raw.decode("utf-8", errors="replace")  # text view replaced
    assert "\ufffd" in result.stdout
    failed = sandbox.run(["sh", "-c", 'printf "%b" "$1" >&2; exit 5', "sh", "\\377 bad \\376"])
    with pytest.raises(CommandFailed, match="exited with 5") as caught:
        failed.check()
    assert "\ufffd bad \ufffd" in str(caught.value)


@pytest.mark.parametrize(
    ("command", "leftovers"),
    [
        ("sleep 3601", ["sleep 3601"]),
        ("trap '' TERM; sleep 3602", ["sleep 3602"]),  # ignores SIGTERM: SIGKILL follows
        ("sleep 3603 & sleep 3604; wait", ["sleep 3603", "sleep 3604"]),
    ],
    ids=["plain", "ignores-sigterm", "with-a-child"],
)
def test_a_command_that_never_exits_is_stopped_by_its_timeout(
    sandbox: Sandbox, command: str, leftovers: list[str]
) -> None:
    with pytest.raises(CommandTimeout) as caught:
        sandbox.run(command, timeout=1)
    assert caught.value.timeout == 1
    assert "timed out after 1s and was stopped" in str(caught.value)
    assert sandbox.history[-1].exit_code is None
    assert sandbox.history[-1].error == "timed out after 1 s"
    # Really gone from the sandbox, not merely abandoned by the client.
    processes = sandbox.run(["ps", "-eo", "args"], check=True).stdout.splitlines()
    for leftover in leftovers:
        assert leftover not in processes


def test_a_timeout_of_zero_or_less_is_refused(sandbox: Sandbox) -> None:
    for timeout in (0, -1):
        with pytest.raises(ValueError, match=f"timeout must be positive, got {timeout}"):
            sandbox.run("true", timeout=timeout)


def test_nothing_is_left_on_the_emulator_by_a_bad_input_run(
    pytester: pytest.Pytester, remote: EmulatorServer, tmp_path: Path
) -> None:
    """The same hostile calls inside a plugin run: every test fails cleanly, every sandbox is
    deleted at the end."""
    pytester.makepyfile(
        test_hostile=textwrap.dedent(
            """
            import pytest
            from pytest_northflank import CommandTimeout, FileTransferError

            def test_nul(nf_sandbox):
                nf_sandbox.run("echo a\\0b")

            def test_missing_upload(nf_sandbox):
                nf_sandbox.upload("no-such-local-file", "x")

            def test_missing_download(nf_sandbox, tmp_path):
                nf_sandbox.download("no-such-remote-file", tmp_path / "x")

            def test_timeout(nf_sandbox):
                nf_sandbox.run("sleep 600", timeout=0.5)
            """
        )
    )
    result = run_pytest(pytester)
    result.assert_outcomes(failed=4)
    text = error_text(result)
    assert "ArgumentError: the command contains a NUL character" in text
    assert "FileTransferError: upload of no-such-local-file to nft-" in text
    assert "FileTransferError: download of nft-" in text
    assert "CommandTimeout: command 'sleep 600' timed out after 0.5s and was stopped" in text
    assert "sandboxes: 4 created, 4 deleted, 0 kept" in result.stdout.str()
    assert services_left(remote) == []
    assert PROJECT in result.stdout.str()
