"""The Segment panel's method choice (issue 11): region growing in a worker job, model cards, gate warnings."""

from __future__ import annotations

import numpy as np
from jobs import run_job_and_wait

from app.review.case import Case, PredictionEntry
from app.review.segment_panel import GrowingRun, SegmentPanel
from core.volume import LabelVolume


def _case(with_reference: bool = False) -> Case:
    from core.phantom import make_phantom
    from core.volume import to_canonical

    ph = make_phantom((64, 64, 64), spacing=(1.5, 1.5, 2.0), seed=0)
    case = Case(auto_analyse=False)
    ct, _ = to_canonical(ph.ct)
    case.set_ct(ct, name="phantom")
    if with_reference:
        ref, _ = to_canonical(ph.label)
        case.set_reference(ref)
    return case


def _panel(qtbot, case: Case, errors: list) -> SegmentPanel:
    panel = SegmentPanel(case, show_error=errors.append)
    qtbot.addWidget(panel)
    panel.show()
    return panel


def test_region_growing_is_the_default_and_choosing_a_checkpoint_selects_the_model(qtbot, tmp_path):
    from app.review.segment_panel import demo_checkpoint

    errors: list = []
    panel = _panel(qtbot, _case(), errors)
    assert panel.method == "region-growing"
    demo = demo_checkpoint()
    if demo is not None:
        # the prefilled shipped model shows what it was trained on, without importing torch
        assert "mixed" in panel.card_label.text() and "real chest CT" in panel.card_label.text()
        assert "held-out:" in panel.card_label.toolTip()
    bogus = tmp_path / "x.pt"
    bogus.write_bytes(b"not a zip")
    panel.checkpoint_edit.setText(str(bogus))
    assert panel.method == "model"
    assert "no header" in panel.card_label.text()


def test_region_growing_runs_in_a_job_and_adds_a_prediction(qtbot):
    case = _case()
    errors: list = []
    panel = _panel(qtbot, case, errors)
    # Run is clicked with the panel's and the case's signals already connected: a fast job
    # reports before a connection made after start() could see it
    done = run_job_and_wait(
        qtbot,
        panel.run_button.click,
        until=panel.segmentationFinished,
        record={"predictions": case.predictionsChanged},
        timeout=120000,
    )
    run = panel.run
    assert isinstance(run, GrowingRun) and run.state == "done" and not errors
    assert done.recorded["predictions"] and done.args == [len(case.predictions) - 1]
    entry = case.predictions[-1]
    assert entry.source == "region-growing" and entry.probabilities is None and entry.warnings == []
    assert entry.mask.shape == case.ct.shape and entry.mask.any()
    text = panel.message.text()
    assert "metrics and regions follow" not in text and "no reference" in text
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_region_growing_reports_its_progress_from_the_first_step(qtbot):
    case = _case()
    run = GrowingRun(case)
    done = run_job_and_wait(qtbot, run.start, until=run.ended, record={"progress": run.progress}, timeout=120000)
    assert run.state == "done"
    messages = [m for _, _, m in done.recorded["progress"]]
    assert messages[0] == "Region growing: resampling" and all(isinstance(m, str) for m in messages)
    assert all(t == 0 or 0 <= d <= t for d, t, _ in done.recorded["progress"])


def test_cancelled_growing_leaves_the_case_unchanged(qtbot):
    case = _case()
    errors: list = []
    panel = _panel(qtbot, case, errors)
    run = panel.start()
    assert isinstance(run, GrowingRun) and run.running and panel.cancel_button.isEnabled()
    run_job_and_wait(qtbot, panel.cancel_button.click, until=run.cancelled)
    assert case.predictions == [] and not errors and "unchanged" in panel.message.text()


def test_a_ct_without_a_trachea_shows_one_error(qtbot):
    from core.errors import InputError
    from core.volume import IntensityVolume

    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.zeros((32, 32, 32), np.int16)), name="flat")
    errors: list = []
    panel = _panel(qtbot, case, errors)
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.run is not None and not panel.run.running, timeout=60000)
    assert len(errors) == 1 and isinstance(errors[0], InputError) and case.predictions == []


def test_a_gate_warning_shows_on_the_prediction(qtbot):
    from app.review.metrics_panel import MetricsPanel

    case = _case(with_reference=True)
    errors: list = []
    panel = _panel(qtbot, case, errors)
    metrics = MetricsPanel(case)
    qtbot.addWidget(metrics)
    mask = np.zeros(case.ct.shape, bool)
    mask[:, :3, 10:50] = True
    warning = "this mask does not look like the CT's airway: its largest component misses the trachea"
    index = case.add_prediction(
        PredictionEntry(
            name="demo", label=LabelVolume(mask, case.ct.geometry), source="model:demo.pt", warnings=[warning]
        )
    )
    panel._on_finished(index)
    assert "Warning on 'demo'" in panel.message.text() and warning in panel.message.text()
    assert "metrics and regions follow" in panel.message.text()  # a reference is loaded
    assert warning in metrics.status.text()
    assert warning in metrics.summary.horizontalHeaderItem(0).toolTip()
