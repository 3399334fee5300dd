"""Project files (issue 27, items 2 and 9).

- A project file with a field of the wrong type gave an uncaught traceback and a
  half-applied case, or a raw Python message. It is now checked as a whole
  before anything of it is used: one message names every wrong field.
- Saving a project with a prediction made in the app wrote ``PROJECT_NAME.nii.gz``
  over any file of that name. A file already there is now refused, never replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox
from window_keys import wait_not_busy

from app.main_window import MainWindow
from app.review.case import Case, PredictionEntry, load_case
from app.settings import Settings
from core.errors import InputError
from core.review.project import PROJECT_FORMAT, read_project
from core.volume import LabelVolume


def _valid() -> dict:
    """What Case.to_project writes (paths relative to the project file)."""
    return {
        "format": PROJECT_FORMAT,
        "version": 2,
        "name": "case",
        "demo": False,
        "ct": "case_ct.nii.gz",
        "reference": "case_label.nii.gz",
        "reference_selector": None,
        "predictions": [
            {"name": "pred", "path": "case_pred.nii.gz", "source": "file", "statuses": {"ab12": "flagged"}}
        ],
        "active_prediction": 0,
        "cursor": [10, 20, 30],
        "view": {
            "display": {
                "window": 1500.0,
                "level": -600.0,
                "preset": "lung",
                "show_overlay": True,
                "outline": False,
                "opacity": 0.5,
                "visible": {"TP": True, "FP": False},
                "heatmap": False,
                "crosshair": True,
            },
            "zoom": {"axial": 1.5, "coronal": 1},
            "tab": 0,
        },
    }


def _set(data: dict, field: str, value: object) -> dict:
    """``field`` as 'a.b' or 'predictions[0].path'."""
    node: object = data
    parts = field.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return data


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


WRONG = [
    ("version", "2", "a whole number from 1"),
    ("version", 0, "a whole number from 1"),
    ("name", 3, "text or null"),
    ("demo", "yes", "true or false"),
    ("ct", 5, "a file path (text) or null"),
    ("ct", "", "a file path (text) or null"),
    ("reference", ["a.nii.gz"], "a file path (text) or null"),
    ("reference_selector", 1, "text or null"),
    ("predictions", "pred.nii.gz", "a list"),
    ("predictions[0]", "pred.nii.gz", "an object"),
    ("predictions[0].name", 1, "text or null"),
    ("predictions[0].path", 7, "a file path (text) or null"),
    ("predictions[0].source", None, "text"),
    ("predictions[0].statuses", ["flagged"], "an object of region keys to status names or null"),
    ("predictions[0].statuses", {"ab12": 1}, "an object of region keys to status names or null"),
    ("active_prediction", "0", "a whole number"),
    ("active_prediction", 1.5, "a whole number"),
    ("cursor", "abc", "a list of 3 numbers or null"),
    ("cursor", [1, 2], "a list of 3 numbers or null"),
    ("cursor", [1, "2", 3], "a list of 3 numbers or null"),
    ("cursor", [1, float("nan"), 3], "a list of 3 numbers or null"),
    ("view", 3, "an object or null"),
    ("view.display", "lung", "an object or null"),
    ("view.display.window", "wide", "a positive number"),
    ("view.display.level", None, "a number"),
    ("view.display.opacity", 2, "a number from 0 to 1"),
    ("view.display.outline", "no", "true or false"),
    ("view.display.visible", {"TP": "yes"}, "an object of layer names to true or false or null"),
    ("view.zoom", {"axial": "big"}, "an object of view names to positive numbers or null"),
    ("view.tab", "1", "a whole number"),
]


@pytest.mark.parametrize("field,value,expected", WRONG, ids=[f"{f}={v!r}" for f, v, _ in WRONG])
def test_a_wrong_field_is_named_in_one_message(tmp_path, field, value, expected):
    path = _write(tmp_path / "project.json", _set(_valid(), field, value))
    with pytest.raises(InputError) as err:
        read_project(path)
    text = str(err.value)
    assert f"field '{field}' must be {expected}, got " in text, text
    assert text.startswith(str(path)) and text.endswith("Fix the file or open the CT and reference directly.")


def test_every_wrong_field_is_named_at_once(tmp_path):
    data = _set(_set(_set(_valid(), "cursor", "abc"), "view.tab", "x"), "predictions[0].path", 7)
    with pytest.raises(InputError) as err:
        read_project(_write(tmp_path / "project.json", data))
    text = str(err.value)
    assert "field 'cursor' must be a list of 3 numbers or null, got 'abc'" in text
    assert "field 'view.tab' must be a whole number, got 'x'" in text
    assert "field 'predictions[0].path' must be a file path (text) or null, got 7" in text


def test_format_1_statuses_need_region_numbers(tmp_path):
    data = _set(_set(_valid(), "version", 1), "predictions[0].statuses", {"0": "flagged", "abc": "accepted"})
    with pytest.raises(InputError, match=r"'predictions\[0\]\.statuses' must have region numbers as keys"):
        read_project(_write(tmp_path / "project.json", data))
    _set(data, "predictions[0].statuses", {"0": "flagged"})
    assert read_project(_write(tmp_path / "project.json", data))["predictions"][0]["statuses"] == {"0": "flagged"}


def test_valid_and_minimal_projects_still_open(tmp_path):
    data = read_project(_write(tmp_path / "project.json", _valid()))
    assert data["ct"] == str(tmp_path / "case_ct.nii.gz")
    assert data["predictions"][0]["path"] == str(tmp_path / "case_pred.nii.gz")
    minimal = read_project(_write(tmp_path / "old.json", {"format": PROJECT_FORMAT, "ct": "/data/ct.nii.gz"}))
    assert minimal["ct"] == "/data/ct.nii.gz" and minimal["reference"] is None
    nulls = _valid() | {"cursor": None, "view": None, "name": None}
    assert read_project(_write(tmp_path / "nulls.json", nulls))["cursor"] is None


def test_a_newer_version_still_says_update(tmp_path):
    with pytest.raises(InputError, match="newer Airway Studio"):
        read_project(_write(tmp_path / "p.json", _valid() | {"version": 9, "cursor": "abc"}))


# -- in the app -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_demo):
    from core.io import write_volume
    from core.phantom import make_phantom

    d = tmp_path_factory.mktemp("project")
    g = tiny_demo.phantom.ct.geometry
    other = make_phantom(24, seed=3)
    return {
        "ct": str(write_volume(tiny_demo.phantom.ct, d / "case_ct.nii.gz")),
        "ref": str(write_volume(LabelVolume(tiny_demo.reference.mask.astype(np.uint8), g), d / "case_label.nii.gz")),
        "other_ct": str(write_volume(other.ct, d / "other_ct.nii.gz")),
        "other_ref": str(write_volume(other.label, d / "other_label.nii.gz")),
    }


@pytest.fixture
def dialogs(monkeypatch):
    shown: list[QMessageBox] = []

    def record(box: QMessageBox) -> QMessageBox.StandardButton:
        shown.append(box)
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "exec", record)
    return shown


@pytest.fixture
def window(qtbot, dialogs):
    w = MainWindow(settings=Settings(ephemeral=True), install_panels=False, training_tab=False)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.cancel_jobs()
    w.case.cancel_jobs()
    wait_not_busy(qtbot, w, 30000)
    w.close()
    w.deleteLater()
    qtbot.wait(20)


@pytest.mark.parametrize(
    "field,value",
    [("cursor", "abc"), ("view", {"zoom": {"axial": "big"}}), ("predictions", [{"path": 3}]), ("version", "2")],
)
def test_opening_a_damaged_project_shows_one_dialog_and_keeps_the_open_case(
    window, qtbot, dialogs, files, tmp_path, field, value
):
    with qtbot.waitSignal(window.caseLoaded, timeout=30000):
        window.open_files(files["ct"], files["ref"])
    case = window.case
    case.set_cursor((3, 4, 5))
    before = (case.ct_path, case.reference_path, case.cursor, len(case.predictions))
    data = {"format": PROJECT_FORMAT, "version": 2, "ct": files["other_ct"], "reference": files["other_ref"]}
    data[field] = value
    window.open_project(str(_write(tmp_path / "damaged.json", data)))
    qtbot.waitUntil(lambda: bool(dialogs) and not window.busy, timeout=30000)
    assert len(dialogs) == 1
    text = dialogs[0].text()
    assert f"field '{field}" in text and "damaged.json" in text, text
    assert not dialogs[0].detailedText()  # a user error: no traceback under Show Details
    assert (case.ct_path, case.reference_path, case.cursor, len(case.predictions)) == before


def _in_app_prediction(case: Case, name: str, fill: bool) -> PredictionEntry:
    mask = np.zeros(case.ct.shape, bool)
    mask[2:6, 2:6, 2:6] = fill
    entry = PredictionEntry(name, LabelVolume(mask, case.ct.geometry), source="model:x.pt")
    case.add_prediction(entry)
    return entry


def test_saving_a_project_never_replaces_a_file_of_its_side_files_name(window, qtbot, dialogs, files, tmp_path):
    with qtbot.waitSignal(window.caseLoaded, timeout=30000):
        window.open_files(files["ct"], files["ref"])
    _in_app_prediction(window.case, "seg", True)
    mine = tmp_path / "proj_seg.nii.gz"
    mine.write_bytes(b"the user's own segmentation, unrelated to this project")

    assert window.save_project_to(tmp_path / "proj.json") is None
    assert len(dialogs) == 1
    text = dialogs[0].text()
    assert "proj_seg.nii.gz is already there" in text and "move proj_seg.nii.gz away" in text, text
    assert mine.read_bytes() == b"the user's own segmentation, unrelated to this project"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj_seg.nii.gz"]  # nothing half-saved
    assert window.case.modified

    out = window.save_project_to(tmp_path / "other.json")  # the fix the message gives
    assert out is not None and (tmp_path / "other_seg.nii.gz").exists()
    assert mine.read_bytes() == b"the user's own segmentation, unrelated to this project"


def test_predictions_whose_names_give_one_file_name_are_both_kept(qtbot, files, tmp_path):
    from core.io import read_label

    case = Case(auto_analyse=False)
    case.apply_loaded(load_case(files["ct"]))
    _in_app_prediction(case, "seg 1", True)
    _in_app_prediction(case, "seg_1", False)
    proj = case.save_project(tmp_path / "p.json")
    paths = [p["path"] for p in read_project(proj)["predictions"]]
    assert [Path(p).name for p in paths] == ["p_seg_1.nii.gz", "p_seg_1-2.nii.gz"]
    assert [read_label(p).voxel_count() for p in paths] == [64, 0]


def test_a_side_file_is_never_an_input(qtbot, files, tmp_path):
    import shutil

    ct = Path(shutil.copy(files["ct"], tmp_path / "p_seg.nii.gz"))  # a CT named like the side file
    case = Case(auto_analyse=False)
    case.apply_loaded(load_case(str(ct)))
    _in_app_prediction(case, "seg", True)
    before = ct.read_bytes()
    with pytest.raises(InputError, match="opened input"):
        case.save_project(tmp_path / "p.json")
    assert ct.read_bytes() == before and not (tmp_path / "p.json").exists()


def test_saving_the_project_again_keeps_its_own_side_file(qtbot, files, tmp_path):
    case = Case(auto_analyse=False)
    case.apply_loaded(load_case(files["ct"]))
    _in_app_prediction(case, "seg", True)
    first = case.save_project(tmp_path / "p.json")
    side = tmp_path / "p_seg.nii.gz"
    written = side.read_bytes()
    assert case.save_project(first) == first  # the side file is the prediction's own file now: no refusal
    assert side.read_bytes() == written and not (tmp_path / "p_seg.nii.gz.bak").exists()
    assert read_project(first)["predictions"][0]["path"] == str(side)
