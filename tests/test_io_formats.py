"""core.io's format readers, writers and resampling, held to SimpleITK.

SimpleITK read every file before and is what ITK-SNAP, 3D Slicer and most of
the field agree with, so it stays as the test reference (the `test` extra) while
the app ships nibabel, pynrrd, pydicom and its own MetaImage code: same voxels,
same spacing, origin and direction, on generated files of every flavour and on
every real file in ../shared/data.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.io import list_dicom_series, read_ct, read_label, read_volume, write_volume
from core.resample import resample_array
from core.volume import Geometry, IntensityVolume, LabelVolume

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the reference (pip install -e '.[test]')")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data is absent (real CT data is not in the repo)"
)
FORMATS = [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"]


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# a truly oblique grid (not only flips): any mix-up of rows and columns shows
OBLIQUE = Geometry((0.7, 0.8, 1.25), (-120.5, 33.25, -400.0), tuple(_rotation(0.2, -0.3, 0.5).ravel()))


def _itk_geometry(image) -> Geometry:
    return Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _assert_same(ours: IntensityVolume | LabelVolume, image, exact_dtype: bool = True) -> None:
    ref = sitk.GetArrayFromImage(image)
    arr = ours.array.view(np.uint8) if ours.array.dtype == bool else ours.array
    assert arr.shape == ref.shape
    if exact_dtype:
        assert arr.dtype == ref.dtype
    np.testing.assert_allclose(arr, ref, rtol=0, atol=1e-5)
    geo = _itk_geometry(image)
    np.testing.assert_allclose(ours.geometry.spacing, geo.spacing, atol=1e-5)
    np.testing.assert_allclose(ours.geometry.origin, geo.origin, atol=1e-4)
    np.testing.assert_allclose(ours.geometry.direction, geo.direction, atol=1e-5)


def _to_itk(volume: IntensityVolume):
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    return image


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
@pytest.mark.parametrize("suffix", FORMATS)
def test_itk_reads_our_files_as_we_wrote_them(tmp_path: Path, suffix: str, dtype) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(7, 9, 11)).astype(dtype)
    vol = IntensityVolume(arr, OBLIQUE)
    path = write_volume(vol, tmp_path / f"v{suffix}")
    _assert_same(vol, sitk.ReadImage(str(path)))


def test_itk_reads_our_masks_as_zero_one(tmp_path: Path) -> None:
    mask = np.zeros((6, 7, 8), bool)
    mask[2:4, 1:5, 3:6] = True
    path = write_volume(LabelVolume(mask, OBLIQUE), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), mask.astype(np.uint8))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("suffix", FORMATS)
def test_we_read_itk_files_as_itk_does(tmp_path: Path, suffix: str, compress: bool) -> None:
    rng = np.random.default_rng(1)
    vol = IntensityVolume(rng.integers(-1024, 3000, size=(5, 6, 7)).astype(np.int16), OBLIQUE)
    path = tmp_path / f"itk{suffix}"
    sitk.WriteImage(_to_itk(vol), str(path), useCompression=compress)
    ours = read_volume(path)
    _assert_same(ours, sitk.ReadImage(str(path)))


# -- NIfTI headers as other tools write them -----------------------------------------


def _nifti(
    path: Path, data: np.ndarray, *, sform=None, sform_code=0, qform=None, qform_code=0, slope=None, inter=None
) -> Path:
    import nibabel as nib

    image = nib.Nifti1Image(data, None)
    image.header.set_zooms((0.9, 1.1, 2.5))
    if sform is not None:
        image.set_sform(sform, code=sform_code)
    else:
        image.set_sform(None, code=0)
    if qform is not None:
        image.set_qform(qform, code=qform_code)
    else:
        image.set_qform(None, code=0)
    nib.save(image, str(path))
    if slope is not None:  # nibabel recomputes the scaling on save: set it in the written header
        import struct

        blob = bytearray(path.read_bytes())
        blob[112:120] = struct.pack("<ff", slope, inter)
        path.write_bytes(bytes(blob))
    return path


def _ras_affine(spacing=(0.9, 1.1, 2.5), origin=(10.0, -20.0, 30.0), rotation=None) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rotation is None else rotation) * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


NIFTI_HEADERS = {
    "sform aligned only": dict(sform=_ras_affine(rotation=_rotation(0.1, 0.2, -0.3)), sform_code=2),
    "qform only": dict(qform=_ras_affine(rotation=_rotation(-0.2, 0.0, 0.4)), qform_code=1),
    "both, sform wins": dict(
        sform=_ras_affine(origin=(1.0, 2.0, 3.0)), sform_code=1, qform=_ras_affine(origin=(4.0, 5.0, 6.0)), qform_code=1
    ),
    "no transform": dict(),
    "sform with shear, qform kept": dict(
        sform=_ras_affine() + np.array([[0, 0.4, 0, 0], [0] * 4, [0] * 4, [0] * 4]),
        sform_code=2,
        qform=_ras_affine(origin=(7.0, 8.0, 9.0)),
        qform_code=1,
    ),
}


@pytest.mark.parametrize("case", list(NIFTI_HEADERS))
def test_nifti_geometry_as_itk_reads_it(tmp_path: Path, case: str) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # nibabel order (x, y, z)
    path = _nifti(tmp_path / "h.nii.gz", data, **NIFTI_HEADERS[case])
    _assert_same(read_volume(path), sitk.ReadImage(str(path)))


def test_nifti_scaling_keeps_integers_when_it_can(tmp_path: Path) -> None:
    raw = np.arange(0, 4 * 5 * 6 * 40, 40, dtype=np.uint16).reshape(6, 5, 4)
    whole = _nifti(tmp_path / "whole.nii", raw, sform=_ras_affine(), sform_code=1, slope=1.0, inter=-1024.0)
    ours = read_ct(whole)
    assert ours.array.dtype == np.int16  # not float: a 600-slice CT stays 300 MB, not 600
    _assert_same(ours, sitk.ReadImage(str(whole)), exact_dtype=False)
    half = _nifti(tmp_path / "half.nii", raw, sform=_ras_affine(), sform_code=1, slope=0.5, inter=-1000.0)
    ours = read_ct(half)
    assert ours.array.dtype == np.float32
    _assert_same(ours, sitk.ReadImage(str(half)), exact_dtype=False)


def test_nifti_vector_image_refused(tmp_path: Path) -> None:
    import nibabel as nib

    path = tmp_path / "vec.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match="3 components"):
        read_volume(path)


# -- NRRD and MetaImage headers as other tools write them -----------------------------


@pytest.mark.parametrize("space", ["right-anterior-superior", "left-anterior-superior", "left-posterior-superior"])
def test_nrrd_spaces_as_itk_reads_them(tmp_path: Path, space: str) -> None:
    import nrrd

    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    header = {
        "space": space,
        "space directions": _rotation(0.3, 0.1, 0.2).T * [[0.5], [0.6], [2.0]],
        "space origin": np.array([5.0, -6.0, 7.0]),
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    path = tmp_path / "s.nrrd"
    nrrd.write(str(path), data, header, index_order="C")
    _assert_same(read_volume(path), sitk.ReadImage(str(path)))


def test_nrrd_with_spacings_only(tmp_path: Path) -> None:
    import nrrd

    path = tmp_path / "plain.nrrd"
    nrrd.write(
        str(path), np.ones((3, 4, 5), np.uint8), {"spacings": [0.5, 0.75, 3.0], "encoding": "raw"}, index_order="C"
    )
    ours = read_volume(path)
    assert ours.geometry.spacing == (0.5, 0.75, 3.0) and ours.geometry.origin == (0.0, 0.0, 0.0)
    _assert_same(ours, sitk.ReadImage(str(path)))


def test_nrrd_vector_image_refused(tmp_path: Path) -> None:
    import nrrd

    header = {
        "space": "left-posterior-superior",
        "kinds": ["vector", "domain", "domain", "domain"],
        "space directions": np.array([[np.nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 1]], float),
    }
    path = tmp_path / "vec.nrrd"
    nrrd.write(str(path), np.zeros((3, 4, 5, 3), np.float32), header, index_order="F")
    with pytest.raises(InputError, match="3 components"):
        read_volume(path)


@pytest.mark.parametrize("msb", [False, True])
def test_metaimage_detached_and_big_endian(tmp_path: Path, msb: bool) -> None:
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 30
    rot = _rotation(0.2, 0.0, -0.4)
    (tmp_path / "d.raw").write_bytes(data.astype(">i2" if msb else "<i2").tobytes())
    (tmp_path / "d.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\n"
        f"BinaryDataByteOrderMSB = {msb}\nCompressedData = False\n"
        f"TransformMatrix = {' '.join(str(v) for v in rot.T.ravel())}\n"
        "Offset = 1.5 -2.5 3.5\nElementSpacing = 0.5 0.6 2\nDimSize = 5 4 3\n"
        "ElementType = MET_SHORT\nElementDataFile = d.raw\n"
    )
    path = tmp_path / "d.mhd"
    ours = read_volume(path)
    np.testing.assert_array_equal(ours.array, data)
    _assert_same(ours, sitk.ReadImage(str(path)))


def test_metaimage_slice_list_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.mhd"
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\n"
        "ElementDataFile = LIST\na.raw\nb.raw\n"
    )
    with pytest.raises(InputError, match="one data file per slice"):
        read_volume(path)


# -- DICOM series ------------------------------------------------------------------


def _dicom_series(
    folder: Path,
    n: int = 6,
    orientation=(1, 0, 0, 0, 1, 0),
    step: float = 2.5,
    spacing=(0.7, 0.6),
    intercept: float = -1024.0,
    uid: str = "1.2.3.4.5",
    rows: int = 8,
    cols: int = 10,
    seed: int = 0,
    positions=None,
    names=None,
) -> np.ndarray:
    """Write a CT series; returns the stored pixel values in slice order (z, y, x)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    start = np.array([-50.0, 20.0, 100.0])
    positions = positions if positions is not None else [start + k * step * normal for k in range(n)]
    pixels = rng.integers(0, 3000, size=(len(positions), rows, cols)).astype(np.uint16)
    order = list(range(len(positions)))
    random.Random(seed).shuffle(order)  # file names must not give the order away
    for k, position in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = "1.2.3"
        ds.SeriesInstanceUID = uid
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in o]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = step
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        ds.PixelData = pixels[k].tobytes()
        name = names[k] if names else f"IM{order[k]:04d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return pixels


