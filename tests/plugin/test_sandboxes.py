"""Sandboxes end to end on the embedded emulator: fixtures, scopes, markers, the Sandbox API,
failure sections, keep modes, provisioning errors and the summary. Each case is a real pytest
run in a subprocess (the emulator runs threads and namespaces)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def summary(result: pytest.RunResult) -> str:
    text = result.stdout.str()
    return text[text.index("-- northflank --") :] if "-- northflank --" in text else ""


def test_a_sandbox_runs_commands_and_moves_files(pytester: pytest.Pytester) -> None:
    (pytester.path / "payload").mkdir()
    (pytester.path / "payload" / "a.txt").write_text("alpha\n")
    (pytester.path / "payload" / "sub dir").mkdir()
    (pytester.path / "payload" / "sub dir" / "b.bin").write_bytes(bytes(range(256)))
    pytester.makepyfile(
        test_api="""
        import pytest
        from pathlib import Path
        from pytest_northflank import CommandFailed, CommandTimeout, Sandbox

        def test_run(nf_sandbox):
            assert isinstance(nf_sandbox, Sandbox)
            r = nf_sandbox.run("echo out; echo err >&2; exit 3")
            assert (r.exit_code, r.ok, r.stdout, r.stderr) == (3, False, "out\\n", "err\\n")
            assert r.stdout_bytes == b"out\\n" and r.duration > 0
            assert nf_sandbox.run(["printf", "%s|", "a b", "$X", "*"]).stdout == "a b|$X|*|"
            with pytest.raises(CommandFailed, match="exited with 3"):
                nf_sandbox.run("exit 3", check=True)
            assert nf_sandbox.run("cat", input="fed\\n").stdout == "fed\\n"
            assert nf_sandbox.run("cat", input=b"\\x00\\xff").stdout_bytes == b"\\x00\\xff"
            r = nf_sandbox.run('echo "$A-$B"; pwd', env={"A": "x y", "B": "it's"}, cwd="/tmp")
            assert r.stdout == "x y-it's\\n/tmp\\n"
            with pytest.raises(CommandTimeout):
                nf_sandbox.run("sleep 30", timeout=1)
            assert [h.exit_code for h in nf_sandbox.history][-1] is None

        def test_files(nf_sandbox, tmp_path):
            nf_sandbox.upload(Path("payload"), "up")
            assert nf_sandbox.read_text("up/a.txt") == "alpha\\n"
            assert nf_sandbox.read_bytes("up/sub dir/b.bin") == bytes(range(256))
            nf_sandbox.write_text("deep/new/file.txt", "ünïcode\\n")
            nf_sandbox.write_bytes("deep/raw", b"\\x00\\x01")
            assert nf_sandbox.exists("deep/new/file.txt") and not nf_sandbox.exists("nope")
            nf_sandbox.download("deep", tmp_path / "deep")
            assert (tmp_path / "deep" / "new" / "file.txt").read_text() == "ünïcode\\n"
            assert (tmp_path / "deep" / "raw").read_bytes() == b"\\x00\\x01"
            with pytest.raises(Exception, match="nope"):
                nf_sandbox.read_text("nope")

        @pytest.mark.nf_sandbox(command="sh -c 'echo booted; exec sleep infinity'")
        def test_logs_and_identity(nf_sandbox, nf_client, nf_settings):
            assert "booted" in nf_sandbox.logs()
            service = nf_client.get_service(nf_settings.project_in_use, nf_sandbox.id)
            assert service.name == nf_sandbox.name and nf_sandbox.name.startswith("nft-")
            assert nf_sandbox.dashboard_url.startswith(nf_client.base_url)
            assert nf_sandbox.id in nf_sandbox.dashboard_url

        def test_delete_early(nf_sandbox, nf_client, nf_settings):
            nf_sandbox.delete()
            nf_sandbox.delete()
            listed = {s.id for s in nf_client.list_services(nf_settings.project_in_use)}
            assert nf_sandbox.id not in listed
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=4)
    text = summary(result)
    assert "sandboxes: 4 created, 4 deleted, 0 kept" in text
    assert re.search(r"tests waited for sandboxes: median \d+\.\d\d s, max \d+\.\d\d s", text)
    assert re.search(r"API requests: \d+", text)
    assert re.search(r"embedded emulator at http://127\.0\.0\.1:\d+, isolation \w+", text)


