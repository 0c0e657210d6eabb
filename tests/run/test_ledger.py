import subprocess
import sys
from pathlib import Path

from pytest_northflank.run.ledger import Ledger


def test_replay_gives_each_service_its_latest_state(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "run" / "ledger.jsonl")
    ledger.record_intent(name="a", project_id="p", worker_id="gw0", owner="gw0:1")
    ledger.record_intent(name="b", project_id="p", worker_id="gw1", owner="gw1:2", shared=True)
    ledger.record_created("a", "a-id")
    ledger.record_created("b", "b-id")
    ledger.record_deleted("a")
    states = {e.name: (e.state, e.service_id, e.shared) for e in ledger.entries()}
    assert states == {"a": ("deleted", "a-id", False), "b": ("created", "b-id", True)}
    assert [e.name for e in ledger.alive()] == ["b"]
    assert ledger.alive(owner="gw0:1") == []
    assert ledger.alive(include_shared=False) == []


def test_a_line_cut_short_by_a_killed_writer_does_not_hide_the_others(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record_intent(name="a", project_id="p", worker_id="m", owner="m:1")
    with ledger.path.open("a") as stream:
        stream.write('{"op":"created","na')
    ledger.record_intent(name="b", project_id="p", worker_id="m", owner="m:1")
    assert [e.name for e in ledger.alive()] == ["a", "b"]


def test_concurrent_writers_lose_no_record(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pytest_northflank.run.ledger import Ledger\n"
        "ledger = Ledger(Path(sys.argv[1]))\n"
        "for i in range(50):\n"
        "    ledger.record_intent(name=f'{sys.argv[2]}-{i}', project_id='p',"
        " worker_id=sys.argv[2], owner=sys.argv[2])\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"w{n}"]) for n in range(4)
    ]
    for writer in writers:
        assert writer.wait(60) == 0
    assert len(Ledger(path).entries()) == 200


def test_a_handover_moves_a_service_to_its_new_owner(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record_intent(name="a", project_id="p", worker_id="gw0", owner="gw0-x:1")
    ledger.record_created("a", "a-id")
    ledger.record_handover("a", worker_id="gw1", owner="gw1-y:2")
    (entry,) = ledger.alive()
    assert (entry.worker_id, entry.owner, entry.state, entry.service_id) == (
        "gw1",
        "gw1-y:2",
        "created",
        "a-id",
    )
    assert ledger.alive(owner="gw0-x:1") == []


def test_a_refused_create_is_not_alive_and_keeps_its_reason(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record_intent(name="a", project_id="p", worker_id="m", owner="m:1")
    ledger.record_intent(name="b", project_id="p", worker_id="m", owner="m:1")
    ledger.record_refused("a", "400 'nf-compute-9999' is not a deployment plan")
    ledger.record_deleted("b", found=False)
    entries = {entry.name: entry for entry in ledger.entries()}
    assert entries["a"].state == "refused"
    assert entries["a"].extra == {"reason": "400 'nf-compute-9999' is not a deployment plan"}
    assert (entries["b"].state, entries["b"].extra) == ("deleted", {"found": False})
    assert ledger.alive() == []
