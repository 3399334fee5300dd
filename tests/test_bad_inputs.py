"""A table of bad inputs, as a careless user would give them, over every command and the app's open path.

Each row must end in exit status 2 (the app: one dialog) with one line that
names the file (or the option) and says how to fix it, no traceback, and
nothing written or overwritten in the working folder (snapshot before/after).
CLI rows run in-process through ``core.cli.main`` (fast); a few run through a
real subprocess to prove the exit code.

Extension point: a command added later adds its rows to ``ROWS`` (rows of a
command this branch lacks skip, as ``compare``'s do where it is absent);
``test_every_file_command_has_bad_input_rows`` fails until it does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from window_keys import wait_not_busy

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- #
# workspace: one set of good and bad files, copied fresh for every row


def _build_template(folder: Path) -> Path:
    from core.io import nifti_file, write_volume
    from core.phantom import make_phantom
    from core.tree import parse_tree
    from core.volume import Geometry, IntensityVolume, LabelVolume

    ph = make_phantom(40, spacing=(1.5, 1.5, 1.5), seed=0)
    other = make_phantom(40, spacing=(1.5, 1.5, 1.5), seed=5)
    g = ph.ct.geometry
    shape = ph.ct.shape
    write_volume(ph.ct, folder / "ct.nii.gz")
    write_volume(ph.label, folder / "label.nii.gz")
    write_volume(other.label, folder / "label_other.nii.gz")
    write_volume(IntensityVolume(np.zeros(shape, np.int16), g), folder / "zero_ct.nii.gz")
    write_volume(IntensityVolume(np.full(shape, -1000, np.int16), g), folder / "air_ct.nii.gz")
    write_volume(LabelVolume(np.zeros(shape, bool), g), folder / "empty.nii.gz")
    write_volume(LabelVolume(np.ones(shape, bool), g), folder / "full.nii.gz")
    moved = Geometry(g.spacing, tuple(o + 7.5 for o in g.origin), g.direction)
    write_volume(LabelVolume(ph.label.mask, moved), folder / "shifted.nii.gz")
    probs = IntensityVolume(np.linspace(0, 3, ph.ct.array.size, dtype=np.float32).reshape(shape), g)
    write_volume(probs, folder / "not_probs.nii.gz")
    nan = ph.label.mask.astype(np.float32)
    nan[0, 0, 0] = np.nan
    # written by the format module: the volume classes refuse NaN themselves
    nifti_file.write(nan, g.spacing, g.origin, g.direction_matrix, folder / "nan_label.nii.gz", True)
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), str(folder / "flat.nii.gz"))
    (folder / "corrupt.nii.gz").write_text("this is not an image\n")
    # hostile headers (issue 27): a direction that is no rotation, 1000^3 voxels declared in 2 KB
    from hostile_files import hostile_direction_file, huge_header_file

    hostile_direction_file(folder, "zero.mha")
    hostile_direction_file(folder, "nan.nii")
    huge_header_file(folder, ".nii")
    (folder / "zero_bytes.nii.gz").write_bytes(b"")
    data = (folder / "ct.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "results.json").write_text('{"kept": true}\n')
    (folder / "afile").write_text("a file where a folder is expected\n")
    (folder / "bad.pt").write_bytes(b"not a checkpoint")
    (folder / "bad.tree.npz").write_bytes(b"not a tree")
    parse_tree(other.label).save(folder / "other.tree.npz")  # same shape, another phantom
    # DICOM series that cannot make one regular grid (the smoke test's series, standard library)
    sys.path.insert(0, str(ROOT / "installer"))
    from smoke_test import write_dicom_series

    write_dicom_series(folder / "dicom_gap")
    (folder / "dicom_gap" / "IM003.dcm").unlink()  # a slice in the middle is missing
    write_dicom_series(folder / "dicom_twice")
    shutil.copy(folder / "dicom_twice" / "IM003.dcm", folder / "dicom_twice" / "IM003_copy.dcm")
    (folder / "no_dicom").mkdir()
    (folder / "no_dicom" / "readme.txt").write_text("no slices here\n")
    ds = folder / "dataset_bad"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    shutil.copy(folder / "ct.nii.gz", ds / "imagesTr" / "case_000_0000.nii.gz")
    shutil.copy(folder / "empty.nii.gz", ds / "labelsTr" / "case_000.nii.gz")
    (folder / "dataset_nolabels" / "imagesTr").mkdir(parents=True)
    shutil.copy(folder / "ct.nii.gz", folder / "dataset_nolabels" / "imagesTr" / "case_000_0000.nii.gz")
    for sub, name in (("refs", "label.nii.gz"), ("preds", "label_other.nii.gz")):
        (folder / sub).mkdir()
        shutil.copy(folder / name, folder / sub / "case_000.nii.gz")
    Path(folder / "prior_phantom").mkdir()
    for name in ("ct.nii.gz", "label.nii.gz"):
        shutil.copy(folder / name, folder / "prior_phantom" / name)
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return _build_template(tmp_path_factory.mktemp("bad_inputs_template"))


@pytest.fixture
def ws(template, tmp_path, monkeypatch) -> Path:
    work = tmp_path / "ws"
    shutil.copytree(template, work)
    monkeypatch.chdir(work)  # default outputs (segment's CASE_airway.nii.gz) land here too
    return work


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder with its content hash, size, mode and time: any write shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(folder))] = (digest, st.st_size if p.is_file() else 0, st.st_mode, st.st_mtime_ns)
    return out


# --------------------------------------------------------------------------- #
# the table


@dataclass(frozen=True)
class Row:
    id: str
    command: str
    argv: tuple[str, ...]
    names: str  # the file (or option) the one line must name
    fix: str  # a word of the fix it must give


def R(id, argv, names, fix):  # noqa: N802 - a table reads better with a short constructor
    return Row(id, argv.split()[0], tuple(argv.split()), names, fix)


EV = "evaluate --reference label.nii.gz --prediction label.nii.gz"
SEG = "segment --input ct.nii.gz"
CMP = "compare --reference refs --predictions a=preds"
ROWS = [
    # info
    R("info-missing", "info nowhere.nii.gz", "nowhere.nii.gz", "Check the path"),
    R("info-zero-bytes", "info zero_bytes.nii.gz", "zero_bytes.nii.gz", "Copy it again"),
    R("info-not-an-image", "info corrupt.nii.gz", "corrupt.nii.gz", "corrupt"),
    R("info-truncated", "info truncated.nii.gz", "truncated.nii.gz", "again"),
    R("info-2d", "info flat.nii.gz", "flat.nii.gz", "3D volume"),
    R("info-folder-without-dicom", "info no_dicom", "no_dicom", "folder that holds"),
    R("info-dicom-missing-slice", "info dicom_gap", "dicom_gap", "whole series"),
    R("info-dicom-slice-twice", "info dicom_twice", "dicom_twice", "reconstruction alone"),
    R("info-direction-zero", "info zero_direction.mha", "zero_direction.mha", "Fix the orientation"),
    R("info-direction-nan", "info nan_direction.nii", "nan_direction.nii", "Fix the orientation"),
    R("info-header-larger-than-the-file", "info huge.nii", "huge.nii", "again"),
    # evaluate: outputs
    R("evaluate-json-is-the-reference", f"{EV} --json label.nii.gz", "label.nii.gz", "another --json"),
    R("evaluate-csv-is-a-prediction", f"{EV} --csv label.nii.gz --overwrite", "label.nii.gz", "another --csv"),
    R("evaluate-json-is-a-folder", f"{EV} --json no_dicom", "no_dicom", "file name"),
    R("evaluate-json-under-a-file", f"{EV} --json afile/out.json", "afile", "another --json"),
    R("evaluate-json-exists", f"{EV} --json results.json", "results.json", "--overwrite"),
    R("evaluate-regions-exists", f"{EV} --csv new.csv --regions results.json", "results.json", "--overwrite"),
    R("evaluate-branch-map-format", f"{EV} --branch-map map.txt", "map.txt", ".nii.gz"),
    # evaluate: caches and inputs
    R("evaluate-tree-of-another-phantom", f"{EV} --tree other.tree.npz", "other.tree.npz", "--overwrite"),
    R("evaluate-tree-corrupt", f"{EV} --tree bad.tree.npz", "bad.tree.npz", "--tree"),
    R(
        "evaluate-reference-empty",
        "evaluate --reference empty.nii.gz --prediction label.nii.gz",
        "empty.nii.gz",
        "selector",
    ),
    R(
        "evaluate-reference-full",
        "evaluate --reference full.nii.gz --prediction label.nii.gz",
        "full.nii.gz",
        "--label-selector",
    ),
    R(
        "evaluate-prediction-other-grid",
        "evaluate --reference label.nii.gz --prediction shifted.nii.gz",
        "shifted",
        "--resample-to-ct",
    ),
    R(
        "evaluate-reference-missing",
        "evaluate --reference nowhere.nii.gz --prediction label.nii.gz",
        "nowhere.nii.gz",
        "--reference",
    ),
    R(
        "evaluate-prediction-missing",
        "evaluate --reference label.nii.gz --prediction nowhere.nii.gz",
        "nowhere.nii.gz",
        "--prediction",
    ),
    R(
        "evaluate-folder-vs-file",
        "evaluate --reference no_dicom --prediction label.nii.gz",
        "folder",
        "prediction folders",
    ),
    R(
        "evaluate-nan-label",
        "evaluate --reference nan_label.nii.gz --prediction label.nii.gz",
        "nan_label.nii.gz",
        "Replace them",
    ),
    # segment
    R("segment-ct-without-air", "segment --input zero_ct.nii.gz -o m.nii.gz", "zero_ct.nii.gz", "Hounsfield"),
    R("segment-ct-without-body", "segment --input air_ct.nii.gz -o m.nii.gz", "air_ct.nii.gz", "Hounsfield"),
    R("segment-output-is-the-input", f"{SEG} -o ct.nii.gz --overwrite", "ct.nii.gz", "another --output"),
    R("segment-output-exists", f"{SEG} -o label.nii.gz", "label.nii.gz", "--overwrite"),
    R(
        "segment-probabilities-under-a-file",
        f"{SEG} -o m.nii.gz --probabilities afile/p.nii.gz",
        "afile",
        "--probabilities",
    ),
    R("segment-output-format", f"{SEG} -o m.txt", "m.txt", ".nii.gz"),
    R("segment-reference-empty", f"{SEG} -o m.nii.gz --reference empty.nii.gz", "empty.nii.gz", "selector"),
    R("segment-reference-other-grid", f"{SEG} -o m.nii.gz --reference shifted.nii.gz", "shifted", "--resample-to-ct"),
    R("segment-reference-full", f"{SEG} -o m.nii.gz --reference full.nii.gz", "full.nii.gz", "--label-selector"),
    R("segment-corrupt-model", f"{SEG} -o m.nii.gz --model bad.pt", "bad.pt", "checkpoint"),
    R("segment-input-missing", "segment --input nowhere.nii.gz", "nowhere.nii.gz", "--input"),
    R("segment-input-truncated", "segment --input truncated.nii.gz -o m.nii.gz", "truncated.nii.gz", "again"),
    R("segment-dicom-missing-slice", "segment --input dicom_gap -o m.nii.gz", "dicom_gap", "whole series"),
    R("segment-direction-nan", "segment --input nan_direction.nii -o m.nii.gz", "nan_direction.nii", "orientation"),
    R(
        "evaluate-reference-direction-zero",
        "evaluate --reference zero_direction.mha --prediction label.nii.gz",
        "zero_direction.mha",
        "orientation",
    ),
    # phantom
    R("phantom-out-holds-a-phantom", "phantom --size 32 --out prior_phantom", "prior_phantom", "--overwrite"),
    R("phantom-out-is-a-file", "phantom --size 32 --out afile", "afile", "--out"),
    R("phantom-from-missing-mask", "phantom --from-mask nowhere.nii.gz --out ph", "nowhere.nii.gz", "Check the path"),
    # train
    R("train-without-data", "train --out run", "--data", "--data"),
    R("train-data-missing", "train --data nowhere --out run --preset quick", "nowhere", "imagesTr"),
    R("train-out-is-a-file", "train --data dataset_bad --out afile --preset quick", "afile", "--out"),
    R("train-no-labels", "train --data dataset_nolabels --out run --preset quick", "label", "labelsTr"),
    # prepare
    R("prepare-data-missing", "prepare --data nowhere --preset quick", "nowhere", "imagesTr"),
    R("prepare-cache-is-a-file", "prepare --data dataset_bad --preset quick --cache afile", "afile", "--cache"),
    R("prepare-empty-label", "prepare --data dataset_bad --preset quick --cache c", "case_000", "label selector"),
    # compare
    R("compare-out-is-a-file", f"{CMP} --out afile", "afile", "--out"),
    R("compare-out-is-the-reference", f"{CMP} --out refs", "refs", "another --out"),
    R("compare-out-holds-other-files", f"{CMP} --out no_dicom", "no_dicom", "--overwrite"),
    R(
        "compare-prediction-not-name-dir",
        "compare --reference refs --predictions preds --out cmp",
        "preds",
        "NAME=PATH",
    ),
    R("compare-models-without-cts", "compare --reference refs --models a=bad.pt --out cmp", "--models", "--cts"),
    R(
        "compare-agreement-json-exists",
        "compare --agreement label.nii.gz label_other.nii.gz --json results.json",
        "results.json",
        "--overwrite",
    ),
    R("compare-needs-reference-and-out", "compare --predictions a=no_dicom", "--reference", "--out"),
    R(
        "compare-pair-without-name",
        "compare --reference no_dicom --predictions no_dicom --out o",
        "no_dicom",
        "NAME=PATH",
    ),
    R(
        "compare-agreement-missing",
        "compare --agreement nowhere.nii.gz label.nii.gz",
        "nowhere.nii.gz",
        "Check the path",
    ),
    R("compare-agreement-other-grid", "compare --agreement label.nii.gz shifted.nii.gz", "shifted", "--resample-to-ct"),
]


def _check_one_line(err: str, row: Row) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("airway: error:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert row.names in line, line
    assert row.fix in line, line
    return line


def test_the_table_is_large_enough():
    assert len(ROWS) >= 30
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(row, ws, capsys):
    from core.cli import main

    if row.command not in _commands():
        pytest.skip(f"airway {row.command} is not on this branch")
    before = snapshot(ws)
    rc = main(list(row.argv))
    err = capsys.readouterr().err
    assert rc == 2, err
    _check_one_line(err, row)
    assert snapshot(ws) == before


SUBPROCESS_ROWS = [
    "evaluate-json-is-the-reference",
    "info-direction-nan",
    "segment-ct-without-air",
    "train-out-is-a-file",
    "prepare-cache-is-a-file",
]


@pytest.mark.slow
@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_real_process_exits_2_without_traceback(row_id, ws):
    row = next(r for r in ROWS if r.id == row_id)
    before = snapshot(ws)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *row.argv], cwd=ws, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    _check_one_line(proc.stderr, row)
    assert snapshot(ws) == before


def _commands() -> set[str]:
    from core.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse keeps no public list
    return set(sub.choices)


def test_every_file_command_has_bad_input_rows():
    """A new command that reads or writes files (compare, ...) must bring its rows."""
    commands = _commands()
    must = {"info", "evaluate", "segment", "train", "prepare", "phantom", "compare"} & commands
    assert must <= {r.command for r in ROWS}


# --------------------------------------------------------------------------- #
# the app's open path: the loading function, then the one dialog it ends in


@dataclass(frozen=True)
class AppRow:
    id: str
    call: Callable[[Path], object]
    names: str
    fix: str


def _load(ct=None, reference=None, predictions=(), resample=False):
    def call(ws: Path):
        from app.review.case import load_case, load_ct

        current = None
        if ct is None:
            current, _ = load_ct(ws / "ct.nii.gz")
        return load_case(
            None if ct is None else ws / ct,
            None if reference is None else ws / reference,
            [ws / p for p in predictions],
            current_ct=current,
            resample_to_ct=resample,
        )

    return call


APP_ROWS = [
    AppRow("app-ct-without-air", _load("zero_ct.nii.gz"), "zero_ct.nii.gz", "Hounsfield"),
    AppRow("app-ct-without-body", _load("air_ct.nii.gz"), "air_ct.nii.gz", "Hounsfield"),
    AppRow("app-ct-corrupt", _load("corrupt.nii.gz"), "corrupt.nii.gz", "corrupt"),
    AppRow("app-ct-missing", _load("nowhere.nii.gz"), "nowhere.nii.gz", "Check the path"),
    AppRow("app-ct-dicom-missing-slice", _load("dicom_gap"), "dicom_gap", "whole series"),
    AppRow("app-ct-direction-nan", _load("nan_direction.nii"), "nan_direction.nii", "Fix the orientation"),
    AppRow("app-ct-header-larger-than-the-file", _load("huge.nii"), "huge.nii", "again"),
    AppRow("app-reference-full", _load(reference="full.nii.gz"), "full.nii.gz", "airway label"),
    AppRow("app-reference-other-grid", _load(reference="shifted.nii.gz"), "shifted", "resampl"),
    AppRow("app-prediction-not-probabilities", _load(predictions=["not_probs.nii.gz"]), "not_probs.nii.gz", "[0, 1]"),
    AppRow("app-prediction-truncated", _load(predictions=["truncated.nii.gz"]), "truncated.nii.gz", "again"),
]


@pytest.fixture
def dialogs(monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []

    def fake_exec(box):
        shown.append(box)
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return shown


@pytest.mark.parametrize("row", APP_ROWS, ids=[r.id for r in APP_ROWS])
def test_app_open_path_shows_one_dialog_naming_the_file(row, ws, qtbot, dialogs):
    from app.dialogs import show_error
    from core.errors import AirwayError

    before = snapshot(ws)
    with pytest.raises(AirwayError) as info:
        row.call(ws)
    show_error(None, info.value)
    assert len(dialogs) == 1
    text = dialogs[0].text()
    assert "\n" not in text and "Traceback" not in text
    assert not dialogs[0].detailedText()  # a user's error needs no traceback
    assert row.names in text and row.fix in text, text
    assert snapshot(ws) == before


def test_app_resamples_a_label_on_another_grid_when_asked(ws):
    loaded = _load(reference="shifted.nii.gz", predictions=["shifted.nii.gz"], resample=True)(ws)
    from app.review.case import load_ct

    ct, _ = load_ct(ws / "ct.nii.gz")
    assert loaded.reference.shape == ct.shape and loaded.reference.geometry.matches(ct.geometry)
    assert loaded.predictions[0].label.shape == ct.shape
    # moved by 5 voxels along each axis, nearest neighbour: the same mask, shifted
    assert 0 < loaded.reference.mask.sum() <= ct.array.size


@pytest.mark.parametrize("answer", ["Yes", "No"])
def test_window_offers_resampling_when_a_reference_grid_differs(answer, ws, qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.settings import Settings

    shown = []

    def fake_exec(box):
        shown.append(box)
        return getattr(QMessageBox.StandardButton, answer if box.objectName() == "resampleDialog" else "Ok")

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    w = MainWindow(settings=Settings(ephemeral=True), install_panels=False, training_tab=False)
    try:
        with qtbot.waitSignal(w.caseLoaded, timeout=60000):
            w.open_files(str(ws / "ct.nii.gz"))
        before = snapshot(ws)
        if answer == "Yes":
            with qtbot.waitSignal(w.caseLoaded, timeout=60000):
                w.open_files(None, str(ws / "shifted.nii.gz"))
            assert w.case.reference is not None and w.case.reference.shape == w.case.ct.shape
        else:
            w.open_files(None, str(ws / "shifted.nii.gz"))
            qtbot.waitUntil(lambda: len(shown) == 1 and not w.busy, timeout=60000)
            assert w.case.reference is None
        assert [b.objectName() for b in shown] == ["resampleDialog"]  # one dialog, the question
        assert "shifted" in shown[0].text() and "not on the same grid" in shown[0].text()
        assert snapshot(ws) == before
    finally:
        w.cancel_jobs()
        w.case.cancel_jobs()
        wait_not_busy(qtbot, w, 30000)
        w.close()
        w.deleteLater()