def test_a_timed_out_command_keeps_its_partial_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_timeout="""
        import pytest
        from pytest_northflank import CommandTimeout

        def test_partial_output(nf_sandbox):
            command = "echo start; echo warming >&2; sleep 3611"
            with pytest.raises(CommandTimeout) as caught:
                nf_sandbox.run(command, timeout=1)
            error = caught.value
            assert error.timeout == 1
            partial = error.result
            assert partial.command == command  # as written, not the wrapped argv
            assert partial.exit_code is None and not partial.ok
            assert "start" in partial.stdout and partial.stdout_bytes == b"start\\n"
            assert partial.stderr == "warming\\n"
            assert partial.sandbox == nf_sandbox.name
            message = str(error)
            assert message.startswith(
                f"command {command!r} timed out after 1s and was stopped in sandbox "
                f"{nf_sandbox.name}\\n"
            )
            assert "--- end of stdout (partial) ---\\nstart\\n" in message
            assert message.endswith("--- end of stderr (partial) ---\\nwarming")
            assert nf_sandbox.history[-1].exit_code is None
            assert nf_sandbox.history[-1].error == "timed out after 1 s"
            # Really stopped in the sandbox, not merely abandoned by the client.
            processes = nf_sandbox.run(["ps", "-eo", "args"], check=True).stdout.splitlines()
            assert "sleep 3611" not in processes

        def test_no_output_and_masking(nf_sandbox):
            with pytest.raises(CommandTimeout, match=r"stopped in sandbox \\S+ \\(no output\\)$"):
                nf_sandbox.run("sleep 3612", timeout=0.5)
            with pytest.raises(CommandTimeout) as caught:
                nf_sandbox.run('echo "using $API_KEY"; sleep 3613', timeout=0.5,
                               env={"API_KEY": "s3cret-value-42"})
            assert "s3cret-value-42" not in str(caught.value)
            assert "--- end of stdout (partial) ---\\nusing ***" in str(caught.value)
            assert caught.value.result.stdout == "using s3cret-value-42\\n"  # data stays exact

        def test_a_timeout_fails_the_test_showing_the_output(nf_sandbox):
            nf_sandbox.run("echo 'got this far'; sleep 3614", timeout=0.5)
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    text = result.stdout.str()
    command = "\"echo 'got this far'; sleep 3614\""
    assert f"CommandTimeout: command {command} timed out after 0.5s and was stopped" in text
    assert "--- end of stdout (partial) ---" in text
    assert "got this far" in text


def test_bad_arguments_raise_an_argument_error_before_anything_is_sent(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_arguments="""
        import pytest
        from pytest_northflank import ArgumentError, ConfigError, NorthflankError

        def refused(call, message):
            with pytest.raises(ArgumentError) as caught:
                call()
            assert str(caught.value) == message
            assert isinstance(caught.value, ConfigError)
            assert isinstance(caught.value, NorthflankError)
            assert isinstance(caught.value, ValueError)

        def test_logs(nf_sandbox, monkeypatch):
            asked = []
            spy = lambda *args, **kwargs: asked.append(args) or []
            monkeypatch.setattr(nf_sandbox._client, "fetch_logs", spy)
            for lines in (0, -3, True, "10", 2.5):
                refused(lambda: nf_sandbox.logs(lines=lines),
                        f"lines must be a whole number of at least 1, got {lines!r}")
            assert asked == []
            nf_sandbox.logs(lines=1)
            assert len(asked) == 1

        def test_run(nf_sandbox):
            before = list(nf_sandbox.history)
            refused(lambda: nf_sandbox.run("true", timeout=0),
                    "timeout must be positive, got 0 (seconds)")
            refused(lambda: nf_sandbox.run("true", timeout=-1),
                    "timeout must be positive, got -1 (seconds)")
            refused(lambda: nf_sandbox.run("true", timeout=float("nan")),
                    "timeout must be a finite number of seconds, got nan (None: no limit)")
            refused(lambda: nf_sandbox.run("cat", input=42),
                    "input must be str or bytes, got int (it is fed to stdin)")
            refused(lambda: nf_sandbox.run("true", env={"1X": "v"}),
                    "'1X' is not an environment variable name")
            assert nf_sandbox.history == before  # nothing ran
            assert nf_sandbox.run("cat", input=bytearray(b"ok"), timeout=30).stdout == "ok"
        """
    )
    run(pytester).assert_outcomes(passed=2)


SCOPES = """
import pytest

IDS = {}

def alive(nf_client, nf_settings):
    return {s.id for s in nf_client.list_services(nf_settings.project_in_use)}

