"""The training tab: run-folder reading, settings checks, and the tab driving a trainer process.

Most tab tests drive ``tests/fake_trainer.py`` (schema-conformant events, no
torch, a second per run); one slow test drives the real ``main.py train
--preset quick`` on tiny phantoms.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jobs import run_job_and_wait

from app.training.launch import TrainSettings, check_settings, entry_command, list_presets, resume_args, train_args
from app.training.runs import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    KILLED,
    RUNNING,
    STOPPED,
    Columns,
    EventTail,
    RunHistory,
    conclude_status,
    find_runs,
    format_duration,
    log_tail,
    read_pid_file,
)

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_trainer.py"


def fake_launcher(args: list[str]) -> tuple[str, list[str]]:
    return sys.executable, [str(FAKE), *args]


class DictSettings:
    """The tab's settings store, in memory (the tab only uses get/set)."""

    def __init__(self):
        self.values: dict = {}

    def get(self, key, default=None, type_=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


def make_names_dataset(folder: Path, n: int = 2) -> Path:
    """A dataset layout with placeholder files: enough for the checks and the fake trainer."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i in range(n):
        (folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz").write_bytes(b"")
        (folder / "labelsTr" / f"case_{i:03d}.nii.gz").write_bytes(b"")
    return folder


def ev(kind: str, **fields) -> dict:
    return {"event": kind, "time": 1000.0, "run": "r", **fields}


def step(g: int, stage: int = 1, epoch: int = 0, loss: float | None = 1.0) -> dict:
    return ev(
        "step",
        stage=stage,
        epoch=epoch,
        step=g,
        global_step=g,
        loss=loss,
        loss_enc=0.25,
        loss_dec=0.75,
        lr=0.01,
        patches_per_s=8.0,
    )


# --------------------------------------------------------------------------- #
# Qt-free: events, history, tails
# --------------------------------------------------------------------------- #
def test_history_folds_events_into_series_and_state():
    h = RunHistory()
    h.apply(ev("run_start", config={}, versions={}, device="cpu", world_size=1, resumed=False))
    h.apply(ev("stage", stage=0, name="dice", loss="dice", epochs=2, alpha=0.5, threshold=0.8))
    for g in (1, 2, 3):
        assert h.apply(step(g, stage=0, loss=1.0 / g)) is None  # steps are plotted, not logged
    h.apply(ev("epoch", stage=0, epoch=0, loss=0.6, time_s=3.0, eta_s=3725.0))
    h.apply(ev("validation", stage=0, epoch=0, td=40.0, bd=30.0, dsc=80.0, precision=90.0, cases=2))
    h.apply(ev("stage", stage=1, name="gul", loss="gul", epochs=100, alpha=0.1, threshold=0.8))
    h.apply(step(4, stage=1, loss=None))  # a diverged (NaN) loss arrives as null
    np.testing.assert_array_equal(h.steps.view("x"), [1, 2, 3, 4])
    np.testing.assert_allclose(h.steps.view("loss")[:3], [1.0, 0.5, 1.0 / 3])
    assert np.isnan(h.steps.view("loss")[3])
    assert h.epochs.view("x").tolist() == [3.0]  # epoch points sit at the last step before them
    assert h.validations.view("dsc").tolist() == [80.0]
    assert [(m.stage, m.x) for m in h.stages] == [(0, 0.0), (1, 3.0)]
    assert (h.stage, h.stage_name, h.stage_epochs, h.status) == (1, "gul", 100, RUNNING)
    assert h.eta_now(now=1000.0 + 25.0) == 3700.0  # counts down from the epoch's estimate
    # events without epoch_base (older trainers) count from 0: shown from 1 as everywhere else
    assert h.summary(now=1025.0) == (
        "running · stage 1 (gul) · epoch 1/100 · ETA 1h 01m · validation TD 40.0%, BD 30.0%, DSC 80.0%, precision 90.0%"
    )
    line = h.apply(ev("run_end", status="stopped", best_checkpoint="/r/checkpoints/best.pt"))
    assert h.status == STOPPED and h.best_checkpoint == "/r/checkpoints/best.pt" and "stopped" in line
    assert h.eta_now() is None


def test_resumed_run_drops_repeated_steps():
    h = RunHistory()
    for g in range(1, 11):
        h.apply(step(g, loss=float(g)))
        if g % 5 == 0:
            h.apply(ev("epoch", stage=1, epoch=g // 5 - 1, loss=float(g), time_s=1.0, eta_s=1.0))
    # resumed from the checkpoint of step 5: steps 6.. come again, with new values
    h.apply(ev("run_start", config={}, versions={}, device="cpu", world_size=1, resumed=True))
    h.apply(step(6, loss=60.0))
    assert h.steps.view("x").tolist() == [1, 2, 3, 4, 5, 6]
    assert h.steps.view("loss").tolist() == [1, 2, 3, 4, 5, 60.0]
    assert h.epochs.view("x").tolist() == [5.0]
    assert h.starts == 1 and h.status == RUNNING


def test_columns_grow_by_doubling_and_keep_values():
    c = Columns(("x", "y"), capacity=2)
    for i in range(1000):
        c.append({"x": i, "y": 2 * i})
    assert len(c) == 1000 and c._data.shape[1] == 1024
    np.testing.assert_array_equal(c.view("y"), 2 * np.arange(1000))
    c.truncate(3)
    assert c.view("x").tolist() == [0, 1, 2]


def test_event_tail_reads_complete_lines_only(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # no file yet
    line = json.dumps(step(1)) + "\n"
    path.write_text(line + line[:20])  # a line still being written
    assert [e["global_step"] for e in tail.read_new()] == [1]
    with open(path, "a") as f:
        f.write(line[20:] + "not json\n")
    assert [e["global_step"] for e in tail.read_new()] == [1]
    assert tail.bad_lines == 1 and tail.at_end
    path.write_text(json.dumps(step(7)) + "\n")  # replaced by a new, shorter file
    assert [e["global_step"] for e in tail.read_new()] == [7] and tail.reset


def test_conclude_status_from_events_and_liveness():
    h = RunHistory()
    assert conclude_status(h, process_running=False) == "not started"
    assert conclude_status(h, process_running=False, launched=True) == INTERRUPTED  # died before its first event
    h.apply(step(1))
    assert conclude_status(h, process_running=True) == RUNNING
    assert conclude_status(h, process_running=False) == INTERRUPTED
    h.apply(ev("run_end", status="finished", best_checkpoint=None))
    assert conclude_status(h, process_running=True) == FINISHED  # exiting after run_end


def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 65, 3725)] == ["?", "5s", "1m 05s", "1h 02m"]


def test_fake_trainer_events_follow_the_contract(tmp_path):
    from core.training.events import check_event, read_events

    env = {**os.environ, "FAKE_DELAY_S": "0", "FAKE_EPOCHS": "[1, 1, 1]", "FAKE_STEPS_PER_EPOCH": "2"}
    run = tmp_path / "run"
    subprocess.run(
        [sys.executable, str(FAKE), "train", "--preset", "quick", "--out", str(run)],
        check=True,
        env=env,
        capture_output=True,
        timeout=30,
    )
    events = read_events(run)
    assert [e["event"] for e in events][0] == "run_start" and events[-1]["status"] == "finished"
    assert all(check_event(e) == [] for e in events), [check_event(e) for e in events]


# --------------------------------------------------------------------------- #
# Launch command and settings checks
# --------------------------------------------------------------------------- #
def test_entry_command_from_source_and_frozen(monkeypatch):
    program, args = entry_command(["train", "--out", "R"])
    assert program == sys.executable and args == [str(ROOT / "main.py"), "train", "--out", "R"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert entry_command(["train", "--out", "R"]) == (sys.executable, ["train", "--out", "R"])


def test_train_and_resume_arguments(tmp_path):
    s = TrainSettings(str(tmp_path / "d"), "quick", str(tmp_path / "r"), "cpu")
    if "quick" in list_presets():
        assert train_args(s)[:5] == ["train", "--data", str(tmp_path / "d"), "--preset", "quick"]
    s = TrainSettings("d", str(tmp_path / "c.toml"), "r", "auto")
    assert train_args(s) == ["train", "--data", "d", "--config", str(tmp_path / "c.toml"), "--out", "r"]
    assert resume_args(tmp_path, "cuda:1") == ["train", "--out", str(tmp_path), "--resume", "--device", "cuda:1"]


def test_check_settings_names_each_problem(tmp_path):
    good_cfg = tmp_path / "good.toml"
    good_cfg.write_text('[run]\ndevice = "cpu"\n')
    data = make_names_dataset(tmp_path / "data")
    assert check_settings(TrainSettings(str(data), str(good_cfg), str(tmp_path / "runs" / "a"), "cpu")) == []

    problems = check_settings(TrainSettings(str(tmp_path / "nope"), str(good_cfg), str(tmp_path / "r"), "cpu"))
    assert len(problems) == 1 and "does not exist" in problems[0]

    (tmp_path / "empty").mkdir()
    problems = check_settings(TrainSettings(str(tmp_path / "empty"), str(good_cfg), str(tmp_path / "r"), "cpu"))
    assert len(problems) == 1 and "imagesTr" in problems[0]

    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[sampling]\npatch_size = 100\n")
    problems = check_settings(TrainSettings(str(data), str(bad_cfg), str(tmp_path / "r"), "cpu"))
    assert len(problems) == 1 and "sampling.patch_size" in problems[0] and "multiple of 8" in problems[0]

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "events.jsonl").write_text("")
    problems = check_settings(TrainSettings(str(data), str(good_cfg), str(tmp_path / "old"), "gpu"))
    assert len(problems) == 2
    assert "already holds a run" in problems[0] and "Device 'gpu'" in problems[1]

    from app.training.runs import write_pid_file

    (tmp_path / "busy").mkdir()
    write_pid_file(tmp_path / "busy", os.getpid())  # a live process, still starting up
    problems = check_settings(TrainSettings(str(data), str(good_cfg), str(tmp_path / "busy"), "cpu"))
    assert len(problems) == 1 and f"(pid {os.getpid()}) is already running" in problems[0]

    problems = check_settings(TrainSettings("", str(tmp_path / "missing.toml"), "", "cpu"))
    assert len(problems) == 3 and "missing.toml does not exist" in problems[1]


# --------------------------------------------------------------------------- #
# The tab with the fake trainer
# --------------------------------------------------------------------------- #
@pytest.fixture
def tab_factory(qtbot):
    made = []

    def make(settings=None, launcher=fake_launcher):
        from app.training.tab import TrainingTab

        tab = TrainingTab(settings=settings or DictSettings(), launcher=launcher)
        qtbot.addWidget(tab)
        made.append(tab)
        return tab

    yield make
    from app.training.runs import kill_process

    for tab in made:  # never leave a trainer behind
        for monitor in list(getattr(tab, "monitors", {}).values()):
            if monitor.pid is not None:
                kill_process(monitor.pid)


def fill_form(tab, tmp_path: Path, name: str = "run1") -> Path:
    data = tmp_path / "data"
    if not data.exists():
        make_names_dataset(data)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[run]\ndevice = "cpu"\n')
    run = tmp_path / "runs" / name
    tab.set_form(data=str(data), config=str(cfg), out=str(run), device="cpu")
    return run


@pytest.mark.slow
def test_tab_start_stop_resume_finish_and_open_best(qtbot, tab_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY_S", "0.05")
    monkeypatch.setenv("FAKE_EPOCHS", "[30, 2, 2]")  # stage 0 lasts 6 s: the stop lands in it
    tab = tab_factory()
    run = fill_form(tab, tmp_path)
    assert tab.start() == str(run.resolve())
    monitor = tab.current_monitor()
    assert read_pid_file(run).pid > 0
    qtbot.waitUntil(lambda: monitor.history.steps.size >= 3, timeout=10000)
    assert monitor.status == RUNNING and tab.stop_button.isEnabled() and not tab.resume_button.isEnabled()
    key = str(run.resolve())
    qtbot.waitUntil(lambda: len(tab.plots.curve_data(key, "loss")[0]) >= 3, timeout=5000)
    assert re.match(r"run1: running · stage \d \(\w+\) · epoch \d/\d", tab.status_label.text())
    assert "Run started" in tab.log_view.toPlainText()
    assert "step 1 (global 1): loss" in tab.log_view.toPlainText()  # the first step is logged, later ones throttled

    tab.stop()
    qtbot.waitUntil(lambda: monitor.status == STOPPED, timeout=10000)
    stopped_at = monitor.history.steps.view("x")[-1]
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "stop.request").exists()
    assert tab.resume_button.isEnabled() and not tab.stop_button.isEnabled()

    assert monitor.history.stage == 0
    monkeypatch.setenv("FAKE_DELAY_S", "0.001")
    ended = run_job_and_wait(qtbot, tab.resume, until=tab.runEnded, timeout=20000)
    assert ended.value and ended.args == [key, FINISHED] and monitor.status == FINISHED
    h = monitor.history
    assert h.starts == 2 and h.steps.view("x")[-1] > stopped_at
    assert np.all(np.diff(h.steps.view("x")) > 0)  # one curve, even across the resume
    qtbot.waitUntil(lambda: set(tab.plots.stage_line_positions(key)) == {1, 2}, timeout=2000)
    assert h.validations.size == 34 and "finished" in tab.status_label.text()
    assert tab.error_view.isHidden()

    assert not tab.open_best_button.isEnabled()  # no CT to segment
    tab.set_ct_available(True)
    with qtbot.waitSignal(tab.openCheckpointRequested, timeout=1000) as opened:
        tab.open_best_button.click()
    assert opened.args == [str(run / "checkpoints" / "best.pt")]


def test_tab_shows_a_crash_and_can_start_again(qtbot, tab_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY_S", "0")
    monkeypatch.setenv("FAKE_CRASH_AT_STEP", "6")  # after stage 0's one epoch: last.pt exists
    tab = tab_factory()
    fill_form(tab, tmp_path, "crashing")
    tab.start()
    qtbot.waitUntil(lambda: tab.current_monitor().status == FAILED, timeout=10000)
    assert not tab.error_view.isHidden()
    text = tab.error_view.toPlainText()
    assert "fake failure at global step 6" in text and "RuntimeError" in text  # message and traceback
    assert tab.start_button.isEnabled() and tab.resume_button.isEnabled()
    assert not tab.further_button.isEnabled()  # a crashed run is resumed, not trained further

    monkeypatch.delenv("FAKE_CRASH_AT_STEP")
    monkeypatch.setenv("FAKE_EPOCHS", "[1, 1, 1]")
    run2 = fill_form(tab, tmp_path, "again")
    assert tab.start() == str(run2.resolve())
    assert tab.error_view.isHidden()
    qtbot.waitUntil(lambda: tab.current_monitor().status == FINISHED, timeout=15000)
    assert len(tab.monitors) == 2


def test_tab_shows_last_lines_of_a_process_that_died_without_an_event(qtbot, tab_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY_S", "0")
    monkeypatch.setenv("FAKE_HARD_CRASH_AT_STEP", "2")
    tab = tab_factory()
    run = fill_form(tab, tmp_path, "segv")
    tab.start()
    qtbot.waitUntil(lambda: tab.current_monitor().status == INTERRUPTED, timeout=10000)
    assert "Segmentation fault (fake)" in tab.error_view.toPlainText()
    assert log_tail(run)[-1].startswith("Segmentation fault (fake)")


def test_bad_settings_are_shown_and_nothing_starts(qtbot, tab_factory, tmp_path):
    tab = tab_factory()
    tab.set_form(data=str(tmp_path / "missing"), config="no-such.toml", out="", device="cpu")
    assert tab.start() is None
    text = tab.problems_label.text()
    assert "missing does not exist" in text and "no-such.toml" in text and "output folder" in text
    assert tab.monitors == {}


def test_reopened_tab_reattaches_to_a_running_run_and_kills_it(qtbot, tab_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY_S", "0.05")
    monkeypatch.setenv("FAKE_EPOCHS", "[50, 1, 1]")  # 10 s: still running when killed
    settings = DictSettings()
    first = tab_factory(settings)
    run = fill_form(first, tmp_path, "long")
    first.start()
    qtbot.waitUntil(lambda: first.current_monitor().history.steps.size >= 2, timeout=10000)
    first.close()
    # the trainer outlives the window
    record = read_pid_file(run)
    assert record.alive()

    second = tab_factory(settings)
    monitor = second.current_monitor()
    assert monitor is not None and monitor.run_dir == run.resolve()
    assert monitor.status == RUNNING and monitor.history.steps.size >= 2
    n = monitor.history.steps.size
    qtbot.waitUntil(lambda: monitor.history.steps.size > n, timeout=5000)  # still following
    second.kill()
    qtbot.waitUntil(lambda: monitor.status == KILLED, timeout=5000)
    assert not record.alive()
    assert "killed" in second.status_label.text()


def test_several_runs_are_listed_and_drawn_together(qtbot, tab_factory, tmp_path, monkeypatch):
    env = {**os.environ, "FAKE_DELAY_S": "0", "FAKE_EPOCHS": "[1, 1, 1]"}
    for name in ("a", "b"):
        subprocess.run(
            [sys.executable, str(FAKE), "train", "--out", str(tmp_path / "runs" / name)],
            check=True,
            env=env,
            capture_output=True,
            timeout=30,
        )
    assert [p.name for p in find_runs(tmp_path / "runs")] == ["a", "b"]
    tab = tab_factory()
    added = tab.add_runs(tmp_path / "runs")
    assert len(added) == 2 and tab.runs_list.count() == 2
    assert [tab.runs_list.item(i).text() for i in range(2)] == ["a — finished", "b — finished"]
    tab.plots.redraw()
    for key in added:
        x, y = tab.plots.curve_data(key, "td")
        assert len(x) == 3  # one validation per epoch, three stages
        assert tab.monitors[key].status == FINISHED
    tab.runs_list.item(0).setCheckState(tab.runs_list.item(0).checkState().Unchecked)
    assert tab.plots.runs() == [added[1]]


@pytest.mark.slow
def test_redraws_are_throttled(qtbot, tmp_path):
    from app.training.plots import TrainingPlots

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    h = RunHistory()
    plots.show_run("r", h)
    for g in range(1, 2001):
        h.apply(step(g))
        plots.mark_dirty("r")
    qtbot.waitUntil(lambda: plots.redraws >= 1, timeout=2000)
    qtbot.wait(plots.REDRAW_MS + 50)
    assert plots.redraws == 1  # 2000 updates, one redraw
    assert len(plots.curve_data("r", "loss")[0]) == 2000


def test_refcount_guard_is_in_place_where_pyside_leaks(qtbot):
    from app.training.qt_workarounds import install_refcount_guard, measure_leaks

    installed = install_refcount_guard()
    lost = measure_leaks()
    if sys.version_info < (3, 12) and (lost["None"] > 0 or lost["True"] > 0):
        assert installed
        assert min(sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)) > 2**47
    else:
        assert not installed


# --------------------------------------------------------------------------- #
# End to end with the real trainer
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_real_trainer_crash_then_quick_run_stop_and_resume(qtbot, tab_factory, tmp_path):
    """``main.py train`` for real: a config that crashes it, then ``--preset quick`` on two tiny phantoms.

    The quick preset takes minutes to finish on a shared 2-core CPU, so this
    test stops after the first step, resumes, sees the resumed run train on and
    stops it again; finishing is covered with the fake trainer above.
    """
    from core.training.phantoms import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 2, size=40, seed=0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\narchitecture = "nosuchnet"\n')
    tab = tab_factory(launcher=entry_command)

    tab.set_form(data=str(data), config=str(bad), out=str(tmp_path / "crash"), device="cpu")
    assert tab.start()
    qtbot.waitUntil(lambda: tab.current_monitor().status in (FAILED, INTERRUPTED), timeout=60000)
    assert "Unknown model architecture 'nosuchnet'" in tab.error_view.toPlainText()
    assert not tab.error_view.isHidden() and tab.start_button.isEnabled()

    run = tmp_path / "quick"
    tab.set_form(config="quick", out=str(run))
    assert tab.check() == []
    assert tab.start() == str(run.resolve())
    assert tab.error_view.isHidden()
    monitor = tab.current_monitor()
    key = str(run.resolve())
    qtbot.waitUntil(lambda: monitor.history.steps.size >= 1, timeout=90000)
    qtbot.waitUntil(lambda: len(tab.plots.curve_data(key, "loss")[0]) >= 1, timeout=5000)
    assert monitor.history.stage == 0 and monitor.history.config["sampling"]["patch_size"] == 32
    tab.stop()
    qtbot.waitUntil(lambda: monitor.status == STOPPED, timeout=90000)
    assert (run / "checkpoints" / "last.pt").is_file()
    done = monitor.history.steps.view("x")[-1]

    assert tab.resume()
    qtbot.waitUntil(lambda: monitor.history.steps.size and monitor.history.steps.view("x")[-1] > done, timeout=90000)
    assert monitor.history.starts == 2 and monitor.status == RUNNING
    tab.stop()
    qtbot.waitUntil(lambda: monitor.status == STOPPED, timeout=90000)
    assert "stopped" in tab.status_label.text()


def test_a_run_started_from_a_shell_is_found_and_can_be_killed(qtbot, tab_factory, tmp_path):
    env = {**os.environ, "FAKE_DELAY_S": "0.05", "FAKE_EPOCHS": "[100, 1, 1]"}
    # relative --out, as typed in a shell: the tab resolves it against the process's folder
    proc = subprocess.Popen(
        [sys.executable, str(FAKE), "train", "--out", "runs/shell"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = tmp_path / "runs" / "shell"
        deadline = time.time() + 10
        while not (run / "events.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.05)
        tab = tab_factory()
        tab.add_runs(run)
        monitor = tab.current_monitor()
        assert monitor.pid is not None and monitor.pid.pid == proc.pid
        assert monitor.status == RUNNING and tab.kill_button.isEnabled()
        assert "Found the training process of this run" in tab.log_view.toPlainText()
        tab.kill()
        proc.wait(timeout=10)  # (psutil reaped it already: no exit status to check here)
        qtbot.waitUntil(lambda: monitor.status == KILLED, timeout=5000)
        assert "run_end" not in (run / "events.jsonl").read_text()  # it did not finish on its own
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_trainer_that_dies_before_its_first_event_has_failed_and_says_why(qtbot, tab_factory, tmp_path):
    missing = tmp_path / "no_such_entry_point.py"
    tab = tab_factory(launcher=lambda args: (sys.executable, [str(missing), *args]))
    run = fill_form(tab, tmp_path, "broken")
    tab.start()
    qtbot.waitUntil(lambda: tab.current_monitor().status == FAILED, timeout=10000)
    assert "no_such_entry_point.py" in tab.error_view.toPlainText()  # python's own message, from trainer.log
    assert "failed" in tab.runs_list.currentItem().text() and tab.start_button.isEnabled()
    assert not (run / "events.jsonl").exists()


def test_messages_are_coloured_by_meaning_and_flat_validation_has_a_sane_axis(qtbot, tab_factory, tmp_path):
    from PySide6.QtCore import Qt

    from app.training.tab import MESSAGE_COLOURS

    tab = tab_factory()
    fill_form(tab, tmp_path, "colours")
    assert tab.check() == []
    assert tab.problems_label.text() == "Ready to start." and tab.problems_label.property("kind") == "ok"
    assert MESSAGE_COLOURS["ok"] in tab.problems_label.styleSheet()
    tab.set_form(data=str(tmp_path / "missing"))
    assert tab.check() and tab.problems_label.property("kind") == "error"
    # the plots follow the palette (dark in the app), and percentages keep a 0-100 axis
    bg = tab.plots._layout.backgroundBrush().color()
    assert bg == tab.plots.palette().color(tab.plots.palette().ColorRole.Base)
    lo, hi = tab.plots.metric_plot.viewRange()[1]
    assert lo <= 0 and hi >= 100
    # the presets say what they are for
    quick = [i for i in range(tab.config_combo.count()) if tab.config_combo.itemText(i) == "quick"]
    assert quick and "smoke test" in tab.config_combo.itemData(quick[0], Qt.ItemDataRole.ToolTipRole).lower()


@pytest.mark.slow
def test_run_with_zero_validation_warns_and_start_waits_for_the_run(qtbot, tab_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DELAY_S", "0.02")
    monkeypatch.setenv("FAKE_EPOCHS", "[3, 1, 1]")
    monkeypatch.setenv("FAKE_ZERO_VALIDATION", "1")
    tab = tab_factory()
    fill_form(tab, tmp_path, "flat")

    def start():
        tab.start()
        monitor = tab.current_monitor()
        qtbot.waitUntil(lambda: monitor.status == RUNNING, timeout=10000)
        assert not tab.start_button.isEnabled()
        return monitor

    monitor = run_job_and_wait(qtbot, start, until=tab.runEnded, timeout=30000).value
    assert monitor.status == FINISHED and tab.start_button.isEnabled()
    assert "never rose above 0" in tab.problems_label.text() and tab.problems_label.property("kind") == "warning"


def test_the_pid_record_exists_when_start_returns_even_for_a_trainer_that_ends_at_once(qtbot, tab_factory, tmp_path):
    """Start returns with RUN/trainer.pid written (the pid comes from the launch itself, not a later
    search by command line), so a window closed at once can reattach and kill; a trainer that has
    already exited is still recorded and concluded as failed."""
    tab = tab_factory(launcher=lambda args: (sys.executable, ["-c", "raise SystemExit(3)", *args]))
    run = fill_form(tab, tmp_path, "instant")
    assert tab.start() == str(run.resolve())
    record = read_pid_file(run)
    assert record is not None and record.pid > 0
    qtbot.waitUntil(lambda: tab.current_monitor().status == FAILED, timeout=20000)


def test_a_finished_run_is_trained_further_never_resumed_into_failure(qtbot, tab_factory, tmp_path, monkeypatch):
    """Issue 24: Resume was enabled on a finished run and clicking it marked the run "failed" with a red
    box. A finished run offers "Train further" with new epochs; Resume is for runs that ended early."""
    monkeypatch.setenv("FAKE_DELAY_S", "0")
    monkeypatch.setenv("FAKE_EPOCHS", "[1, 1, 2]")
    tab = tab_factory()
    run = fill_form(tab, tmp_path, "done")
    tab.start()
    monitor = tab.current_monitor()
    qtbot.waitUntil(lambda: monitor.status == FINISHED, timeout=15000)
    assert not tab.resume_button.isEnabled()
    assert tab.further_button.isEnabled() and tab.more_epochs_spin.isEnabled()

    assert tab.resume() is False  # called anyway (a stale click): nothing starts, nothing fails
    assert monitor.status == FINISHED and tab.error_view.isHidden()
    assert "Train further" in tab.problems_label.text() and tab.problems_label.property("kind") == "warning"

    tab.more_epochs_spin.setValue(3)
    with qtbot.waitSignal(tab.runEnded, timeout=20000) as ended:
        tab.further_button.click()
    assert ended.args == [str(run.resolve()), FINISHED] and tab.error_view.isHidden()
    h = monitor.history
    assert h.starts == 2 and h.stage == 2 and h.stage_epochs == 5 and h.epoch == 5
    assert np.all(np.diff(h.steps.view("x")) > 0)
    log = tab.log_view.toPlainText()
    assert "trained further: 3 more epochs" in log
    # one epoch numbering: the log's last epoch line and the status line both say 5 of 5
    assert "Stage 2 epoch 5/5" in log and "epoch 5/5" in tab.status_label.text()
    assert "Stage 0 epoch 1/1" in log and "epoch 0" not in log


def test_a_model_that_marks_everything_warns_in_the_tab(qtbot, tab_factory, tmp_path, monkeypatch):
    """Issue 24: validation TD/BD 100 % with DSC 0.3 % looked like success. DSC, precision and the share
    of the volume marked are plotted beside TD/BD, the status line gives them, and the warning is shown."""
    monkeypatch.setenv("FAKE_DELAY_S", "0")
    monkeypatch.setenv("FAKE_EPOCHS", "[1, 1, 1]")
    monkeypatch.setenv("FAKE_MARK_EVERYTHING", "1")
    tab = tab_factory()
    run = fill_form(tab, tmp_path, "everything")
    tab.start()
    monitor = tab.current_monitor()
    qtbot.waitUntil(lambda: monitor.status == FINISHED, timeout=15000)
    key = str(run.resolve())
    tab.plots.redraw()
    for column, value in (("td", 100.0), ("bd", 100.0), ("dsc", 0.3), ("precision", 0.15), ("marked_percent", 80)):
        x, y = tab.plots.curve_data(key, column)
        assert len(x) == 3 and np.allclose(y, value), column
    assert "DSC 0.3%" in tab.status_label.text() and "TD 100.0%" in tab.status_label.text()
    assert not tab.warning_label.isHidden()
    text = tab.warning_label.text()
    assert "marks 80 % of the validation volumes as airway" in text and "lower the learning rate" in text
    assert "80.0% of the volume marked as airway" in tab.log_view.toPlainText()
