import json
import stat
from pathlib import Path

from pytest_northflank.run.files import replace_json


def test_replace_json_creates_parents_replaces_whole_files_and_leaves_no_scratch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run" / "state.json"
    replace_json(path, {"n": 1})
    replace_json(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_file_holding_a_secret_is_private_from_its_creation(tmp_path: Path) -> None:
    path = tmp_path / "emulator.json"
    replace_json(path, {"token": "t"}, mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
