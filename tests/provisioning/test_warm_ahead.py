"""Warm-ahead end to end: pytest runs in a subprocess, on the embedded emulator or on an
emulator acting as the remote API (so the services left behind can be listed afterwards)."""

from __future__ import annotations

import itertools
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from pytest_northflank.client import NorthflankClient
from pytest_northflank.provisioning.depth import AUTO_CAP

if TYPE_CHECKING:
    from pytest_northflank.emulator import EmulatorServer

PROJECT = "default-project"

# Each test writes down its sandbox and the sandboxes made ahead that exist by the end of its
# body (waiting until as many as warm-ahead should have started show up: EXPECT_AHEAD, or from
# test N on the K of EXPECT_AHEAD_FROM="N:K").
RECORDING_CONFTEST = """
import json, os, time

import pytest

@pytest.fixture
def record(nf_sandbox, nf_client, nf_settings, request):
    yield
    n = request.node.callspec.params["n"]
    expected = int(os.environ.get("EXPECT_AHEAD", "0"))
    first, _, more = os.environ.get("EXPECT_AHEAD_FROM", "").partition(":")
    if first and n >= int(first):
        expected = int(more)
    deadline = time.monotonic() + 60
    while True:
        ahead = sorted(
            s.name for s in nf_client.list_services(nf_settings.project_in_use)
            if s.name.endswith("-ahead") and s.name != nf_sandbox.name
        )
        wanted = min(expected, int(os.environ["TESTS"]) - 1 - n)
        if len(ahead) >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    with open("record.jsonl", "a") as out:
        line = {"n": request.node.callspec.params["n"], "name": nf_sandbox.name, "ahead": ahead}
        out.write(json.dumps(line) + "\\n")
"""


@pytest.fixture
def api(
    emulator_clean: EmulatorServer, monkeypatch: pytest.MonkeyPatch, clean_environment: None
) -> EmulatorServer:
    """The emulator as the remote API: token, URL and project in the environment."""
    monkeypatch.setenv("NORTHFLANK_API_TOKEN", emulator_clean.token)
    monkeypatch.setenv("NORTHFLANK_API_BASE_URL", emulator_clean.url)
    monkeypatch.setenv("NORTHFLANK_PROJECT_ID", PROJECT)
    return emulator_clean


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def summary(result: pytest.RunResult) -> str:
    text = result.stdout.str()
    return text[text.index("-- northflank --") :] if "-- northflank --" in text else ""


