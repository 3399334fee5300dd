"""Label-only cases: a reference and predictions without their CT (as ATM'22 predictions travel)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QMessageBox

from app.review.case import BLANK_CT_HU, is_blank_ct, load_case


@pytest.fixture(scope="module")
def label_files(tmp_path_factory, tiny_demo):
    from core.io import write_volume

    d = tmp_path_factory.mktemp("labels")
    ref, pred = d / "case_ref.nii.gz", d / "case_pred.nii.gz"
    write_volume(tiny_demo.reference, ref)
    write_volume(tiny_demo.prediction, pred)
    return str(ref), str(pred), tiny_demo


def test_load_case_without_ct_gives_a_blank_background_without_memory(label_files):
    ref, pred, demo = label_files
    loaded = load_case(None, ref, [pred])
    assert is_blank_ct(loaded.ct) and loaded.ct.shape == demo.reference.shape
    assert loaded.ct.array.strides == (0, 0, 0)  # one value broadcast, no volume allocated
    assert int(loaded.ct.array[3, 4, 5]) == BLANK_CT_HU
    np.testing.assert_allclose(loaded.ct.geometry.spacing, demo.reference.geometry.spacing)
    assert loaded.reference.mask.sum() == demo.reference.mask.sum()
    assert len(loaded.predictions) == 1
    # predictions alone open too
    only = load_case(None, None, [pred])
    assert is_blank_ct(only.ct) and only.reference is None


def test_window_opens_labels_only_with_metrics_regions_and_navigator(qtbot, label_files, monkeypatch):
    from app.main_window import MainWindow, format_probe
    from app.settings import Settings

    shown = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or QMessageBox.StandardButton.Discard)
    ref, pred, _demo = label_files
    w = MainWindow(settings=Settings(ephemeral=True), training_tab=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    with qtbot.waitSignal(w.caseLoaded, timeout=60000):
        w.open_files(None, ref, [pred])
    case = w.case
    assert is_blank_ct(case.ct)
    qtbot.waitUntil(lambda: case.active is not None and case.active.regions is not None, timeout=120000)
    assert case.active.metrics is not None and case.active.metrics.dsc < 100
    nav = w.panels.regions
    qtbot.waitUntil(lambda: nav.proxy.rowCount() > 0, timeout=10000)
    w.action_table["next_region"].trigger()
    assert case.active_region >= 0 and w.views["axial"].zoom > 1.0
    assert "HU" not in format_probe(case.probe(case.cursor))
    img = w.views["axial"].current_rgb()
    assert img is not None and img.std() > 0  # overlay drawn over the neutral background
    running = list(w.jobs)
    w.segment_with("nothing.pt")  # no CT: refused with one status message (not an error dialog), nothing started
    assert "Open a CT to segment" in w.statusBar().currentMessage() and all(j in running for j in w.jobs)
    qtbot.waitUntil(lambda: not case.busy and not w.busy, timeout=60000)
    case._set_modified(False)
    w.close()


@pytest.mark.slow
def test_screenshot_of_labels_without_ct(qtbot, label_files, tmp_path, monkeypatch, capsys):
    from app.__main__ import main

    shown = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or QMessageBox.StandardButton.Ok)
    ref, pred, _ = label_files
    out = tmp_path / "labels.png"
    rc = main(["--reference", ref, "--prediction", pred, "--screenshot", str(out), "--size", "1100x720"])
    assert rc == 0 and out.exists() and not shown
    assert "error" not in capsys.readouterr().err.lower()
    img = QImage(str(out))
    assert img.width() >= 1100 * 0.9 and img.height() >= 720 * 0.9