@pytest.fixture(scope="module")
def module_box(nf_sandbox_factory):
    return nf_sandbox_factory(env={"WHO": "module"})

@pytest.fixture(scope="class")
def class_box(nf_sandbox_factory):
    box = nf_sandbox_factory()
    yield box
    # The fixture's own teardown still finds its sandbox alive; deletion comes after.
    assert box.run("true").ok

def test_first(module_box, nf_sandbox, nf_sandbox_factory, nf_sandbox_session, nf_client,
               nf_settings):
    own = nf_sandbox_factory(env={"WHO": "own"})
    IDS.update(module=module_box.id, function=nf_sandbox.id, own=own.id,
               session=nf_sandbox_session.id)
    assert {module_box.id, nf_sandbox.id, own.id} <= alive(nf_client, nf_settings)
    assert module_box.run('echo "$WHO"').stdout == "module\\n"
    assert own.run('echo "$WHO"').stdout == "own\\n"
    assert len({module_box.id, nf_sandbox.id, own.id, nf_sandbox_session.id}) == 4

def test_second(module_box, nf_sandbox_session, nf_client, nf_settings):
    now = alive(nf_client, nf_settings)
    assert module_box.id == IDS["module"] and module_box.id in now
    assert nf_sandbox_session.id == IDS["session"]
    assert IDS["function"] not in now and IDS["own"] not in now

class TestClassScope:
    def test_a(self, class_box):
        IDS["class"] = class_box.id

    def test_b(self, class_box, nf_client, nf_settings):
        assert class_box.id == IDS["class"]

def test_after_the_class(nf_client, nf_settings):
    assert IDS["class"] not in alive(nf_client, nf_settings)

@pytest.fixture
def makes_one_in_its_teardown(nf_sandbox_factory):
    yield
    # No scope is being set up any more: the sandbox is released at the end of the session.
    IDS["late"] = nf_sandbox_factory().id

def test_late_maker(makes_one_in_its_teardown):
    pass

def test_late_one_still_alive(nf_client, nf_settings):
    assert IDS["late"] in alive(nf_client, nf_settings)
"""

AFTER_MODULE = """
from test_scopes import IDS, alive

def test_module_box_is_gone(nf_client, nf_settings):
    now = alive(nf_client, nf_settings)
    assert IDS["module"] not in now
    assert IDS["session"] in now
"""


def test_each_sandbox_lives_as_long_as_the_scope_that_asked_for_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_scopes=SCOPES, test_scopes_z_after=AFTER_MODULE)
    result = run(pytester)
    result.assert_outcomes(passed=8)
    assert "sandboxes: 6 created, 6 deleted, 0 kept" in summary(result)


def test_the_closest_marker_wins_and_reaches_the_service(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_markers="""
        import pytest

        pytestmark = pytest.mark.nf_sandbox(env={"LEVEL": "module"})

        def test_module_level(nf_sandbox):
            assert nf_sandbox.run('echo "$LEVEL"').stdout == "module\\n"

        @pytest.mark.nf_sandbox(env={"LEVEL": "class"})
        class TestLevels:
            def test_class_level(self, nf_sandbox):
                assert nf_sandbox.run('echo "$LEVEL"').stdout == "class\\n"

            @pytest.mark.nf_sandbox(image="alpine:3.20", plan="nf-compute-50",
                                    tags=["spot-workload"], env={"LEVEL": "function"})
            def test_function_level(self, nf_sandbox, nf_client, nf_settings):
                assert nf_sandbox.run('echo "$LEVEL"').stdout == "function\\n"
                service = nf_client.get_service(nf_settings.project_in_use, nf_sandbox.id)
                assert (service.image, service.plan) == ("alpine:3.20", "nf-compute-50")
                assert service.tags == ["spot-workload"]
                assert (nf_sandbox.image, nf_sandbox.plan) == ("alpine:3.20", "nf-compute-50")

        def test_settings_apply_without_marker(nf_sandbox_factory, nf_client, nf_settings):
            box = nf_sandbox_factory()
            assert "main-from-settings" in box.logs()
            service = nf_client.get_service(nf_settings.project_in_use, box.id)
            assert (service.image, service.plan) == ("debian:12", "nf-compute-10")
            assert service.tags == ["a"]
        """
    )
    result = run(
        pytester,
        "--nf-image=debian:12",
        "--nf-plan=nf-compute-10",
        "--nf-tag=a",
        "--nf-command=sh -c 'echo main-from-settings; exec sleep infinity'",
    )
    result.assert_outcomes(passed=4)


def test_a_conftest_can_override_the_settings_layer(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def nf_settings(nf_settings):
            return nf_settings.model_copy(update={"image": "python:3.12-slim", "tags": ("ci",)})
        """
    )
    pytester.makepyfile(
        """
        def test_box(nf_sandbox, nf_client, nf_settings):
            service = nf_client.get_service(nf_settings.project_in_use, nf_sandbox.id)
            assert (service.image, service.tags) == ("python:3.12-slim", ["ci"])
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_factory_keywords_are_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_factory="""
        import pytest
        from pytest_northflank import ConfigError

        def test_bad_keyword_type(nf_sandbox_factory):
            with pytest.raises(ConfigError, match=r"in test_factory.py::test_bad_keyword_type: "
                               r"ready_timeout='5' is wrong"):
                nf_sandbox_factory(ready_timeout="5")

        @pytest.fixture(scope="module")
        def web(nf_sandbox_factory):
            return nf_sandbox_factory(keep="sometimes")

        def test_bad_keep_in_fixture(web):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ConfigError: nf_sandbox_factory(...) in fixture 'web': keep='sometimes' is wrong*"]
    )