def counts(result: pytest.RunResult) -> dict[str, int]:
    text = summary(result)
    created = re.search(r"sandboxes: (\d+) created, (\d+) deleted", text)
    assert created is not None, text
    found = {"created": int(created[1]), "deleted": int(created[2])}
    ahead = re.search(r"warm-ahead: [^;]+; (\d+) made ahead, (\d+) taken by tests, (\d+) del", text)
    if ahead is not None:
        found |= {"made": int(ahead[1]), "taken": int(ahead[2]), "unused": int(ahead[3])}
    return found


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    lines = (pytester.path / "record.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: int(r["n"]))


def services(api: EmulatorServer) -> list[str]:
    with NorthflankClient(api.token, base_url=api.url) as client:
        return [service.name for service in client.list_services(PROJECT)]


def suite(
    pytester: pytest.Pytester,
    tests: int,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fail_at: int | None = None,
) -> None:
    monkeypatch.setenv("TESTS", str(tests))
    pytester.makeconftest(RECORDING_CONFTEST)
    pytester.makepyfile(
        test_suite=f"""
        import pytest

        @pytest.mark.parametrize("n", range({tests}))
        def test_box(nf_sandbox, record, n):
            assert nf_sandbox.run("echo hi").stdout == "hi\\n"
            assert n != {fail_at}, "stops the run"
        """
    )


@pytest.mark.usefixtures("clean_environment")
def test_the_next_sandboxes_are_made_while_earlier_tests_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite(pytester, 4, monkeypatch)
    monkeypatch.setenv("EXPECT_AHEAD", "2")
    result = run(pytester, "--nf-emulator-ready-delay=1", "--nf-warm-ahead=2")
    result.assert_outcomes(passed=4)
    seen = records(pytester)
    # The first test made its own; every later one got a sandbox that already existed while
    # the test before it ran.
    assert not seen[0]["name"].endswith("-ahead")
    for before, after in itertools.pairwise(seen):
        assert after["name"].endswith("-ahead")
        assert after["name"] in before["ahead"]
    # Never more than the depth ahead at once.
    assert [len(r["ahead"]) for r in seen] == [2, 2, 1, 0]
    assert counts(result) == {
        "created": 4, "deleted": 4, "made": 3, "taken": 3, "unused": 0,
    }  # fmt: skip
    assert "warm-ahead: depth 2; 3 made ahead" in summary(result)


@pytest.mark.usefixtures("clean_environment")
def test_auto_depth_starts_at_the_cap_never_exceeds_it_and_cleans_up(
    pytester: pytest.Pytester, api: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Provisioning takes 2 s and each test a fraction of that: auto mode (the default) starts
    # with 8 in the making and, having measured both, keeps ceil(2 s / test time), at most 8.
    api.control.set_ready(delay=2.0)
    suite(pytester, 12, monkeypatch, fail_at=8)
    monkeypatch.setenv("EXPECT_AHEAD", str(AUTO_CAP))
    result = run(pytester, "-x")
    result.assert_outcomes(passed=8, failed=1)
    seen = records(pytester)
    # Test n finds a sandbox made ahead for each later test, as many as the cap allows.
    assert [len(r["ahead"]) for r in seen] == [min(AUTO_CAP, 11 - n) for n in range(9)]
    assert [r["name"].endswith("-ahead") for r in seen] == [False] + [True] * 8
    assert "warm-ahead: auto, reached depth 8 (at most 8 per process)" in summary(result)
    # -x stopped the run after test 8: what was made ahead for 9-11 is deleted, nothing is left.
    assert counts(result) == {
        "created": 12, "deleted": 12, "made": 11, "taken": 8, "unused": 3,
    }  # fmt: skip
    assert services(api) == []


@pytest.mark.usefixtures("clean_environment")
def test_depth_zero_turns_warm_ahead_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite(pytester, 3, monkeypatch)
    result = run(pytester, "--nf-warm-ahead=0")
    result.assert_outcomes(passed=3)
    seen = records(pytester)
    assert [r["ahead"] for r in seen] == [[], [], []]
    assert [r["name"].endswith(f"-test-box-{r['n']}") for r in seen] == [True] * 3
    assert counts(result) == {"created": 3, "deleted": 3}
    assert "warm-ahead" not in summary(result)


@pytest.mark.usefixtures("clean_environment")
def test_each_marker_gets_a_sandbox_made_to_its_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_specs="""
        import pytest

        def check(box, client, settings, image, mode):
            assert client.get_service(settings.project_in_use, box.id).image == image
            assert box.run('echo "$MODE"').stdout == mode + "\\n"

        def test_plain_1(nf_sandbox, nf_client, nf_settings):
            check(nf_sandbox, nf_client, nf_settings, "ubuntu:22.04", "")

        @pytest.mark.nf_sandbox(image="alpine:3.20")
        def test_alpine_1(nf_sandbox, nf_client, nf_settings):
            check(nf_sandbox, nf_client, nf_settings, "alpine:3.20", "")

        @pytest.mark.nf_sandbox(env={"MODE": "x"})
        def test_env(nf_sandbox, nf_client, nf_settings):
            check(nf_sandbox, nf_client, nf_settings, "ubuntu:22.04", "x")

        @pytest.mark.nf_sandbox(image="alpine:3.20", ready_timeout=50)
        def test_alpine_2(nf_sandbox, nf_client, nf_settings):
            check(nf_sandbox, nf_client, nf_settings, "alpine:3.20", "")
            assert nf_sandbox.name.endswith("-ahead")

        def test_plain_2(nf_sandbox, nf_client, nf_settings):
            check(nf_sandbox, nf_client, nf_settings, "ubuntu:22.04", "")
            assert nf_sandbox.name.endswith("-ahead")
        """
    )
    result = run(pytester, "--nf-warm-ahead=4", "--nf-emulator-ready-delay=0.5")
    result.assert_outcomes(passed=5)
    # A ready timeout changes nothing about the service: the second alpine test took one made
    # ahead for it. Every sandbox made ahead went to a test of its spec.
    assert counts(result) == {
        "created": 5, "deleted": 5, "made": 4, "taken": 4, "unused": 0,
    }  # fmt: skip


def test_sandboxes_no_test_took_are_deleted_at_the_end(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    pytester.makepyfile(
        test_stop="""
        import pytest

        def test_a(nf_sandbox):
            assert nf_sandbox.run("true").ok

        @pytest.mark.skipif("1 == 1", reason="decided when it runs")
        def test_b(nf_sandbox):
            pass

        def test_c(nf_sandbox):
            assert False, "stops the run"

        def test_d(nf_sandbox):
            pass
        """
    )
    result = run(pytester, "-x", "--nf-warm-ahead=3")
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    # Made ahead for b (skipped), c and d (never run after -x stopped the run): c took one.
    assert counts(result) == {
        "created": 4, "deleted": 4, "made": 3, "taken": 1, "unused": 2,
    }  # fmt: skip
    assert services(api) == []


def test_xdist_workers_share_what_they_made_ahead(
    pytester: pytest.Pytester, api: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite(pytester, 8, monkeypatch)
    result = run(pytester, "-n", "2", "--nf-warm-ahead=3")
    result.assert_outcomes(passed=8)
    found = counts(result)
    # The workers made what the run needed between them: nothing twice, nothing left over.
    assert (found["created"], found["deleted"], found["unused"]) == (8, 8, 0)
    assert found["made"] == found["taken"] >= 5
    assert services(api) == []


def test_xdist_each_gives_every_worker_its_own_sandboxes(
    pytester: pytest.Pytester, api: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite(pytester, 3, monkeypatch)
    result = run(pytester, "-n", "2", "--dist", "each", "--nf-warm-ahead=2")
    result.assert_outcomes(passed=6)
    assert counts(result) == {
        "created": 6, "deleted": 6, "made": 4, "taken": 4, "unused": 0,
    }  # fmt: skip
    assert services(api) == []


def test_a_rate_limited_run_waits_for_the_quota_and_passes(
    pytester: pytest.Pytester, api: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight requests per 3-second window: far fewer than the suite needs, so it meets 429s.
    api.control.set_rate_limit(8, window_seconds=3.0)
    suite(pytester, 4, monkeypatch)
    result = run(pytester)
    result.assert_outcomes(passed=4)
    assert api.control.state()["rateLimit"]["refused"] >= 1
    api.control.set_rate_limit(None)
    assert services(api) == []
    assert counts(result)["deleted"] == counts(result)["created"]


REFUSED_SUITE = """
import pytest

@pytest.mark.parametrize("n", range({tests}))
def test_box(nf_sandbox, n):
    pass
"""


def requests_seen(api: EmulatorServer) -> int:
    """API requests the emulator answered since its last reset (the control plane aside)."""
    return int(api.control.state()["rateLimit"]["used"])


def test_a_spec_the_api_refuses_is_not_made_ahead_again(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    # A plan that does not exist: every create of this spec meets the same 400.
    runs = {}
    for tests in (1, 10):
        pytester.makepyfile(test_refused=REFUSED_SUITE.format(tests=tests))
        before = requests_seen(api)
        result = run(pytester, "--nf-plan=nf-compute-9999")
        runs[tests] = (requests_seen(api) - before, result)
    (one, _), (ten, result) = runs[1], runs[10]
    # Each test sends its own create (and gets the API's answer); after the first refusal
    # warm-ahead sends none: nine more tests cost exactly nine more requests.
    assert one >= 1
    assert ten - one == 9
    result.assert_outcomes(errors=10)
    refusals = [
        line
        for line in result.stdout.lines
        if line.startswith("E ")
        and "Northflank refused creating sandbox" in line
        and "plan nf-compute-9999 (from option --nf-plan)" in line
    ]
    assert len(refusals) == 10
    # Nothing was created, so nothing was deleted or left behind.
    assert counts(result) == {"created": 0, "deleted": 0}
    assert "left behind" not in summary(result)
    assert services(api) == []


def test_a_transient_create_failure_does_not_stop_warm_ahead(
    pytester: pytest.Pytester, api: EmulatorServer
) -> None:
    # The first test's create meets 503 twice (the client's own retry included): its test
    # errors, but the spec is fine, so the later tests get sandboxes made ahead.
    api.control.fail_next_creates(2, 503, "Service unavailable")
    pytester.makepyfile(test_flaky=REFUSED_SUITE.format(tests=4))
    result = run(pytester, "--nf-warm-ahead=3")
    result.assert_outcomes(passed=3, errors=1)
    assert "503 Service unavailable" in result.stdout.str()
    assert counts(result) == {
        "created": 3, "deleted": 3, "made": 3, "taken": 3, "unused": 0,
    }  # fmt: skip
    # The failed create left only an intent: the end-of-session sweep finds no such service
    # and says nothing about it.
    assert "left behind" not in summary(result)
    assert services(api) == []
