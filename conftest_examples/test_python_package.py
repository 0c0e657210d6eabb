"""Install a small Python package inside a sandbox and run it (no internet needed)."""

from __future__ import annotations

from pathlib import Path

from pytest_northflank import Sandbox


def test_install_the_wheel_and_run_it(python_box: Sandbox, greet_wheel: Path) -> None:
    python_box.upload(greet_wheel, f"dist/{greet_wheel.name}")
    python_box.run(
        ["python3", "-m", "pip", "install", "--no-index", "--root-user-action=ignore",
         "--target", "site", f"dist/{greet_wheel.name}"],
        check=True,
    )  # fmt: skip
    result = python_box.run(["python3", "-m", "greet", "sandbox"], env={"PYTHONPATH": "site"})
    assert result.check().stdout == "hello, sandbox\n"


def test_run_the_source_tree_straight_from_pythonpath(python_box: Sandbox) -> None:
    python_box.upload(Path(__file__).parent / "greet_src", "src")
    code = "import greet; print(greet.__version__, greet.greet('src'))"
    result = python_box.run(["python3", "-c", code], env={"PYTHONPATH": "src"}, check=True)
    assert result.stdout == "0.1.0 hello, src\n"