def test_unicode_and_long_parametrized_ids_give_valid_service_names(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_names="""
        import pytest

        @pytest.mark.parametrize("value", ["x" * 300, "Ünïcødé ✓ 名前", "--", ""],
                                 ids=["x" * 300, "Ünïcødé ✓ 名前", "--", ""])
        def test_named(nf_sandbox, value):
            assert len(nf_sandbox.name) <= 54
            assert nf_sandbox.run("true").ok
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=4)


FAILING = """
import pytest

@pytest.mark.nf_sandbox(command="sh -c 'echo booted-ok; exec sleep infinity'")
def test_fails(nf_sandbox):
    nf_sandbox.run("echo prepared")
    nf_sandbox.run("ls /no-such-dir")
    assert nf_sandbox.run("false").ok, "the build failed"

def test_passes(nf_sandbox):
    assert nf_sandbox.run("true").ok
"""


def test_a_failed_test_shows_its_sandbox_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_failing=FAILING)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- northflank sandbox -*",
            "sandbox nft-*-test-fails (service nft-*, project default-project, image ubuntu:22.04,"
            " plan nf-compute-20)",
            "dashboard: http://127.0.0.1:*/v1/projects/default-project/services/nft-*",
            "commands run by this test (exit code, seconds):",
            "  [[]exit 0, *s[]] echo prepared",
            "  [[]exit 2, *s[]] ls /no-such-dir",
            "  [[]exit 1, *s[]] false",
            "last * log lines of its main process:",
            "  booted-ok",
        ]
    )
    # Only the failed test gets a section.
    assert result.stdout.str().count("- northflank sandbox -") == 1


def test_the_failure_section_covers_shared_sandboxes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shared="""
        def test_ok(nf_sandbox_session):
            nf_sandbox_session.run("echo from-the-first-test")

        def test_fails(nf_sandbox_session):
            nf_sandbox_session.run("echo from-the-second-test")
            assert False
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- northflank sandbox -*",
            "sandbox nft-*-session *",
            "  [[]exit 0, *s[]] echo from-the-second-test",
            "(1 commands were run in it by other tests or fixtures)",
        ]
    )
    result.stdout.no_fnmatch_line("*exit 0*echo from-the-first-test")


KEEP_SUITE = """
import pytest

IDS = {}

def alive(nf_client, nf_settings):
    return {s.id for s in nf_client.list_services(nf_settings.project_in_use)}

def test_1_fails(nf_sandbox):
    IDS["failed"] = nf_sandbox.id
    assert False

def test_2_passes(nf_sandbox):
    IDS["passed"] = nf_sandbox.id

def test_3_check(nf_client, nf_settings):
    now = alive(nf_client, nf_settings)
    print("ALIVE", IDS["failed"] in now, IDS["passed"] in now)
"""


