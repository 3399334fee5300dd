"""The Compare tab's per-lobe table: the mean TD / BD per lobe and model of an `airway compare` folder, and,
after a click on a per-case row, that case and model's lobes and the segmental bronchi it misses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.compare import CompareTab
from app.review.view3d import branch_groups, three_d_supported
from core.anatomy import label_tree
from core.anatomy.textbook import textbook_mask, textbook_tree
from core.cli import main
from core.io import write_volume
from core.tree import parse_tree
from core.volume import LabelVolume


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    """One textbook case; model 'nolll' misses the left lower lobe, model 'full' is the reference."""
    root = tmp_path_factory.mktemp("anatomy_app")
    for d in ("ref", "nolll", "full"):
        (root / d).mkdir()
    vol = textbook_mask(textbook_tree(), (2.0, 2.0, 2.0))
    tree = parse_tree(vol)
    names = label_tree(tree, geometry=vol.geometry)
    full = tree.branch_label_map()
    lll = [b.id for b in tree.branches if names.lobe_of(b.id) == "LLL"]
    write_volume(vol, root / "ref" / "t0.nii.gz")
    write_volume(vol, root / "full" / "t0.nii.gz")
    write_volume(
        LabelVolume(((full > 0) & ~np.isin(full, lll)).astype(np.uint8), vol.geometry), root / "nolll" / "t0.nii.gz"
    )
    argv = ["compare", "--reference", str(root / "ref"), "--predictions", f"nolll={root / 'nolll'}"]
    assert main(argv + [f"full={root / 'full'}", "--out", str(root / "out"), "-q", "--no-snapshots"]) == 0
    return root / "out"


def _cell(table, row: int, col: int) -> str:
    return table.item(row, col).text()


@pytest.mark.slow
def test_compare_tab_shows_the_lobes_of_the_clicked_case(qtbot, compared):
    tab = CompareTab(with_3d=three_d_supported())
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    qtbot.waitExposed(tab)
    tab.open_folder(compared)
    m = tab.metrics
    page = m.tabs.indexOf(m.lobes_page)
    assert m.tabs.tabText(page) == "Per lobe"
    # the means over cases first: a lobe x model table
    heads = [m.lobes.horizontalHeaderItem(j).text() for j in range(m.lobes.columnCount())]
    assert heads == ["lobe", "nolll TD / BD", "full TD / BD"]
    lobes = [_cell(m.lobes, i, 0) for i in range(m.lobes.rowCount())]
    assert lobes == ["RUL", "RML", "RLL", "LUL", "LLL", "central", "unnamed"]
    assert _cell(m.lobes, 4, 1) == "0.00 / 0.00 (n 1)" and _cell(m.lobes, 4, 2) == "100.00 / 100.00 (n 1)"

    # a click on the per-case row of t0 / nolll: that pair's lobes and its missed segmental bronchi
    m.tabs.setCurrentWidget(m.per_case)
    row = next(i for i in range(m.per_case.rowCount()) if _cell(m.per_case, i, 1) == "nolll")
    rect = m.per_case.visualItemRect(m.per_case.item(row, 0))
    qtbot.mouseClick(m.per_case.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: m.lobes_pair == ("t0", "nolll"), timeout=5000)
    assert m.lobes_title.text().startswith("t0 / nolll: segmental bronchi detected ")
    assert "missed LB6" in m.lobes_title.text()
    heads = [m.lobes.horizontalHeaderItem(j).text() for j in range(m.lobes.columnCount())]
    assert heads == ["lobe", "TD %", "BD %", "branches", "detected"]
    by = {_cell(m.lobes, i, 0): i for i in range(m.lobes.rowCount())}
    assert _cell(m.lobes, by["LLL"], 2) == "0.00" and _cell(m.lobes, by["RUL"], 2) == "100.00"
    assert _cell(m.lobes, by["unnamed"], 1) == "n/a"  # no branch there: n/a, not 0
    qtbot.waitUntil(lambda: tab.layout_view.state.case_name == "t0", timeout=20000)


@pytest.mark.slow
def _review_window(qtbot, compared: Path, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """The review of case t0 with both models, analysed and named: (window, case, prediction files)."""
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.review.case import Case, load_case
    from app.settings import Settings
    from core.io import read_label
    from core.volume import IntensityVolume

    monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.StandardButton.Ok)
    data = compared.parent
    ref = read_label(data / "ref" / "t0.nii.gz")
    ct = IntensityVolume(np.where(ref.array > 0, -980, 40).astype(np.int16), ref.geometry, name="ct")
    write_volume(ct, tmp_path / "t0_0000.nii.gz")
    preds = [data / "nolll" / "t0.nii.gz", data / "full" / "t0.nii.gz"]
    case = Case()
    loaded = load_case(tmp_path / "t0_0000.nii.gz", data / "ref" / "t0.nii.gz", preds)
    w = MainWindow(case=case, settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    case.apply_loaded(loaded)
    qtbot.waitUntil(
        lambda: len(case.predictions) == 2 and all(case.anatomy_scores(i) is not None for i in range(2)),
        timeout=60000,
    )
    return w, case, preds


def test_review_to_compare_carries_the_reviews_per_lobe_figures(qtbot, compared, tmp_path, monkeypatch):
    """Tools > Compare this case's predictions: the Compare tab's per-lobe table holds the review's own
    figures (its names and metrics), equal to `airway evaluate`'s for the same files."""
    import csv

    w, case, preds = _review_window(qtbot, compared, tmp_path, monkeypatch)
    data = compared.parent
    w.compare_actions["case"].trigger()  # the real menu action
    m = w.compare_tab.metrics
    first = case.predictions[0].name
    row = next(i for i in range(m.per_case.rowCount()) if _cell(m.per_case, i, 1) == first)
    rect = m.per_case.visualItemRect(m.per_case.item(row, 0))
    qtbot.mouseClick(m.per_case.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: m.lobes_pair is not None and m.lobes_pair[1] == first, timeout=5000)

    ev = tmp_path / "ev.csv"
    argv = ["evaluate", "--reference", str(data / "ref" / "t0.nii.gz"), "--prediction", str(preds[0])]
    assert main(argv + ["--csv", str(ev)]) == 0
    with open(tmp_path / "ev_lobes.csv", newline="") as f:
        evaluated = {r["lobe"]: r for r in csv.DictReader(f)}
    by = {_cell(m.lobes, i, 0): i for i in range(m.lobes.rowCount())}
    for lobe, r in evaluated.items():
        for col, key in ((1, "td"), (2, "bd")):
            shown = _cell(m.lobes, by[lobe], col)
            assert shown == "n/a" if r[key] == "n/a" else float(shown) == pytest.approx(float(r[key]), abs=0.006)
        assert _cell(m.lobes, by[lobe], 3) == r["branches"] and _cell(m.lobes, by[lobe], 4) == r["detected"]
    assert float(_cell(m.lobes, by["LLL"], 2)) == 0.0
    with open(ev, newline="") as f:
        missed = next(csv.DictReader(f))["segmental_missed"]
    assert m.lobes_title.text().endswith("missed " + missed.replace(" ", ", "))
    w.cancel_jobs()


