"""Per-case view state, save prompts after edits (the demo too), the heat map's colour bar."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QMessageBox
from window_keys import wait_not_busy

from app.demo import TEST_PARAMS
from app.main_window import MainWindow
from app.settings import Settings


def test_new_case_resets_zoom_and_custom_window_and_edits_ask_to_save(qtbot, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda *a, **k: asked.append(a[2] if len(a) > 2 else "") or QMessageBox.StandardButton.Discard,
    )
    monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.StandardButton.Ok)
    w = MainWindow(settings=Settings(path=str(tmp_path / "s.ini")), install_panels=False, training_tab=False)
    qtbot.addWidget(w)
    w.resize(1100, 760)
    w.show()
    with qtbot.waitSignal(w.caseLoaded, timeout=60000):
        w.open_demo(TEST_PARAMS)
    qtbot.waitUntil(lambda: w.case.active.regions is not None, timeout=120000)
    w.views["axial"].zoom_by(3.0)
    w.display.set_window(400, 50)
    assert w.display.settings.preset == "custom"
    assert not asked and w.maybe_save()  # nothing edited yet: no question
    w.case.set_region_status(0, "confirmed")
    with qtbot.waitSignal(w.caseLoaded, timeout=60000):
        w.open_demo(TEST_PARAMS)  # the edited demo asks first (answered: discard)
    assert len(asked) == 1 and "Save the review" in asked[0]
    assert all(v.zoom == 1.0 for v in w.views.values())
    assert w.display.settings.preset != "custom"
    wait_not_busy(qtbot, w, 60000)
    w.case._set_modified(False)
    w.close()


def test_heat_map_has_a_colour_bar(qtbot):
    from app.review.case import Case, PredictionEntry
    from app.review.slice_view import DisplaySettings, DisplayState, SliceView
    from core.volume import Geometry, IntensityVolume, LabelVolume

    shape, geo = (20, 40, 40), Geometry((1.0, 1.0, 1.0))
    case = Case(auto_analyse=False)
    case.set_ct(IntensityVolume(np.full(shape, -1000, np.int16), geo, name="ct"))
    prob = np.zeros(shape, np.float32)
    prob[:, 10:30, 10:30] = 0.7
    case.add_prediction(PredictionEntry("p", LabelVolume(prob > 0.5, geo), IntensityVolume(prob, geo)))
    display = DisplayState(DisplaySettings())
    view = SliceView(case, "axial", display)
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)

    def bar_pixel():
        img = view.grab().toImage()
        x, y = view.width() - 10 // 2 - 30, view.height() // 2 - 40  # upper half of the bar: yellow-white
        c = img.pixelColor(int(x * img.devicePixelRatio()), int(y * img.devicePixelRatio()))
        return c.red(), c.green(), c.blue()

    before = bar_pixel()
    display.update(heatmap=True)
    after = bar_pixel()
    assert after != before and after[0] > 200 and after[1] > 100  # hot colours where the bar is
