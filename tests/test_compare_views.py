"""The Compare tab as a researcher reads it (issue 24): Review -> Compare with the review's own
metrics (equal to `airway evaluate`), figures keyed by the files' content (a changed file says
"rerun"), plots that resize with their panel, panes zoomed to the airway, a per-case row that
opens its case, and the output gate of models run by the compare."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from scipy import ndimage

from app.compare import CompareTab
from core.cli import main
from core.io import write_volume
from core.volume import LabelVolume

SHOTS = os.environ.get("AIRWAY_SCREENSHOTS")  # a folder to keep the screenshots in (benchmarks, review)


def _phantom(seed: int, size: int = 64):
    from core.phantom import make_phantom

    return make_phantom(size, seed=seed, vessels=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """ref/ + cts/ (nnU-Net names) and two models' predictions of 3 phantom cases."""
    root = tmp_path_factory.mktemp("views")
    for d in ("ref", "cts", "eroded", "dilated"):
        (root / d).mkdir()
    for i in range(3):
        ph = _phantom(i)
        lab, g = ph.label, ph.label.geometry
        write_volume(ph.ct, root / "cts" / f"case_{i}_0000.nii.gz")
        write_volume(lab, root / "ref" / f"case_{i}.nii.gz")
        write_volume(LabelVolume(ndimage.binary_erosion(lab.array), g), root / "eroded" / f"case_{i}.nii.gz")
        write_volume(LabelVolume(ndimage.binary_dilation(lab.array), g), root / "dilated" / f"case_{i}.nii.gz")
    return root


def _run_compare(folders: Path, out: Path, preds: dict[str, Path]) -> None:
    argv = ["compare", "--reference", str(folders / "ref")]
    argv += ["--predictions", *(f"{m}={d}" for m, d in preds.items()), "--out", str(out), "-q", "--no-snapshots"]
    assert main(argv) == 0


@pytest.fixture
def tab(qtbot):
    t = CompareTab(with_3d=False)
    qtbot.addWidget(t)
    t.resize(1200, 800)
    t.show()
    qtbot.waitExposed(t)
    return t


def _column(table, name: str) -> int:
    for j in range(table.columnCount()):
        if table.horizontalHeaderItem(j).text() == name:
            return j
    raise KeyError(name)


def _row_texts(table) -> list[list[str]]:
    return [
        [table.item(i, j).text() if table.item(i, j) else "" for j in range(table.columnCount())]
        for i in range(table.rowCount())
    ]


@pytest.mark.slow
def test_a_changed_file_withdraws_its_figures(folders, tmp_path, tab, qtbot):
    """Why: panes reloaded the current mask files while the tables came from the earlier run."""
    import shutil

    work = tmp_path / "eroded"
    shutil.copytree(folders / "eroded", work)
    out = tmp_path / "out"
    _run_compare(folders, out, {"eroded": work, "dilated": folders / "dilated"})
    # the file changes after the comparison (same name, other content)
    lab = _phantom(1).label
    write_volume(LabelVolume(ndimage.binary_erosion(lab.array, iterations=3), lab.geometry), work / "case_1.nii.gz")
    tab.open_folder(out)
    m = tab.metrics
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "case_0", timeout=20000)
    # every file is hashed on opening: the change is named before its case is shown
    qtbot.waitUntil(lambda: m.stale == {("case_1", "eroded")}, timeout=20000)
    assert "rerun" in m.banner.text() and m.banner.isVisible()
    # a file re-saved with the same voxels (other bytes) keeps its figures once its masks are read
    lab0 = _phantom(0).label
    write_volume(LabelVolume(ndimage.binary_erosion(lab0.array), lab0.geometry), work / "case_0.nii", compress=False)
    (work / "case_0.nii.gz").unlink()
    (work / "case_0.nii").rename(work / "case_0.nii.gz")
    tab.check_files()
    qtbot.waitUntil(lambda: ("case_0", "eroded") in m.stale, timeout=20000)
    tab.open_case("case_0")
    qtbot.waitUntil(lambda: ("case_0", "eroded") not in m.stale, timeout=20000)
    tab.open_case("case_1")
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "case_1", timeout=20000)
    qtbot.waitUntil(lambda: bool(m.stale), timeout=5000)
    assert m.stale == {("case_1", "eroded")}
    rows = {(r[0], r[1]): r for r in _row_texts(m.per_case)}
    assert "changed since the comparison: rerun" in rows[("case_1", "eroded")]
    assert rows[("case_1", "dilated")][_column(m.per_case, "dsc")] not in ("", "-")
    assert "rerun" in m.banner.text() and m.banner.isVisible()
    titles = {p.case.active.name: p.title.text() for p in tab.layout_view.panes}
    assert "rerun" in titles["eroded"] and "rerun" not in titles["dilated"]


