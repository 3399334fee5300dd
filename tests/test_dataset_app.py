"""A dataset in the app, driven as an annotator drives it: File > Open dataset, the worklist (rows,
sorting, filters, double-click), an accepted region, Ctrl+] (the reviewed label written voxel for
voxel, the next case open), Ctrl+[ back (the view as it was left), statuses that survive closing
the window and that a second window sees, and ``--dataset`` on the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jobs import run_job_and_wait
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog
from window_keys import select_row, type_key, wait_analysed

from app.settings import Settings
from core.review.loading import read_label_canonical

ROOT = Path(__file__).resolve().parents[1]
CASES = [f"case_{i:02d}" for i in range(1, 7)]
MODEL = "modelA"


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """Six tiny phantom cases (CT + label) and one prediction folder: the label with a blob added (an FP
    region to accept) and a few voxels removed (an FN)."""
    from core.io import write_volume
    from core.phantom import make_phantom
    from core.volume import LabelVolume

    src = tmp_path_factory.mktemp("dataset_src")
    for i, case in enumerate(CASES):
        ph = make_phantom(shape=(40, 40, 40), seed=i, generations=3)
        label = ph.label.mask
        pred = label.copy()
        z, y, x = np.argwhere(label).mean(axis=0).astype(int)
        pred[max(z - 8, 0) : max(z - 5, 1), y + 6 : y + 9, x + 6 : x + 9] = True  # a blob beside the airway
        lz, ly, lx = np.argwhere(label)[0]  # and a missed bit of the lowest branch
        pred[lz : lz + 3, max(ly - 1, 0) : ly + 2, max(lx - 1, 0) : lx + 2] = False
        write_volume(ph.ct, src / "imagesTr" / f"{case}_0000.nii.gz")
        write_volume(LabelVolume(label.astype(np.uint8), ph.ct.geometry), src / "labelsTr" / f"{case}.nii.gz")
        write_volume(LabelVolume(pred.astype(np.uint8), ph.ct.geometry), src / MODEL / f"{case}.nii.gz")
    (src / "notes.txt").write_text("not a volume")
    (src / MODEL / "stray.nii.gz").write_bytes((src / MODEL / f"{CASES[0]}.nii.gz").read_bytes())
    return src


@pytest.fixture
def dataset_dir(phantom_files, tmp_path, monkeypatch):
    import shutil

    # windows with settings files offer recoveries at their first show: none from other tests here
    monkeypatch.setenv("AIRWAY_STUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    d = tmp_path / "ds"
    shutil.copytree(phantom_files, d)
    return d


@pytest.fixture
def errors(monkeypatch):
    """Error dialogs and questions the windows showed (a test expects none); a question is answered
    Discard so that a window closed at teardown never waits for a click."""
    from PySide6.QtWidgets import QMessageBox

    seen: list[str] = []

    def question(*a, **k):
        seen.append(f"question: {a[2] if len(a) > 2 else ''}")
        return QMessageBox.StandardButton.Discard

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return seen


def _window(qtbot, errors, settings_path: Path, reviewer: str = "alice"):
    from app.main_window import MainWindow

    settings = Settings(path=str(settings_path))
    settings.set_reviewer(reviewer)
    w = MainWindow(settings=settings, training_tab=False)
    qtbot.addWidget(w)
    w.error_handler = lambda _p, exc, *_a, **_k: errors.append(str(exc))
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def _open_dataset(qtbot, w, path: Path, monkeypatch):
    """File > Open dataset..., the folder chosen in the dialog."""
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(path)))
    run_job_and_wait(qtbot, w.action_table["open_dataset"].trigger, until=w.dataset.datasetOpened)
    return w.dataset


def _row_rect(w, case_id: str):
    panel = w.dataset.panel
    row = panel.ordered_cases().index(case_id)
    index = panel.proxy.index(row, 0)
    panel.table.scrollTo(index)
    return panel.table.visualRect(index)


def _double_click(qtbot, w, case_id: str):
    table = w.dataset.panel.table
    rect = _row_rect(w, case_id)
    # a double-click is a click and a second press (Qt's view opens the row the first press chose)
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    done = run_job_and_wait(
        qtbot,
        lambda: QTest.mouseDClick(
            table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center()
        ),
        until=w.dataset.caseOpened,
    )
    assert done.args == [case_id]


def _activate(qtbot, w):
    w.activateWindow()
    w.views["axial"].setFocus()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)


def _accept_an_fp(qtbot, w) -> None:
    """N until an FP region is selected, then A (as an annotator adds a missed airway)."""
    for _ in range(3 * len(w.case.regions()) + 2):
        type_key(w, Qt.Key.Key_N)
        regs = w.case.regions()
        if 0 <= w.case.active_region < len(regs) and regs[w.case.active_region].kind == "FP":
            break
    else:
        raise AssertionError("no FP region to accept")
    before = int(w.case.session.reference.array.sum())
    type_key(w, Qt.Key.Key_A)
    assert int(w.case.session.reference.array.sum()) > before
    assert w.case.session.reference.modified


def _status(w, case_id: str) -> str:
    return w.dataset.panel.model.case_state(case_id).status


# -- the worklist ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_worklist_rows_sorting_filters_and_double_click(qtbot, dataset_dir, errors, monkeypatch, tmp_path):
    w = _window(qtbot, errors, tmp_path / "s.ini")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    panel = ctl.panel
    assert ctl.dock.isVisible()
    assert panel.ordered_cases() == CASES
    cols = panel.model.columns()
    assert cols[:6] == ["case", "status", "reviewer", "time spent", "label version", "split"]
    assert [f"{MODEL} TD", f"{MODEL} BD", f"{MODEL} DSC", f"{MODEL} precision"] == cols[6:10]
    assert ctl.progress_label.text() == "0 of 6 done"
    # files that fit no case are listed in a note that does not block the window
    note = ctl.unmatched_note
    assert note.isVisible() and not note.isModal() and "stray.nii.gz" in note.detailedText()
    note.close()

    # Done and Flagged from the buttons, on the selected rows
    select_row(panel.table, 2)
    panel.status_buttons["done"].click()
    select_row(panel.table, 4)
    panel.status_buttons["flagged"].click()
    assert _status(w, CASES[2]) == "done" and _status(w, CASES[4]) == "flagged"
    assert panel.model.case_state(CASES[2]).reviewer == "alice"
    assert ctl.progress_label.text() == "1 of 6 done, 1 flagged"

    # sorted by status (header click), then filtered by status, reviewer and text
    header = panel.table.horizontalHeader()
    QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(header.sectionViewportPosition(1) + 5, 5))
    assert panel.ordered_cases()[0] in (CASES[0], CASES[1], CASES[3], CASES[5])  # To do first
    assert panel.ordered_cases()[-1] == CASES[4]  # flagged last
    panel.status_filter.setCurrentIndex(panel.status_filter.findData("done"))
    assert panel.ordered_cases() == [CASES[2]]
    panel.status_filter.setCurrentIndex(0)
    panel.reviewer_filter.setCurrentIndex(panel.reviewer_filter.findData("alice"))
    assert sorted(panel.ordered_cases()) == [CASES[2], CASES[4]]
    panel.reviewer_filter.setCurrentIndex(0)
    QTest.keyClicks(panel.search, "05")
    assert panel.ordered_cases() == [CASES[4]]
    panel.search.clear()
    QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(header.sectionViewportPosition(0) + 5, 5))
    if panel.ordered_cases()[0] != CASES[0]:  # the second click sorts descending
        QTest.mouseClick(
            header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(header.sectionViewportPosition(0) + 5, 5)
        )
    assert panel.ordered_cases() == CASES

    # the context menu reopens a done case
    menu = panel._build_menu(panel.proxy.index(2, 0))
    reopen = [a for a in menu.actions() if a.objectName() == "worklistMenu_in_review"][0]
    assert reopen.text().startswith("Reopen")
    reopen.trigger()
    assert _status(w, CASES[2]) == "in_review"

    # a note
    select_row(panel.table, 1)
    panel.note.setFocus()
    QTest.keyClicks(panel.note, "check the left lower lobe")
    QTest.keyClick(panel.note, Qt.Key.Key_Return)
    assert panel.model.case_state(CASES[1]).note == "check the left lower lobe"

    # a double-click opens the case: CT, best label (the original here) and the prediction
    _double_click(qtbot, w, CASES[1])
    assert w.case.name == CASES[1] and w.case.ct_path.endswith(f"{CASES[1]}_0000.nii.gz")
    assert w.case.reference_path.endswith(f"labelsTr/{CASES[1]}.nii.gz")
    assert [p.name for p in w.case.predictions] == [MODEL]
    assert "reference: original (labelsTr/" in ctl.label_label.text()
    # Enter on a row opens it too
    wait_analysed(qtbot, w)
    panel.table.setFocus()
    select_row(panel.table, 3)
    with qtbot.waitSignal(ctl.caseOpened, timeout=60000) as blocker:
        QTest.keyClick(panel.table, Qt.Key.Key_Return)
    assert blocker.args == [CASES[3]]
    wait_analysed(qtbot, w)
    assert not errors, errors


# -- Save and next ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_bracket_saves_the_reviewed_label_opens_the_next_case_and_the_view_comes_back(
    qtbot, dataset_dir, errors, monkeypatch, tmp_path
):
    w = _window(qtbot, errors, tmp_path / "s.ini")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    _double_click(qtbot, w, CASES[0])
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    _accept_an_fp(qtbot, w)
    shown = w.case.session.reference.array.copy()
    wait_analysed(qtbot, w)  # figures of the edited reference
    type_key(w, Qt.Key.Key_N)  # the accepted region is gone: another one selected
    region_key = w.case.active_region_key
    assert region_key is not None
    td = w.case.active.metrics.td
    w.case.set_cursor((11, 17, 23))
    w.views["axial"].zoom_by(2.0)
    zoom = w.views["axial"].zoom
    original = (dataset_dir / "labelsTr" / f"{CASES[0]}.nii.gz").read_bytes()
    ctl.activity.seconds += 7.0  # seven seconds of active work (the clock is the user's, not the test's)

    # Ctrl+]: the label is written, the next case opens (pre-loaded meanwhile)
    qtbot.waitUntil(lambda: ctl._prefetch is not None and ctl._prefetch.result is not None, timeout=60000)
    first_session = w.case.session
    saved = []
    ctl.reviewSaved.connect(lambda *a: saved.append(a))
    with qtbot.waitSignals([ctl.caseOpened, ctl.reviewSaved], timeout=60000):
        type_key(w, Qt.Key.Key_BracketRight, Qt.KeyboardModifier.ControlModifier)
    assert saved[0][0] == CASES[0] and w.case.name == CASES[1]
    reviewed = dataset_dir / "labelsReviewed" / f"{CASES[0]}.nii.gz"
    assert np.array_equal(read_label_canonical(reviewed, None)[0].array, shown)
    assert (dataset_dir / "labelsTr" / f"{CASES[0]}.nii.gz").read_bytes() == original  # never touched
    assert (dataset_dir / "labelsReviewed" / f"{CASES[0]}.edits.jsonl").read_text().count('"reviewer": "alice"') >= 2
    cs = ctl.case_state(CASES[0])
    assert cs.status == "in_review" and cs.reviewer == "alice"
    assert cs.seconds_spent >= 7.0
    assert not w.case.modified and not w.case.session.reference.modified
    assert cs.label_version == "reviewed" and "reviewed" in cs.keys and MODEL in cs.keys
    assert cs.figures[MODEL]["td"] == pytest.approx(td)
    # the masks they came from, keyed as core.dataset keys them (airway dataset evaluate takes them as current)
    from core.io import read_label
    from core.outputs import content_key

    assert cs.figure_keys[MODEL] == {
        "prediction": content_key(read_label(dataset_dir / MODEL / f"{CASES[0]}.nii.gz")),
        "label": content_key(read_label(reviewed)),
        "version": "reviewed",
    }
    from core.dataset import open_dataset
    from core.dataset.figures import evaluate_dataset

    (cached,) = evaluate_dataset(open_dataset(dataset_dir), cases=[CASES[0]])
    assert cached.status == "cached"  # the app's figures count as current
    (measured,) = evaluate_dataset(open_dataset(dataset_dir), cases=[CASES[0]], force=True)
    for k in ("td", "bd", "dsc", "precision"):  # and are the figures `airway dataset evaluate` measures
        assert measured.figures[k] == pytest.approx(cs.figures[MODEL][k], abs=0.01), k
    assert cs.open_items is not None and cs.open_items >= 0
    assert w.case.name == CASES[1] and "reference: original" in ctl.label_label.text()
    assert ctl.panel.model.data(ctl.panel.model.index(0, 4)) == "reviewed"

    # Ctrl+[ (nothing edited): back to the first case, its reviewed label, its view
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    kept = ctl._previous.loaded.tree_view
    assert kept is not None and kept.branch_map is not None and kept.tree is first_session.tree
    with qtbot.waitSignal(ctl.caseOpened, timeout=60000) as opened:
        type_key(w, Qt.Key.Key_BracketLeft, Qt.KeyboardModifier.ControlModifier)
    assert opened.args == [CASES[0]]
    assert w.case.session is first_session  # the case just left was kept in memory (saved, files unchanged)
    assert w.case.branch_map is kept.branch_map  # came back with it, not made again on the GUI thread
    assert w.case.reference_path == str(reviewed)
    assert "reference: reviewed (labelsReviewed/" in ctl.label_label.text()
    assert np.array_equal(w.case.session.reference.array, shown)
    assert w.case.cursor == (11, 17, 23)
    assert w.views["axial"].zoom == pytest.approx(zoom)
    wait_analysed(qtbot, w)
    assert w.case.active_region_key == region_key
    assert ctl.case_state(CASES[1]).status == "in_review"  # Save and previous marks it reviewed too

    # Done is the reviewer's call (Ctrl+Alt+D); a later Save and next keeps it
    _activate(qtbot, w)
    type_key(w, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert ctl.case_state(CASES[0]).status == "done"
    with qtbot.waitSignal(ctl.caseOpened, timeout=60000):
        w.action_table["save_next_case"].trigger()  # the Dataset menu's entry
    assert ctl.case_state(CASES[0]).status == "done"
    assert ctl.progress_label.text().startswith("1 of 6 done")
    # the worklist filters by figures: only the cases with a TD recorded (the two left) match
    QTest.keyClicks(ctl.panel.search, "td <= 100")
    assert ctl.panel.ordered_cases() == [CASES[0], CASES[1]]
    ctl.panel.search.setText("td > 100")
    assert ctl.panel.ordered_cases() == []
    assert not errors, errors


@pytest.mark.slow
def test_a_save_that_fails_keeps_the_edits_and_opens_the_case_again(qtbot, dataset_dir, errors, monkeypatch, tmp_path):
    w = _window(qtbot, errors, tmp_path / "s.ini")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    (dataset_dir / "labelsReviewed").write_text("a file where the folder should be")  # the write fails
    _double_click(qtbot, w, CASES[0])
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    _accept_an_fp(qtbot, w)
    shown = w.case.session.reference.array.copy()
    qtbot.waitUntil(lambda: ctl._prefetch is not None and ctl._prefetch.result is not None, timeout=60000)
    opened = []
    ctl.caseOpened.connect(opened.append)
    type_key(w, Qt.Key.Key_BracketRight, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: opened[-2:] == [CASES[1], CASES[0]], timeout=60000)
    assert len(errors) == 1 and f"The reviewed label of {CASES[0]} was not written" in errors[0]
    assert w.case.name == CASES[0] and w.case.session.reference.modified
    assert np.array_equal(w.case.session.reference.array, shown)
    assert ctl.case_state(CASES[0]).status == "todo"  # nothing recorded as saved
    # the folder back: Ctrl+Alt+S writes it (labelsReviewed/, never the original)
    (dataset_dir / "labelsReviewed").unlink()
    errors.clear()
    with qtbot.waitSignal(ctl.reviewSaved, timeout=60000):
        type_key(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    reviewed = dataset_dir / "labelsReviewed" / f"{CASES[0]}.nii.gz"
    assert np.array_equal(read_label_canonical(reviewed, None)[0].array, shown)
    assert not w.case.session.reference.modified and not errors


@pytest.mark.slow
def test_a_review_saved_by_another_annotator_meanwhile_is_not_overwritten_unasked(
    qtbot, dataset_dir, errors, monkeypatch, tmp_path
):
    from PySide6.QtWidgets import QMessageBox

    from core.dataset import open_dataset, write_reviewed_label
    from core.io import read_label

    w = _window(qtbot, errors, tmp_path / "s.ini")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    _double_click(qtbot, w, CASES[0])
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    _accept_an_fp(qtbot, w)
    mine = w.case.session.reference.array.copy()
    # another annotator (another process, through core.dataset) saves their review of the case
    theirs = read_label(dataset_dir / "labelsTr" / f"{CASES[0]}.nii.gz")
    theirs.array[0, 0, 0] = 1
    write_reviewed_label(open_dataset(dataset_dir), CASES[0], theirs, reviewer="dave")
    reviewed = dataset_dir / "labelsReviewed" / f"{CASES[0]}.nii.gz"
    before = reviewed.read_bytes()
    type_key(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert len(errors) == 1 and "saved by someone else" in errors[0]  # asked, answered Cancel (Discard)
    assert reviewed.read_bytes() == before and w.case.session.reference.modified
    errors.clear()
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Save))
    with qtbot.waitSignal(ctl.reviewSaved, timeout=60000):
        type_key(w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert np.array_equal(read_label_canonical(reviewed, None)[0].array, mine)
    (kept,) = (dataset_dir / "labelsReviewed").glob(f"{CASES[0]}.other-*.nii.gz")
    assert kept.read_bytes() == before  # theirs, kept aside
    assert not errors, errors


@pytest.mark.slow
def test_ctrl_bracket_back_reads_the_files_again_when_someone_changed_them(
    qtbot, dataset_dir, errors, monkeypatch, tmp_path
):
    from core.dataset import open_dataset, write_reviewed_label
    from core.io import read_label

    w = _window(qtbot, errors, tmp_path / "s.ini")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    _double_click(qtbot, w, CASES[0])
    wait_analysed(qtbot, w)
    left = w.case.session
    qtbot.waitUntil(lambda: ctl._prefetch is not None and ctl._prefetch.result is not None, timeout=60000)
    _activate(qtbot, w)
    with qtbot.waitSignal(ctl.caseOpened, timeout=60000):
        type_key(w, Qt.Key.Key_BracketRight, Qt.KeyboardModifier.ControlModifier)
    theirs = read_label(dataset_dir / "labelsTr" / f"{CASES[0]}.nii.gz")
    theirs.array[0, 0, 0] = 1
    write_reviewed_label(open_dataset(dataset_dir), CASES[0], theirs, reviewer="dave")
    wait_analysed(qtbot, w)
    _activate(qtbot, w)
    with qtbot.waitSignal(ctl.caseOpened, timeout=60000):
        type_key(w, Qt.Key.Key_BracketLeft, Qt.KeyboardModifier.ControlModifier)
    assert w.case.session is not left  # not the copy in memory: the files, as they are now
    reviewed = dataset_dir / "labelsReviewed" / f"{CASES[0]}.nii.gz"
    assert w.case.reference_path == str(reviewed)
    assert np.array_equal(w.case.session.reference.array, read_label_canonical(reviewed, None)[0].array)
    assert "reference: reviewed" in ctl.label_label.text()
    assert not errors, errors


# -- state shared by windows and restarts ---------------------------------------------------------


@pytest.mark.slow
def test_statuses_survive_a_restart_and_a_second_window_sees_them(qtbot, dataset_dir, errors, monkeypatch, tmp_path):
    a = _window(qtbot, errors, tmp_path / "a.ini", reviewer="alice")
    b = _window(qtbot, errors, tmp_path / "b.ini", reviewer="bob")
    ca = _open_dataset(qtbot, a, dataset_dir, monkeypatch)
    cb = _open_dataset(qtbot, b, dataset_dir, monkeypatch)
    select_row(ca.panel.table, 2)
    ca.panel.status_buttons["done"].click()
    # b's worklist follows the file (watcher), without a click
    qtbot.waitUntil(lambda: _status(b, CASES[2]) == "done", timeout=10000)
    select_row(cb.panel.table, 3)
    cb.panel.status_buttons["flagged"].click()
    qtbot.waitUntil(lambda: _status(a, CASES[3]) == "flagged", timeout=10000)
    assert _status(a, CASES[2]) == "done" and _status(b, CASES[2]) == "done"  # neither lost the other's
    assert cb.panel.model.case_state(CASES[3]).reviewer == "bob"
    a.close()
    b.close()

    c = _window(qtbot, errors, tmp_path / "c.ini")
    cc = _open_dataset(qtbot, c, dataset_dir, monkeypatch)
    assert _status(c, CASES[2]) == "done" and _status(c, CASES[3]) == "flagged"
    assert cc.progress_label.text() == "1 of 6 done, 1 flagged"
    assert not errors, errors


@pytest.mark.slow
def test_the_reviewer_is_asked_once_and_kept_in_the_settings(qtbot, dataset_dir, errors, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QInputDialog

    asked = []

    def answer(dialog):
        asked.append(dialog.labelText())
        dialog.setTextValue("  carol ")
        return 1

    monkeypatch.setattr(QInputDialog, "exec", answer)
    w = _window(qtbot, errors, tmp_path / "s.ini", reviewer="")
    ctl = _open_dataset(qtbot, w, dataset_dir, monkeypatch)
    for row, status in ((0, "in_review"), (1, "done")):
        select_row(ctl.panel.table, row)
        ctl.panel.status_buttons[status].click()
    assert len(asked) == 1 and "name" in asked[0]
    assert w.settings.reviewer() == "carol"
    assert Settings(path=str(tmp_path / "s.ini")).reviewer() == "carol"  # kept for the next start
    assert [ctl.case_state(c).reviewer for c in CASES[:2]] == ["carol", "carol"]
    assert not errors, errors


def test_active_time_counts_input_while_the_window_is_active_not_idle_time(qtbot, tmp_path, errors):
    from app.dataset.activity import ActiveTime

    now = [100.0]
    w = _window(qtbot, errors, tmp_path / "s.ini")
    _activate(qtbot, w)
    t = ActiveTime(w, clock=lambda: now[0], idle_s=60.0)
    t.start()
    for _ in range(10):  # ten seconds of work, input every second
        now[0] += 1.0
        QTest.mouseMove(w.views["axial"], QPoint(10 + int(now[0]) % 5, 10))
    now[0] += 600.0  # ten minutes away: only a minute of it counts (the idle limit)
    t.tick()
    assert t.take() == pytest.approx(70.0, abs=1.0)
    now[0] += 5.0
    t.input()
    assert t.take() == pytest.approx(0.0, abs=1e-6)  # after an absence, time counts from the first input


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.slow
def test_dataset_on_the_command_line(qtbot, dataset_dir, monkeypatch):
    """`airway-studio --dataset DIR` as main() parses and runs it (the window's exec replaced by a look)."""
    import app.__main__ as gui

    seen = []

    def look(app, window, job, path):
        qtbot.addWidget(window)
        qtbot.waitUntil(lambda: job.state == "done", timeout=60000)
        QApplication.processEvents()
        seen.append((window.dataset.dataset, window.dataset.panel.ordered_cases(), window.dataset.dock.isVisible()))
        window.close()
        return 0

    monkeypatch.setattr(gui, "_screenshot", look)
    assert gui.main(["--dataset", str(dataset_dir), "--screenshot", str(dataset_dir / "shot.png")]) == 0
    ((ds, rows, visible),) = seen
    assert ds.root == dataset_dir.resolve() and rows == CASES and visible
    help_text = gui.build_parser().format_help()
    assert "--dataset DIR" in help_text


@pytest.mark.slow
def test_dataset_on_the_command_line_in_a_process(tmp_path):
    """The installed entry point with a folder that is no dataset: one line, exit 2, no traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "app", "--dataset", str(tmp_path / "nothing"), "--screenshot", str(tmp_path / "x.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "No such dataset folder" in out.stderr and "Traceback" not in out.stderr
