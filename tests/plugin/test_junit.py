"""JUnit XML, what CI dashboards read: each test case that used a sandbox carries its
``northflank.*`` properties, and a failure carries the sandbox section with secrets masked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.usefixtures("clean_environment")

SECRET = "s3cr3t-value-for-junit-0123456789"


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def test_junit_cases_carry_sandbox_properties_and_the_section(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUNIT_SECRET", SECRET)  # not in the test's source, which pytest shows
    pytester.makepyfile(
        test_ci="""
        import os
        import pytest

        def test_passes(nf_sandbox):
            assert nf_sandbox.run("true").ok

        @pytest.mark.nf_sandbox(env={"API_TOKEN": os.environ["JUNIT_SECRET"]})
        def test_fails(nf_sandbox):
            nf_sandbox.run('echo "$API_TOKEN"; echo marker-command')
            assert False, "boom"

        def test_without_sandbox():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=report.xml")
    result.assert_outcomes(passed=2, failed=1)
    xml = (pytester.path / "report.xml").read_text()
    assert SECRET not in xml
    cases = {case.get("name"): case for case in ET.fromstring(xml).iter("testcase")}

    for name in ("test_passes", "test_fails"):
        props = properties(cases[name])
        assert props["northflank.sandbox"].startswith("nft-")
        assert props["northflank.service_id"]
        assert props["northflank.dashboard_url"].startswith("http://127.0.0.1:")
        assert props["northflank.dashboard_url"].endswith(props["northflank.service_id"])
        assert float(props["northflank.provisioning_s"]) >= 0
    assert properties(cases["test_without_sandbox"]) == {}

    failure = cases["test_fails"].find("failure")
    assert failure is not None
    text = failure.text or ""
    assert "northflank sandbox" in text
    assert "commands run by this test" in text
    assert "marker-command" in text
    assert "API_TOKEN" in text
    # The terminal shows the same section once.
    assert result.stdout.str().count("- northflank sandbox -") == 1
