"""core.dataset state file: statuses and history, the lock (two processes, stale, held too long),
damaged files set aside and explained."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dataset_fixtures import make_flat

from core.dataset import (
    STATUSES,
    DamagedStateError,
    add_time,
    open_dataset,
    read_state,
    set_case,
    set_figures,
    update_state,
)
from core.dataset.state import LOCK_STALE_S, StateLock, lock_path
from core.errors import InputError


def test_statuses_reviewer_history_and_reopen(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=3))
    assert read_state(ds).case("c0").status == "todo"
    set_case(ds, "c0", status="in_review", reviewer="ann")
    set_case(ds, "c0", status="done", note="clean")
    set_case(ds, "c0", status="in_review", who="bob")  # a done case reopened
    add_time(ds, "c0", 30.5)
    add_time(ds, "c0", 12.0)
    set_figures(ds, "c0", "unet", {"td": 91.0, "bd": 85.5, "dsc": 90.0, "precision": 93.0}, keys={"unet": "k1"})
    set_figures(ds, "c0", "nnunet", {"td": 95.0, "bd": 90.0, "dsc": 92.0, "precision": 94.0})

    again = read_state(open_dataset(ds.root))  # as after a restart
    c0 = again.cases["c0"]
    assert c0.status == "in_review" and c0.reviewer == "ann" and c0.note == "clean"
    assert c0.seconds_spent == pytest.approx(42.5)
    assert set(c0.figures) == {"unet", "nnunet"} and c0.figures["unet"]["bd"] == 85.5 and c0.keys == {"unet": "k1"}
    assert [(h["from"], h["to"], h["reviewer"]) for h in c0.history] == [
        ("todo", "in_review", "ann"),
        ("in_review", "done", "ann"),
        ("done", "in_review", "bob"),
    ]
    assert all(h["time"] for h in c0.history) and c0.updated
    assert again.cases["c1"].status == "todo"  # every case has an entry
    data = json.loads(ds.state_path.read_text())
    assert data["format"] == "airway-studio-dataset" and data["version"] == 1


def test_set_case_refuses_unknown_things(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    with pytest.raises(InputError, match="Unknown status 'finished'"):
        set_case(ds, "c0", status="finished")
    with pytest.raises(InputError, match="Unknown case field"):
        set_case(ds, "c0", colour="red")
    with pytest.raises(InputError, match="No case 'zz'"):
        set_case(ds, "zz", status="done")
    assert not ds.state_path.exists()
    assert set(STATUSES) == {"todo", "in_review", "done", "flagged"}


def _hammer(root: str, cases: list[str], n: int, tag: str) -> None:
    ds = open_dataset(root)
    for i in range(n):
        cid = cases[i % len(cases)]
        # every update must survive: the note of a case collects all of them (read-modify-write under the lock)
        update_state(ds, lambda st, cid=cid, i=i: setattr(st.case(cid), "note", st.case(cid).note + f"{tag}{i};"))
        set_case(ds, cid, reviewer=tag)


@pytest.mark.slow  # two fresh interpreters: about 4 s
def test_two_processes_never_lose_an_update(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=3))
    ctx = multiprocessing.get_context("spawn")
    # A works on c0 and c1, B on c1 and c2: the same case and different cases at once
    a = ctx.Process(target=_hammer, args=(str(ds.root), ["c0", "c1"], 50, "A"))
    b = ctx.Process(target=_hammer, args=(str(ds.root), ["c1", "c2"], 50, "B"))
    a.start()
    b.start()
    a.join(180)
    b.join(180)
    assert a.exitcode == 0 and b.exitcode == 0
    state = read_state(ds)
    notes = "".join(state.case(c).note for c in ("c0", "c1", "c2"))
    found = {t for t in notes.split(";") if t}
    assert found == {f"A{i}" for i in range(50)} | {f"B{i}" for i in range(50)}
    assert state.case("c0").reviewer == "A" and state.case("c2").reviewer == "B"
    assert not lock_path(ds.state_path).exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_of_a_dead_process_is_taken_over_and_explained(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    dead = _dead_pid()
    lock = lock_path(ds.state_path)
    lock.write_text(json.dumps({"user": "carol", "host": socket.gethostname(), "pid": dead, "since": time.time()}))
    set_case(ds, "c0", status="done")
    assert read_state(ds).case("c0").status == "done"
    assert any("carol" in n and f"process {dead}" in n and "ended" in n for n in ds.notes)
    assert not lock.exists()


def test_old_lock_of_another_host_is_taken_over(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    lock = lock_path(ds.state_path)
    since = time.time() - LOCK_STALE_S - 60
    lock.write_text(json.dumps({"user": "dan", "host": "far-away", "pid": 1, "since": since}))
    set_case(ds, "c1", status="flagged")
    assert read_state(ds).case("c1").status == "flagged"
    assert any("dan on far-away" in n and "held for" in n for n in ds.notes)


def test_live_lock_held_too_long_names_its_holder(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    lock = lock_path(ds.state_path)
    # this very process, alive, holds it (as a hung window would)
    lock.write_text(
        json.dumps({"user": "erin", "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    )
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        update_state(ds, lambda st: None, wait_s=0.3)
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert "erin on" in text and f"process {os.getpid()}" in text and "locked" in text
    assert lock.exists()  # a live holder's lock is left alone


def test_lock_is_exclusive_in_one_process_too(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    with StateLock(ds.state_path):
        with pytest.raises(InputError, match="locked by"):
            StateLock(ds.state_path, wait_s=0.1).acquire()
    with StateLock(ds.state_path, wait_s=0.1):
        pass


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{ not json", "not valid JSON"),
        ("", "empty"),
        ('{"format": "airway-studio-dataset", "version": 1, "cases": {"c0": {"status": "finished"}}}', "status"),
        ('{"format": "something-else", "version": 1}', "format"),
        ('{"format": "airway-studio-dataset", "version": 1, "split": {"train": ["c0"], "test": ["c0"]}}', "two parts"),
    ],
)
def test_damaged_state_is_set_aside_and_explained(tmp_path: Path, content: str, reason: str) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    ds.state_path.write_text(content)
    with pytest.raises(DamagedStateError) as err:
        read_state(ds)
    aside = ds.state_path.with_name("airway_dataset.json.damaged")
    assert err.value.set_aside == aside and aside.read_text() == content
    assert reason in str(err.value) and "set aside as airway_dataset.json.damaged" in str(err.value)
    assert not ds.state_path.exists()
    set_case(ds, "c0", status="done")  # the next change starts a new file; the damaged one stays
    assert read_state(ds).case("c0").status == "done" and aside.exists()


def test_damaged_state_when_opening_is_a_note_and_a_second_copy_is_kept(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "d", n=2)
    (root / "airway_dataset.json.damaged").write_text("older")
    (root / "airway_dataset.json").write_text("[1, 2]")
    ds = open_dataset(root)
    assert any("damaged" in n for n in ds.notes)
    assert (root / "airway_dataset.json.damaged-2").read_text() == "[1, 2]"
    assert (root / "airway_dataset.json.damaged").read_text() == "older"


def test_newer_version_is_left_alone(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    ds.state_path.write_text('{"format": "airway-studio-dataset", "version": 99}')
    with pytest.raises(InputError, match="newer"):
        read_state(ds)
    assert ds.state_path.exists()


def test_unknown_top_level_fields_survive_an_update(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    ds.state_path.write_text('{"format": "airway-studio-dataset", "version": 1, "cases": {}, "future": [1]}')
    set_case(ds, "c0", status="done")
    assert json.loads(ds.state_path.read_text())["future"] == [1]


def test_a_reader_never_sets_aside_a_good_file_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.dataset.state as state_module

    ds = open_dataset(make_flat(tmp_path / "d", n=2))
    set_case(ds, "c0", status="done")  # a good file
    real = state_module._read_raw
    calls = []

    def first_damaged(path: Path) -> bytes | None:
        calls.append(path)
        # the first read saw a damaged file; another process rewrote it (valid) before the set-aside
        return b'{"format": "airway-studio-dataset", "version": "x"}' if len(calls) == 1 else real(path)

    monkeypatch.setattr(state_module, "_read_raw", first_damaged)
    assert read_state(ds).case("c0").status == "done"
    assert len(calls) == 2 and not list(ds.root.glob("*.damaged*"))


def test_garbage_lock_and_a_breaker_left_by_a_crash_are_cleared(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    lock = lock_path(ds.state_path)
    lock.write_text("")  # a crash between creating the lock and writing who holds it
    breaker = lock.with_name(lock.name + ".break")
    breaker.write_text("")  # and a crash in the middle of a takeover
    old = time.time() - 60
    os.utime(lock, (old, old))
    os.utime(breaker, (old, old))
    t0 = time.monotonic()
    set_case(ds, "c0", status="done")
    assert time.monotonic() - t0 < 10
    assert read_state(ds).case("c0").status == "done"
    assert any("unreadable lock file" in n for n in ds.notes)
    assert not lock.exists() and not breaker.exists()


def test_a_fresh_unreadable_lock_is_waited_for(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    lock_path(ds.state_path).write_text("")  # a live process between create and write
    with pytest.raises(InputError, match="locked by another process"):
        update_state(ds, lambda st: None, wait_s=0.2)


def test_a_writer_killed_while_holding_the_lock_does_not_block_the_next(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    root = Path(__file__).resolve().parents[1]
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from core.dataset.state import StateLock\n"
        f"StateLock(Path({str(ds.state_path)!r})).acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"  # killed mid-update: the lock stays behind
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120)
    assert r.returncode == -9 and lock_path(ds.state_path).exists()
    set_case(ds, "c0", status="done")
    assert read_state(ds).case("c0").status == "done"
    assert any("that process has ended" in n for n in ds.notes)


def test_a_value_json_cannot_hold_is_refused_and_nothing_written(tmp_path: Path) -> None:
    ds = open_dataset(make_flat(tmp_path / "d", n=1))
    set_case(ds, "c0", status="done")
    before = ds.state_path.read_bytes()
    with pytest.raises(InputError, match="cannot be stored"):
        set_case(ds, "c0", view={"cursor": object()})
    with pytest.raises(InputError, match="cannot be stored"):
        set_case(ds, "c0", view={"zoom": float("nan")})
    assert ds.state_path.read_bytes() == before and not lock_path(ds.state_path).exists()
