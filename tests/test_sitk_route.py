"""Every image read, write and resample in core/ and app/ goes through SimpleITK (issue 23).

Two proofs: the source (no module of core/ or app/ imports another image IO
library; the IO and resampling modules import SimpleITK), and the calls (ITK's
readers, writer and Resample recorded while each public function runs).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from core.volume import Geometry, IntensityVolume, LabelVolume

ROOT = Path(__file__).resolve().parents[1]
# libraries that decode or encode image files; none may do it beside SimpleITK
OTHER_IMAGE_IO = {"nibabel", "nrrd", "pydicom", "gdcm", "imageio", "itk", "medpy", "dicom2nifti"}
FORMATS = [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"]
GEOMETRY = Geometry((0.7, 0.8, 1.25), (-12.0, 3.5, 40.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_no_module_in_core_or_app_imports_another_image_io_library() -> None:
    offenders = {}
    for folder in ("core", "app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = _top_level_imports(path) & OTHER_IMAGE_IO
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
    assert not _top_level_imports(ROOT / "main.py") & OTHER_IMAGE_IO


def test_the_io_and_resampling_modules_use_simpleitk() -> None:
    import core.io.dicom_series
    import core.io.itk
    import core.resample

    # one import of SimpleITK, typed at that boundary (core.io.itk); the others take it from there
    assert "SimpleITK" in _top_level_imports(ROOT / "core" / "io" / "itk.py")
    for module in (core.io.itk, core.io.dicom_series, core.resample):
        assert module.sitk is sitk, module.__name__
    # the format modules decode through core.io.itk, not on their own
    for module in ("nifti_file", "nrrd_file", "metaimage_file", "dicom_series"):
        source = (ROOT / "core" / "io" / f"{module}.py").read_text(encoding="utf-8")
        assert "from core.io import itk" in source, module
    assert "from core.io.itk import sitk" in (ROOT / "core" / "resample.py").read_text(encoding="utf-8")


@pytest.fixture
def itk_calls(monkeypatch) -> list[tuple[str, str]]:
    """(what, file) for every SimpleITK pixel read, series read, write and resample."""
    calls: list[tuple[str, str]] = []

    def record(cls, what: str, name_of) -> None:
        original = cls.Execute

        def execute(self, *args, **kwargs):
            calls.append((what, name_of(self)))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "Execute", execute)

    record(sitk.ImageFileReader, "read", lambda r: Path(r.GetFileName()).name)
    record(sitk.ImageSeriesReader, "read series", lambda r: Path(r.GetFileNames()[0]).parent.name)
    record(sitk.ImageFileWriter, "write", lambda w: Path(w.GetFileName()).name)
    original_resample = sitk.Resample

    def resample(*args, **kwargs):
        calls.append(("resample", ""))
        return original_resample(*args, **kwargs)

    monkeypatch.setattr(sitk, "Resample", resample)
    return calls


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_public_read_and_write_goes_through_simpleitk(tmp_path: Path, suffix: str, itk_calls) -> None:
    from core.io import read_ct, read_label, read_volume, write_volume, write_volume_file

    ct = IntensityVolume(np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5), GEOMETRY)
    mask = LabelVolume(ct.array > 20, GEOMETRY)
    write_volume(ct, tmp_path / f"ct{suffix}")
    write_volume(mask, tmp_path / f"mask{suffix}")
    write_volume_file(ct, tmp_path / f"plain{suffix}")
    writes = [name for what, name in itk_calls if what == "write"]
    if suffix == ".nii.gz":
        # ITK writes the NIfTI encoding into a staged .nii beside the target; zlib level 1 packs it
        assert len(writes) == 3 and writes[2].startswith(".plain.nii.gz.") and writes[2].endswith(".partial.nii")
    else:
        assert len(writes) == 3 and writes[2] == f"plain{suffix}"
        assert all(name.endswith(suffix) for name in writes)
    itk_calls.clear()
    assert read_volume(tmp_path / f"ct{suffix}").array.tolist() == ct.array.tolist()
    assert read_ct(tmp_path / f"ct{suffix}").geometry.matches(GEOMETRY, 1e-6)
    assert read_label(tmp_path / f"mask{suffix}").voxel_count() == int(mask.array.sum())
    assert itk_calls == [("read", f"ct{suffix}"), ("read", f"ct{suffix}"), ("read", f"mask{suffix}")]


def test_dicom_series_read_goes_through_simpleitk(tmp_path: Path, itk_calls) -> None:
    from core.io import list_dicom_series, read_ct

    sys.path.insert(0, str(ROOT / "installer"))
    from smoke_test import DICOM_SHAPE, write_dicom_series

    write_dicom_series(tmp_path / "series")
    assert [s.n_slices for s in list_dicom_series(tmp_path / "series")] == [DICOM_SHAPE[0]]
    assert read_ct(tmp_path / "series").shape == tuple(DICOM_SHAPE)
    assert [c for c in itk_calls if c[0] != "read"] == [("read series", "series")]


def test_dicom_series_larger_than_free_memory_refused_before_reading(tmp_path: Path, monkeypatch, itk_calls) -> None:
    import collections

    import psutil

    from core.errors import InputError
    from core.io import read_ct

    sys.path.insert(0, str(ROOT / "installer"))
    from smoke_test import write_dicom_series

    write_dicom_series(tmp_path / "series")
    memory = collections.namedtuple("memory", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(1000, 8 << 30))
    with pytest.raises(InputError, match="memory is free") as e:
        read_ct(tmp_path / "series")
    assert "series" in str(e.value)
    assert itk_calls == []


def test_every_public_resample_goes_through_simpleitk(itk_calls) -> None:
    from core.io import resample_label_to
    from core.preprocess import resample_ct
    from core.resample import resample_array

    ct = IntensityVolume(np.random.default_rng(0).integers(-1000, 500, (6, 8, 10)).astype(np.int16), GEOMETRY)
    mask = LabelVolume(ct.array > 0, GEOMETRY)
    other = Geometry((1.0, 1.0, 1.0), GEOMETRY.origin, GEOMETRY.direction)
    reference = IntensityVolume(np.zeros((7, 6, 9), np.int16), other)
    assert resample_label_to(mask, reference).shape == (7, 6, 9)
    assert resample_ct(ct, (1.4, 1.6, 2.5)).array.dtype == np.float32
    assert resample_array(ct.array, GEOMETRY, (7, 6, 9), other, linear=True).dtype == np.int16
    assert [what for what, _ in itk_calls] == ["resample"] * 3
