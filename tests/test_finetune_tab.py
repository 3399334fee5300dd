"""The Training tab's "Fine-tune on reviewed cases" for an open dataset, and its comparison report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs import run_job_and_wait
from PySide6 import QtCore, QtGui

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo_wingsnet.pt"


class DictSettings:
    def __init__(self):
        self.values: dict = {}

    def get(self, key, default=None, type_=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


@pytest.fixture
def make_tab(qtbot):
    made = []

    def make(launcher=None):
        from app.training.tab import TrainingTab

        tab = TrainingTab(settings=DictSettings(), launcher=launcher)
        qtbot.addWidget(tab)
        made.append(tab)
        return tab

    yield make
    from app.training.runs import kill_process

    for tab in made:  # never leave a trainer behind
        for monitor in list(tab.monitors.values()):
            if monitor.pid is not None:
                kill_process(monitor.pid)


class UrlCatcher(QtCore.QObject):
    """Receives the URLs the app opens with QDesktopServices (Qt's own hook for a scheme)."""

    def __init__(self):
        super().__init__()
        self.urls: list[QtCore.QUrl] = []

    @QtCore.Slot(QtCore.QUrl)
    def open(self, url: QtCore.QUrl) -> None:
        self.urls.append(url)


def test_finetune_button_is_enabled_only_for_a_split_dataset_with_a_reviewed_training_case(make_tab, tmp_path):
    from dataset_fixtures import make_nnunet, tiny_mask

    from core.dataset import freeze_split, open_dataset, write_reviewed_label

    tab = make_tab()
    button = tab.finetune_button
    assert not button.isEnabled()
    assert "Open a dataset" in button.toolTip()

    data = make_nnunet(tmp_path / "ds", n_train=5, n_test=0)
    tab.set_dataset(data)
    assert not button.isEnabled()
    assert "airway dataset split" in button.toolTip()

    split = freeze_split(open_dataset(data), seed=0)
    tab.refresh_dataset()
    assert not button.isEnabled()
    assert f"None of the {len(split['train'])} training cases" in button.toolTip()

    # a reviewed validation case does not count: fine-tuning trains on the train part
    ds = open_dataset(data)
    if split["validation"]:
        write_reviewed_label(ds, split["validation"][0], tiny_mask(7))
        tab.refresh_dataset()
        assert not button.isEnabled()
    write_reviewed_label(ds, split["train"][0], tiny_mask(7))
    tab.refresh_dataset()
    assert button.isEnabled()
    assert str(data) in button.toolTip()

    tab.set_dataset(None)
    assert not button.isEnabled()
    assert "Open a dataset" in button.toolTip()
    assert not tab.report_button.isEnabled()  # no run selected


def test_ignore_unjudged_regions_box_reaches_the_trainer_command(make_tab, tmp_path):
    """The box under the button adds --ignore-unreviewed to the command the tab starts (a launcher that
    records the command and names no program stands in for the trainer)."""
    from dataset_fixtures import make_nnunet, tiny_mask

    from core.dataset import freeze_split, open_dataset, write_reviewed_label

    commands: list[list[str]] = []

    def launcher(args):
        commands.append(list(args))
        return str(tmp_path / "no-such-trainer"), list(args)

    data = make_nnunet(tmp_path / "ds", n_train=5, n_test=0)
    split = freeze_split(open_dataset(data), seed=0)
    write_reviewed_label(open_dataset(data), split["train"][0], tiny_mask(7))
    tab = make_tab(launcher)
    tab.init_edit.setText(str(DEMO))
    tab.set_dataset(data)
    box = tab.ignore_unreviewed_check
    assert box.isEnabled() and not box.isChecked()
    tab.set_form(out=str(tmp_path / "run1"), device="cpu")
    tab.fine_tune()
    box.setChecked(True)
    tab.set_form(out=str(tmp_path / "run2"), device="cpu")
    tab.fine_tune()
    assert len(commands) == 2
    assert "--ignore-unreviewed" not in commands[0] and "--ignore-unreviewed" in commands[1]
    assert commands[1][:2] == ["train", "--dataset"]
    tab.set_dataset(None)
    assert not box.isEnabled()


@pytest.mark.slow
def test_finetune_from_the_tab_runs_compares_and_opens_the_report(make_tab, qtbot, tmp_path):
    """The button as a user presses it: the real trainer fine-tunes the demo model on the reviewed
    training cases, compares it with the start model on the test cases, and the report opens."""
    from test_finetune import TINY_TOML, make_dataset, split_of, write_reviewed

    from app.training.runs import FINISHED

    data, _ = make_dataset(tmp_path)
    for cid in split_of(data)["train"][:2]:
        write_reviewed(data, cid)
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(TINY_TOML)
    tab = make_tab()
    run = tmp_path / "runs" / "ft"
    tab.set_form(config=str(tiny), out=str(run), device="cpu")
    tab.init_edit.setText(str(DEMO))
    tab.set_dataset(data)
    assert tab.finetune_button.isEnabled()

    ended = run_job_and_wait(
        qtbot,
        lambda: qtbot.mouseClick(tab.finetune_button, QtCore.Qt.MouseButton.LeftButton),
        until=tab.runEnded,
        timeout=300000,
    )
    monitor = tab.current_monitor()
    assert monitor is not None and monitor.run_dir == run.resolve()
    assert ended.args[1] == FINISHED, monitor.crash_text()
    plan = json.loads((run / "finetune.json").read_text())
    assert plan["labels"] == "reviewed" and len(plan["train"]) == 2
    assert tab.report_button.isEnabled()

    catcher = UrlCatcher()
    QtGui.QDesktopServices.setUrlHandler("file", catcher, "open")
    try:
        qtbot.mouseClick(tab.report_button, QtCore.Qt.MouseButton.LeftButton)
    finally:
        QtGui.QDesktopServices.unsetUrlHandler("file")
    assert [u.toLocalFile() for u in catcher.urls] == [str(run.resolve() / "compare" / "report.html")]


def test_file_open_dataset_hands_the_dataset_to_the_training_tab(qtbot, tmp_path, monkeypatch):
    """File > Open dataset in the main window: the Training tab's fine-tune button follows that dataset,
    and a saved review (reviewSaved) is seen without reopening it."""
    from dataset_fixtures import make_nnunet, tiny_mask
    from PySide6.QtWidgets import QFileDialog

    from app.main_window import MainWindow
    from app.settings import Settings
    from core.dataset import freeze_split, open_dataset, write_reviewed_label

    data = make_nnunet(tmp_path / "ds", n_train=5, n_test=0)
    split = freeze_split(open_dataset(data), seed=0)
    w = MainWindow(settings=Settings(path=str(tmp_path / "settings.ini")))
    qtbot.addWidget(w)
    tab = w.training_tab
    assert tab is not None and not tab.finetune_button.isEnabled()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(data)))
    run_job_and_wait(qtbot, w.action_table["open_dataset"].trigger, until=w.dataset.datasetOpened)
    assert tab.dataset_path == data
    assert "None of the" in tab.finetune_button.toolTip()
    case = split["train"][0]
    path = write_reviewed_label(open_dataset(data), case, tiny_mask(3))
    w.dataset.reviewSaved.emit(case, path)
    assert tab.finetune_button.isEnabled()