def _itk_series(folder: Path):
    reader = sitk.ImageSeriesReader()
    uid = reader.GetGDCMSeriesIDs(str(folder))[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


@pytest.mark.parametrize(
    "orientation",
    [
        (1, 0, 0, 0, 1, 0),
        (1, 0, 0, 0, 0, -1),
        tuple(np.r_[_rotation(0.2, 0.1, 0.3)[:, 0], _rotation(0.2, 0.1, 0.3)[:, 1]]),
    ],
)
def test_dicom_series_as_itk_reads_it(tmp_path: Path, orientation) -> None:
    pixels = _dicom_series(tmp_path / "s", orientation=orientation)
    ours = read_ct(tmp_path / "s")
    _assert_same(ours, _itk_series(tmp_path / "s"), exact_dtype=False)  # GDCM widens to int32 for 16 stored bits
    np.testing.assert_array_equal(ours.array, pixels.astype(np.int16) - 1024)
    assert ours.array.dtype == np.int16


def test_dicom_folder_with_two_series_and_other_files(tmp_path: Path) -> None:
    _dicom_series(tmp_path, n=6, uid="1.2.3.4.5")
    _dicom_series(tmp_path, n=3, uid="1.2.3.4.9", names=["b1.dcm", "b2.dcm", "b3.dcm"], seed=2)
    (tmp_path / "LICENSE.txt").write_text("not DICOM\n")
    (tmp_path / "notes.dcm").write_bytes(b"\x00" * 50)
    series = list_dicom_series(tmp_path)
    assert [(s.uid, s.n_slices) for s in series] == [("1.2.3.4.5", 6), ("1.2.3.4.9", 3)]
    assert read_ct(tmp_path).shape == (6, 8, 10)
    assert read_ct(tmp_path, "1.2.3.4.9").shape == (3, 8, 10)
    with pytest.raises(InputError, match="No DICOM series with UID 9.9"):
        read_ct(tmp_path, "9.9")


def test_dicom_missing_slice_refused(tmp_path: Path) -> None:
    start = np.array([0.0, 0.0, 0.0])
    positions = [start + [0, 0, 2.0 * k] for k in (0, 1, 2, 4, 5)]  # slice 3 is missing
    _dicom_series(tmp_path, positions=positions)
    with pytest.raises(InputError, match="not evenly spaced") as e:
        read_ct(tmp_path)
    assert "missing" in str(e.value)


def test_dicom_two_slices_at_one_position_refused(tmp_path: Path) -> None:
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in (0, 1, 2, 2, 3)]
    _dicom_series(tmp_path, positions=positions)
    with pytest.raises(InputError, match="same position"):
        read_ct(tmp_path)


