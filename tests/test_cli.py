"""The `airway` command line: dispatch, one-line errors, `info`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.io import write_volume
from core.volume import Geometry, IntensityVolume, LabelVolume

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")


def test_error_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["info", str(tmp_path / "missing.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "missing.nii.gz" in err and "Check the path" in err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "main.py", "--debug", "info", str(tmp_path / "x.nii")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_info_label_components(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True
    mask[6:9, 6:9, 6:9] = True
    path = write_volume(LabelVolume(mask, Geometry((0.5, 0.5, 2.0))), tmp_path / "lab.nii.gz")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "label"
    assert info["voxels"] == 8 + 27
    assert info["components_26"] == 2
    assert info["volume_mm3"] == pytest.approx(35 * 0.5)


def test_info_image_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arr = np.linspace(-1024, 1500, 4 * 50 * 60).reshape(4, 50, 60).astype(np.int16)
    path = write_volume(IntensityVolume(arr, Geometry((0.8, 0.8, 1.5))), tmp_path / "ct.mha")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 x 50 x 60" in out and "(0.8, 0.8, 1.5)" in out and "LPS" in out


@pytest.mark.slow
@needs_shared
def test_info_real_dicom_series() -> None:
    r = subprocess.run(
        [sys.executable, "main.py", "info", str(SHARED / "chest_ct_dicom"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["shape_zyx"] == [141, 512, 512]
    assert info["spacing_xyz"] == pytest.approx([0.977, 0.977, 2.0], abs=1e-3)
    assert info["kind"] == "image"


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly() -> None:
    """Why (issue 24): `airway models --json | head` ended in a BrokenPipeError traceback."""
    p = subprocess.Popen(
        [sys.executable, "main.py", "models", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader is gone before the first line is written
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert rc == 141