@pytest.mark.parametrize(
    ("args", "failed_kept", "passed_kept", "counts"),
    [
        ((), False, False, "2 created, 2 deleted, 0 kept"),
        (("--nf-keep=on-failure",), True, False, "2 created, 1 deleted, 1 kept"),
        (("--nf-keep=always",), True, True, "2 created, 0 deleted, 2 kept"),
    ],
)
def test_keep_modes(
    pytester: pytest.Pytester,
    args: tuple[str, ...],
    failed_kept: bool,
    passed_kept: bool,
    counts: str,
) -> None:
    pytester.makepyfile(test_keep=KEEP_SUITE)
    result = run(pytester, "-s", *args)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([f"*ALIVE {failed_kept} {passed_kept}"])
    text = summary(result)
    assert f"sandboxes: {counts}" in text
    if failed_kept:
        assert re.search(r"kept \d sandbox(es)? \(run [a-z0-9]+\):", text)
        assert "failed: test_keep.py::test_1_fails" in text
        assert "The embedded emulator stops with pytest" in text
    else:
        assert "kept " not in text.replace("0 kept", "")


def test_marker_keep_overrides_the_setting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_keep_marker="""
        import pytest

        @pytest.mark.nf_sandbox(keep="always")
        def test_kept(nf_sandbox):
            pass

        def test_deleted(nf_sandbox):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2)
    text = summary(result)
    assert "sandboxes: 2 created, 1 deleted, 1 kept" in text
    assert "kept as asked" in text


@pytest.mark.parametrize("where", ["marker", "option"])
def test_a_readiness_timeout_says_what_happened_and_deletes_the_sandbox(
    pytester: pytest.Pytester, where: str
) -> None:
    marker = "@pytest.mark.nf_sandbox(ready_timeout=0.5)" if where == "marker" else ""
    pytester.makepyfile(
        test_slow=f"""
        import pytest

        {marker}
        def test_slow(nf_sandbox):
            pass
        """
    )
    timeout = ["--nf-ready-timeout=0.5"] if where == "option" else []
    result = run(pytester, "--nf-emulator-ready-delay=30", *timeout)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ReadyTimeout: sandbox nft-*-test-slow (service nft-* in project default-project) "
            "did not become ready: it was not ready within 0.5 s; last status *, reason *",
            "*A slow cluster needs a longer wait: --nf-ready-timeout, ini nf_ready_timeout, or "
            "@pytest.mark.nf_sandbox(ready_timeout=...).",
            "*The sandbox was deleted.",
        ]
    )
    assert "sandboxes: 1 created, 1 deleted, 0 kept, 1 never became ready" in summary(result)


def test_directory_isolation_on_request(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_box(nf_sandbox):
            assert nf_sandbox.run("pwd").stdout.strip() != "/"
        """
    )
    result = run(pytester, "--nf-emulator-isolation=directory")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "northflank: backend=emulator * isolation=directory *",
            "embedded emulator at http://127.0.0.1:*, isolation directory (*)",
        ]
    )


def test_a_long_wait_shows_progress_and_a_short_one_does_not(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest_northflank.provisioning.provisioner as provisioning

        provisioning.PROGRESS_AFTER = 0.3  # instead of 10 s, to keep this test quick
        """
    )
    pytester.makepyfile("def test_one(nf_sandbox): pass")
    slow = run(pytester, "--nf-emulator-ready-delay=1.5")
    slow.assert_outcomes(passed=1)
    slow.stdout.fnmatch_lines(
        ["northflank: waiting for sandbox nft-*-test-one: * after * s (ready timeout 120 s)"]
    )
    quick = run(pytester)
    quick.assert_outcomes(passed=1)
    quick.stdout.no_fnmatch_line("*waiting for sandbox*")


def test_xdist_workers_report_to_the_controller(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_failing=FAILING)
    pytester.makepyfile(
        test_more="""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_box(nf_sandbox, n):
            assert nf_sandbox.run(f"echo {n}").stdout == f"{n}\\n"
        """
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*- northflank sandbox -*", "  [[]exit 1, *s[]] false"])
    assert "sandboxes: 5 created, 5 deleted, 0 kept" in summary(result)
    # The workers share one emulator process, as they would share the real API.
    assert re.search(
        r"embedded emulator at http://127\.0\.0\.1:\d+, isolation \w+", summary(result)
    )
    # Two workers, one run id: every service name carries the same run.
    runs = set(re.findall(r"nft-([a-z0-9]{6})-w\d+-", result.stdout.str()))
    assert len(runs) == 1


def test_the_example_suite_passes(pytester: pytest.Pytester) -> None:
    source = Path(__file__).parents[2] / "conftest_examples"
    shutil.copytree(source, pytester.path / "conftest_examples")
    result = run(pytester, "-p", "northflank", "conftest_examples")
    result.assert_outcomes(passed=12)
    assert "0 kept" in summary(result)
