"""Upload a project directory and run its own test suite inside the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_northflank import Sandbox

PROJECT = Path(__file__).parent / "sample_project"


@pytest.mark.nf_sandbox(image="python:3.12-slim", env={"PYTHONDONTWRITEBYTECODE": "1"})
def test_the_projects_tests_pass_in_the_sandbox(nf_sandbox: Sandbox, tmp_path: Path) -> None:
    nf_sandbox.upload(PROJECT, "project")
    result = nf_sandbox.run(
        "python3 -m unittest discover -s tests -t . -v > report.txt 2>&1; echo $?",
        cwd="project",
        timeout=120,
    )
    nf_sandbox.download("project/report.txt", tmp_path / "report.txt")
    report = (tmp_path / "report.txt").read_text()
    assert result.stdout == "0\n", report
    assert "Ran 3 tests" in report
    assert report.count("... ok") == 3