@pytest.mark.slow
def test_per_case_row_opens_its_case_zoomed_to_the_airway(folders, tmp_path, tab, qtbot):
    """Why: no click from a per-case row to that case; the airway filled a small part of each pane."""
    out = tmp_path / "out"
    _run_compare(folders, out, {"eroded": folders / "eroded", "dilated": folders / "dilated"})
    tab.open_folder(out)
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "case_0", timeout=20000)
    m = tab.metrics
    m.tabs.setCurrentWidget(m.per_case)
    row = next(i for i in range(m.per_case.rowCount()) if m.per_case.item(i, 0).text() == "case_2")
    m.per_case.scrollToItem(m.per_case.item(row, 0))
    rect = m.per_case.visualItemRect(m.per_case.item(row, 1))
    QTest.mouseClick(m.per_case.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "case_2", timeout=20000)
    assert tab.case_combo.currentData() == "case_2"
    views = tab.layout_view.slice_views()
    qtbot.waitUntil(lambda: views[0].zoom > 1.0, timeout=5000)
    assert len({v.zoom for v in views}) == 1  # linked
    # the airway's box fills most of the pane in one direction at least
    box = tab.layout_view.state.airway_box()
    assert box is not None
    v = views[0]
    (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
    a, b = v.voxel_to_widget((z0, y0, x0)), v.voxel_to_widget((z1 - 1, y1 - 1, x1 - 1))
    share = max(abs(b.x() - a.x()) / v.width(), abs(b.y() - a.y()) / v.height())
    assert share > 0.6, share


@pytest.mark.slow
@pytest.mark.parametrize("size", [(1024, 700), (1920, 1080)])
def test_plots_resize_with_their_panel(folders, tmp_path, qtbot, size):
    """Why: fixed-size plot images in a ~230 px panel were cut off and scrolled both ways."""
    from PySide6.QtWidgets import QMainWindow, QTabWidget

    out = tmp_path / "out"
    _run_compare(folders, out, {"eroded": folders / "eroded", "dilated": folders / "dilated"})
    win = QMainWindow()
    tabs = QTabWidget()
    t = CompareTab(with_3d=False)
    tabs.addTab(t, "Compare")
    win.setCentralWidget(tabs)
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    t.open_folder(out)
    qtbot.waitUntil(lambda: t.layout_view.state.case_name == "case_0", timeout=20000)
    m = t.metrics
    m.tabs.setCurrentWidget(m.plot_view)
    qtbot.waitUntil(lambda: m.plot_view.isVisible() and m.plot_view.view.width() > 50, timeout=5000)
    page = m.tabs.currentWidget()
    # the plots fill the panel (no scroll area, nothing cut): their canvas is the panel's size
    key = m.plot_view.key.height()
    assert m.plot_view.view.width() >= page.width() - 4 and m.plot_view.view.height() >= page.height() - key - 12
    assert "eroded" in m.plot_view.key.text() and "dilated" in m.plot_view.key.text()
    for plot in (m.plot_view.dsc_plot, m.plot_view.bd_plot):
        r = plot.sceneBoundingRect()
        assert r.width() > 100 and r.right() <= m.plot_view.view.width() + 1
    before = m.plot_view.dsc_plot.sceneBoundingRect().width()
    win.resize(size[0] + 300, size[1])
    qtbot.waitUntil(lambda: m.plot_view.dsc_plot.sceneBoundingRect().width() != before, timeout=5000)
    win.resize(*size)
    qtbot.waitUntil(lambda: m.plot_view.dsc_plot.sceneBoundingRect().width() == before, timeout=5000)
    views = t.layout_view.slice_views()
    qtbot.waitUntil(lambda: all(v.current_rgb() is not None for v in views), timeout=5000)
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for name, widget in (("plots", m.plot_view), ("tab", win)):
        path = folder / f"compare_{name}_{size[0]}x{size[1]}.png"
        assert win.grab().save(str(path)) if widget is win else widget.grab().save(str(path))
        assert path.stat().st_size > 1000


def test_review_to_compare_shows_the_reviews_metrics_equal_to_evaluate(folders, tmp_path, qtbot, monkeypatch):
    """Why: "Tools > Compare this case's predictions" opened the tab with empty tables and plots."""
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.review.case import Case, load_case
    from app.settings import Settings

    monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.StandardButton.Ok)
    preds = [folders / "eroded" / "case_0.nii.gz", folders / "dilated" / "case_0.nii.gz"]
    case = Case()
    loaded = load_case(folders / "cts" / "case_0_0000.nii.gz", folders / "ref" / "case_0.nii.gz", preds)
    w = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    case.apply_loaded(loaded)
    qtbot.waitUntil(
        lambda: len(case.predictions) == 2 and all(p.metrics is not None for p in case.predictions), timeout=60000
    )
    w.compare_actions["case"].trigger()  # the real menu action
    tab = w.compare_tab
    assert w.tabs.currentWidget() is tab
    m = tab.metrics
    assert tab.case_combo.count() == 1 and tab.model_list.count() == 2
    assert m.summary.rowCount() == 2 and m.per_case.rowCount() == 2
    assert np.isfinite(m.plot_view.series["dsc:" + case.predictions[0].name]).any()
    ev = tmp_path / "ev.json"
    assert (
        main(
            [
                "evaluate",
                "--reference",
                str(folders / "ref" / "case_0.nii.gz"),
                "--prediction",
                *map(str, preds),
                "--json",
                str(ev),
            ]
        )
        == 0
    )
    evaluated = json.loads(ev.read_text())["cases"]  # in the order of the files given
    assert [c["model"] for c in evaluated] == ["eroded/case_0", "dilated/case_0"]
    rows = {r.model: r for r in tab.result.rows}
    for p, e in zip(case.predictions, evaluated):
        for k in ("td", "bd", "dsc", "precision", "n_branches", "n_detected"):
            assert rows[p.name].metrics[k] == pytest.approx(e[k]), (p.name, k)
        dsc_cell = m.per_case.item(list(rows).index(p.name), _column(m.per_case, "dsc")).text()
        assert float(dsc_cell) == pytest.approx(e["dsc"], abs=0.006)
    # the model list picks panes from the review's own masks (no file is read)
    errors: list[object] = []
    monkeypatch.setattr(w, "report_error", lambda *a, **k: errors.append(a))
    tab.model_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    state = tab.layout_view.state
    qtbot.waitUntil(lambda: [p.name for p in state.predictions] == [case.predictions[0].name], timeout=30000)
    assert not errors
    w.cancel_jobs()


