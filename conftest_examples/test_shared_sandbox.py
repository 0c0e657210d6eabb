"""One session sandbox shared by several tests: cheap, but the tests see each other's files."""

from __future__ import annotations

import pytest

from pytest_northflank import Sandbox

TEXTS = {"short": "one two three", "long": "the quick brown fox jumps over the lazy dog"}


@pytest.mark.parametrize("label", sorted(TEXTS))
def test_each_test_works_in_its_own_directory(shared_box: Sandbox, label: str) -> None:
    shared_box.write_text(f"runs/{label}/input.txt", TEXTS[label])
    result = shared_box.run(["../../tools/wordcount", "input.txt"], cwd=f"runs/{label}")
    assert result.check().stdout.split()[0] == str(len(TEXTS[label].split()))


def test_the_tool_installed_once_is_there_for_everyone(shared_box: Sandbox) -> None:
    assert shared_box.exists("tools/wordcount")
    assert shared_box.run(["sh", "-c", "echo a b | tools/wordcount"]).stdout.strip() == "2"