def test_review_to_compare_panes_colour_the_3d_by_lobe(qtbot, compared, tmp_path, monkeypatch):
    """The Compare panes' 3D views had no names (nor generations): compared from the review, a pane
    compared with the reference colours its tree by lobe, segment or generation, as the review does."""
    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")
    w, case, _ = _review_window(qtbot, compared, tmp_path, monkeypatch)
    w.compare_actions["case"].trigger()
    qtbot.waitUntil(lambda: len(w.compare_tab.layout_view.state.predictions) == 2, timeout=30000)
    panes = w.compare_tab.layout_view.panes
    assert len(panes) == 2 and all(p.view3d is not None for p in panes)
    review_groups = branch_groups(case.session.names.names, "lobe")
    assert set(review_groups.values()) == {"RUL", "RML", "RLL", "LUL", "LLL"}
    v = panes[0].view3d

    def choose(mode: str) -> None:  # the pane's "3D:" box, as a user picks
        v.mode_combo.setCurrentIndex(v.mode_combo.findData(mode))

    for mode in ("lobe", "segment", "generation"):
        choose(mode)
        qtbot.waitUntil(lambda m=mode: v.scene is not None and v.scene.mode == m and not v.busy, timeout=60000)
        assert not v.scene.note, v.scene.note
    choose("lobe")
    qtbot.waitUntil(lambda: v.scene is not None and v.scene.mode == "lobe" and not v.busy, timeout=60000)
    # the review's names, so the review's colours: the legend lists the five lobes
    assert {"RUL", "RML", "RLL", "LUL", "LLL"} <= {name for name, _ in v.scene.legend}
    # compared with the other prediction there is no parsed tree to colour: said, not guessed
    panes[0].case.set_against("1")
    qtbot.waitUntil(lambda: v.scene is not None and v.scene.mode == "outcome" and not v.busy, timeout=60000)
    assert "reference tree" in v.scene.note
    w.cancel_jobs()