def test_gate_results_are_shown_and_a_model_failing_everywhere_is_flagged(folders, tmp_path, tab, qtbot):
    from core.compare import compare_folders, read_outputs, write_outputs

    res = compare_folders(folders / "ref", {"eroded": folders / "eroded", "dilated": folders / "dilated"})
    res.gate = {
        "eroded": {c: {"passed": True, "problems": []} for c in res.cases},
        "dilated": {c: {"passed": False, "problems": ["the mask is empty"]} for c in res.cases},
    }
    write_outputs(res, tmp_path / "out", snapshots=False)
    back = read_outputs(tmp_path / "out")
    assert back.gate_failed_everywhere() == ["dilated"]
    tab.open_folder(tmp_path / "out")
    m = tab.metrics
    assert "dilated: every mask failed the output gate" in m.banner.text()
    gate = _column(m.summary, "output gate")
    cells = {m.summary.item(i, 0).text(): m.summary.item(i, gate).text() for i in range(2)}
    assert cells == {"eroded": "passed 3 of 3", "dilated": "passed 0 of 3"}
    assert "failed: the mask is empty" in {r[_column(m.per_case, "gate")] for r in _row_texts(m.per_case)}
    qtbot.waitUntil(lambda: len(tab.layout_view.panes) == 2, timeout=20000)
    titles = {p.case.active.name: p.title.text() for p in tab.layout_view.panes}
    assert "output gate failed: the mask is empty" in titles["dilated"] and "gate" not in titles["eroded"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "id='gate-dilated'" in html and "failed the output gate on every case" in html
    assert html.index("gate-dilated") < html.index("<h2>")  # at the top, before any detail


def test_tools_open_compare_results_reads_in_a_job(folders, tmp_path, qtbot, monkeypatch):
    """Tools > Open compare results: the folder is read and its statistics computed off the GUI
    thread (a 150-case compare stalled the window 0.65 s), with the same tables as a direct read;
    a folder that is no compare output is explained, not a traceback."""
    import threading

    from PySide6.QtWidgets import QFileDialog

    import core.compare.output as output
    from app.main_window import MainWindow
    from app.settings import Settings

    out = tmp_path / "out"
    _run_compare(folders, out, {"eroded": folders / "eroded", "dilated": folders / "dilated"})
    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    errors: list[object] = []
    monkeypatch.setattr(w, "report_error", lambda exc, *a, **k: errors.append(exc))
    w.compare_tab.report_error = w.report_error
    reads: list[bool] = []
    real_read = output.read_outputs

    def spy(*args, **kwargs):
        reads.append(threading.current_thread() is threading.main_thread())
        return real_read(*args, **kwargs)

    monkeypatch.setattr(output, "read_outputs", spy)
    monkeypatch.setattr("core.compare.read_outputs", spy)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(out)))
    tab = w.compare_tab
    with qtbot.waitSignal(tab.folderOpened, timeout=60000):
        w.compare_actions["open"].trigger()  # the real menu action
    assert reads == [False] and not errors  # read on a worker thread
    assert w.tabs.currentWidget() is tab and tab.folder == out
    shown = _row_texts(tab.metrics.summary)
    direct = CompareTab(with_3d=False)
    qtbot.addWidget(direct)
    direct.open_folder(out)
    assert shown == _row_texts(direct.metrics.summary) and tab.metrics.tables == direct.metrics.tables
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name != "", timeout=30000)  # the first case shown

    # not a compare folder: one clear message
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folders / "ref")))
    w.compare_actions["open"].trigger()
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert "compare" in str(errors[0]).lower() and tab.folder == out  # what was open stays open
    w.cancel_jobs()