def test_dicom_enhanced_multiframe_equals_the_single_frame_series(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    orientation = tuple(np.r_[_rotation(0.1, 0.0, 0.2)[:, 0], _rotation(0.1, 0.0, 0.2)[:, 1]])
    pixels = _dicom_series(tmp_path / "single", orientation=orientation, step=1.5)
    single = read_ct(tmp_path / "single")
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = "1.2.3.4.6"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8, 10, len(pixels)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0

    def item(**tags) -> Dataset:
        d = Dataset()
        for k, v in tags.items():
            setattr(d, k, v)
        return d

    shared = item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.7, 0.6], SliceThickness=1.5)]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=list(orientation))]),
        PixelValueTransformationSequence=Sequence([item(RescaleIntercept=-1024, RescaleSlope=1)]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    start = np.array([-50.0, 20.0, 100.0])
    frames = list(reversed(range(len(pixels))))  # frames stored top down: order must come from positions
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            item(
                PlanePositionSequence=Sequence(
                    [item(ImagePositionPatient=[float(v) for v in start + k * 1.5 * normal])]
                )
            )
            for k in frames
        ]
    )
    ds.PixelData = pixels[frames].tobytes()
    (tmp_path / "multi").mkdir()
    ds.save_as(tmp_path / "multi" / "enhanced.dcm", enforce_file_format=True)
    multi = read_ct(tmp_path / "multi")
    np.testing.assert_array_equal(multi.array, single.array)
    assert multi.geometry.matches(single.geometry, 1e-6)