def test_compare_folder_panes_colour_the_3d_by_lobe(qtbot, compared, monkeypatch):
    """A case opened from an `airway compare` folder: its reference tree is taken from the folder's
    cache in a job (parsed there when missing), and then the panes colour by lobe as the review's
    3D view does."""
    import core.anatomy
    import core.tree

    if not three_d_supported():
        pytest.skip("needs an X display (Xvfb), not the offscreen platform")

    def parsed_again(*_a, **_k):
        raise AssertionError("parsed or labelled again: `airway compare` cached the tree and its names")

    monkeypatch.setattr(core.tree, "parse_tree", parsed_again)
    monkeypatch.setattr(core.anatomy, "label_tree", parsed_again)
    tab = CompareTab(with_3d=True)
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    qtbot.waitExposed(tab)
    tab.open_folder(compared)
    state = tab.layout_view.state
    qtbot.waitUntil(lambda: state.case_name == "t0" and state.branch_map is not None, timeout=60000)
    # on the panes' (canonical) grid: the branch map lies on the reference shown
    tree_voxels = state.branch_map > 0
    assert tree_voxels.shape == state.reference.mask.shape
    assert not (tree_voxels & ~state.reference.mask).any() and tree_voxels.sum() > 0.9 * state.reference.mask.sum()
    assert set(branch_groups(state.names, "lobe").values()) == {"RUL", "RML", "RLL", "LUL", "LLL"}
    v = tab.layout_view.panes[0].view3d
    v.mode_combo.setCurrentIndex(v.mode_combo.findData("lobe"))  # the pane's "3D:" box
    qtbot.waitUntil(lambda: v.scene is not None and v.scene.mode == "lobe" and not v.busy, timeout=60000)
    assert not v.scene.note and {"RUL", "RML", "RLL", "LUL", "LLL"} <= {name for name, _ in v.scene.legend}


def test_reference_tree_without_a_cache_is_parsed_and_named(tmp_path):
    """`core.compare.reference_tree` with no cache (a compare run with --no-cache): parsed and named
    now, the same tree and names a compare makes; with a cache, kept there for the next time."""
    from core.compare import CompareSettings, reference_tree
    from core.compare.cache import Cache
    from core.io import read_label

    vol = textbook_mask(textbook_tree(), (2.0, 2.0, 2.0))
    write_volume(vol, tmp_path / "ref.nii.gz")
    raw = read_label(tmp_path / "ref.nii.gz")
    direct = parse_tree(raw)
    tree, names = reference_tree(tmp_path / "ref.nii.gz", raw, CompareSettings(), Cache(None))
    assert len(tree.branches) == len(direct.branches)
    assert np.array_equal(np.asarray(tree.branch_label_map()), np.asarray(direct.branch_label_map()))
    assert {names.lobe_of(b.id) for b in tree.branches} >= {"RUL", "RML", "RLL", "LUL", "LLL"}
    cache = Cache(tmp_path / "cache")
    reference_tree(tmp_path / "ref.nii.gz", raw, CompareSettings(), cache)
    assert cache.stats["trees_parsed"] == 1 and (tmp_path / "cache" / "trees").is_dir()
    again = Cache(tmp_path / "cache")
    reference_tree(tmp_path / "ref.nii.gz", raw, CompareSettings(), again)
    assert again.stats["trees_hits"] == 1