@pytest.mark.parametrize("syntax", ["jpeg-lossless", "jpeg2000", "jpeg-ls"])
def test_compressed_dicom_decoded_as_itk_decodes_it(tmp_path: Path, syntax: str) -> None:
    # the installers' smoke test reads the same GDCM-compressed series in the frozen build
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "installer"))
    import compress_dicom

    assert compress_dicom.main([str(tmp_path / "s"), "--syntax", syntax]) == 0
    ours = read_ct(tmp_path / "s")
    _assert_same(ours, _itk_series(tmp_path / "s"), exact_dtype=False)
    expect = json.loads((tmp_path / "s" / "expected.json").read_text())
    assert [int(ours.array.min()), int(ours.array.max())] == [expect["min"], expect["max"]]
    assert list(ours.geometry.spacing) == expect["spacing_xyz"]


def test_dicom_without_position_refused(tmp_path: Path) -> None:
    import pydicom

    _dicom_series(tmp_path, n=3)
    for f in tmp_path.iterdir():
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    with pytest.raises(InputError, match="cannot be placed in space"):
        read_ct(tmp_path)


# -- resampling --------------------------------------------------------------------


def _itk_resample(arr, geometry, shape, target, linear, default):
    ref = sitk.Image([int(s) for s in shape[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(target.spacing)
    ref.SetOrigin(target.origin)
    ref.SetDirection(target.direction)
    out = sitk.Resample(
        _to_itk(IntensityVolume(arr, geometry)),
        ref,
        sitk.Transform(),
        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
        float(default),
    )
    return sitk.GetArrayFromImage(out)


RESAMPLE_TARGETS = {
    "finer, shifted": ((50, 23, 17), Geometry((0.55, 1.1, 0.5), (-119.0, 34.2, -401.0), OBLIQUE.direction)),
    "coarser, larger": ((12, 40, 60), Geometry((1.9, 0.33, 2.2), (-125.0, 30.0, -399.0), OBLIQUE.direction)),
    "rotated grid": (
        (25, 35, 45),
        Geometry(
            (0.6, 0.7, 1.0),
            (-130.0, 25.0, -405.0),
            tuple((np.asarray(OBLIQUE.direction_matrix) @ _rotation(0, 0, 0.35)).ravel()),
        ),
    ),
}


@pytest.mark.parametrize("linear", [True, False])
@pytest.mark.parametrize("case", list(RESAMPLE_TARGETS))
def test_resampling_equals_itk(case: str, linear: bool) -> None:
    rng = np.random.default_rng(3)
    arr = rng.normal(size=(20, 30, 40)).astype(np.float32)
    shape, target = RESAMPLE_TARGETS[case]
    ours = resample_array(arr, OBLIQUE, shape, target, linear, -5.0)
    ref = _itk_resample(arr, OBLIQUE, shape, target, linear, -5.0)
    assert ours.dtype == np.float32 and (ref == -5.0).any() and (ref != -5.0).any()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("case", list(RESAMPLE_TARGETS))
def test_mask_resampling_equals_itk(case: str) -> None:
    mask = np.random.default_rng(4).random((20, 30, 40)) > 0.6
    shape, target = RESAMPLE_TARGETS[case]
    ours = resample_array(mask, OBLIQUE, shape, target, linear=False)
    ref = _itk_resample(mask.astype(np.uint8), OBLIQUE, shape, target, False, 0)
    assert ours.dtype == bool
    np.testing.assert_array_equal(ours, ref.astype(bool))


# -- every real file -------------------------------------------------------------

REAL = [
    "chest_ct_dicom",
    "totalseg/example_ct_dicom",
    "totalseg/example_ct.nii.gz",
    "totalseg/aorta_ct_cropped.nii.gz",
    "cip/ct-64.nrrd",
    "cip/lm-64.nrrd",
    "cip/crop_ct_2slices.nrrd",
    "cip/crop_ct_partialLungLabelMap.nrrd",
    "atm22/preds_YangLab/ATM_305_0000.nii.gz",
    "atm22/preds_timi/ATM_305_0000.nii.gz",
]


@needs_shared
@pytest.mark.shared_data
@pytest.mark.parametrize("name", REAL)
def test_real_files_read_as_itk_reads_them(name: str) -> None:
    path = SHARED / name
    image = _itk_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    _assert_same(read_volume(path), image)


@needs_shared
@pytest.mark.shared_data
def test_real_label_with_selector_unchanged() -> None:
    assert read_label(SHARED / "cip" / "crop_ct_partialLungLabelMap.nrrd", "bits:8:2").voxel_count() == 162_675


def test_rescaling_never_wraps_and_keeps_integers_small() -> None:
    from core.io.decoded import rescaled

    stored = np.array([0, 1, 4095], np.uint16)
    out = rescaled(stored, 1.0, -1024.0)
    assert out.dtype == np.int16 and out.tolist() == [-1024, -1023, 3071]
    out = rescaled(np.array([0, 65535], np.uint16), 1.0, -1024.0)  # does not fit int16
    assert out.dtype == np.int32 and out.tolist() == [-1024, 64511]
    out = rescaled(np.array([0, 200, 255], np.uint8), -1.0, 255.0)  # a negative slope
    assert out.dtype == np.int16 and out.tolist() == [255, 55, 0]
    out = rescaled(np.array([0, 3], np.int16), 0.5, -1000.0)
    assert out.dtype == np.float32 and out.tolist() == [-1000.0, -998.5]
    same = np.array([1, 2], np.int16)
    assert rescaled(same, 1.0, 0.0) is same
