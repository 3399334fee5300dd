"""core.io's format readers, writers and resampling: regression tests with expected values.

core.io reads, writes and resamples through SimpleITK. These tests pin what it
must give: on generated files of every flavour, the voxels and geometry that
were written (worked out by hand from the header: RAS to LPS, qform or sform,
scaling, DICOM slice order), with nibabel and pynrrd (test-only) writing the
headers as other tools do; resampling against ITK's rules written out in numpy;
on every real file in ../shared/data, shape, dtype, spacing, origin, direction,
sum and SHA-1 of the voxels, recorded when the previous readers (nibabel,
pynrrd, pydicom) and SimpleITK agreed on them voxel for voxel.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: E402 - files "as ITK writes them" (other tools' files)

from core.errors import InputError
from core.io import list_dicom_series, read_ct, read_label, read_volume, write_volume
from core.resample import resample_array
from core.volume import Geometry, IntensityVolume, LabelVolume

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


def _assert_same(
    ours: IntensityVolume | LabelVolume, array: np.ndarray, geometry: Geometry, exact_dtype: bool = True
) -> None:
    arr = ours.array.view(np.uint8) if ours.array.dtype == bool else ours.array
    ref = np.asarray(array)
    assert arr.shape == ref.shape
    if exact_dtype:
        assert arr.dtype == ref.dtype
    np.testing.assert_allclose(arr, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.geometry.spacing, geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(ours.geometry.origin, geometry.origin, atol=1e-4)
    np.testing.assert_allclose(ours.geometry.direction, geometry.direction, atol=1e-5)


def _to_itk(volume: IntensityVolume):
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    return image


def _from_lps_affine(affine: np.ndarray) -> Geometry:
    """Geometry of a 3 x 4 voxel-to-LPS matrix (columns: axis steps in mm, then the origin)."""
    spacing = np.linalg.norm(affine[:, :3], axis=0)
    return Geometry(tuple(spacing), tuple(affine[:, 3]), tuple((affine[:, :3] / spacing).ravel()))


_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _independent(path: Path) -> tuple[np.ndarray, Geometry] | None:
    """The file as nibabel or pynrrd (not ITK) reads it, when one of them reads this format."""
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        image = nib.load(str(path))
        return np.asanyarray(image.dataobj).T, _from_lps_affine(_RAS_TO_LPS @ image.affine[:3])
    if name.endswith((".nrrd", ".nhdr")):
        import nrrd

        data, header = nrrd.read(str(path), index_order="C")
        assert header["space"] == "left-posterior-superior"
        affine = np.column_stack([np.asarray(header["space directions"], float).T, header["space origin"]])
        return data, _from_lps_affine(affine)
    return None


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
@pytest.mark.parametrize("suffix", FORMATS)
def test_our_files_read_back_as_we_wrote_them(tmp_path: Path, suffix: str, dtype) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(7, 9, 11)).astype(dtype)
    vol = IntensityVolume(arr, OBLIQUE)
    path = write_volume(vol, tmp_path / f"v{suffix}")
    _assert_same(read_volume(path), arr, OBLIQUE)
    other = _independent(path)  # and another library finds the same voxels at the same place
    if other is not None:
        _assert_same(vol, *other)


def test_our_masks_are_written_as_zero_one(tmp_path: Path) -> None:
    mask = np.zeros((6, 7, 8), bool)
    mask[2:4, 1:5, 3:6] = True
    path = write_volume(LabelVolume(mask, OBLIQUE), tmp_path / "m.nii.gz")
    assert read_volume(path).array.dtype == np.uint8
    np.testing.assert_array_equal(read_volume(path).array, mask.astype(np.uint8))
    np.testing.assert_array_equal(_independent(path)[0], mask.astype(np.uint8))


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("suffix", FORMATS)
def test_we_read_files_as_itk_writes_them(tmp_path: Path, suffix: str, compress: bool) -> None:
    rng = np.random.default_rng(1)
    vol = IntensityVolume(rng.integers(-1024, 3000, size=(5, 6, 7)).astype(np.int16), OBLIQUE)
    path = tmp_path / f"itk{suffix}"
    sitk.WriteImage(_to_itk(vol), str(path), useCompression=compress)
    _assert_same(read_volume(path), vol.array, OBLIQUE)


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


# the RAS affine ITK must take (sform when set and free of shear, else qform); None: no transform at all,
# the voxel sizes along ITK's own (LPS) axes at origin 0, as 3D Slicer shows such a file
NIFTI_CHOSEN = {
    "sform aligned only": NIFTI_HEADERS["sform aligned only"]["sform"],
    "qform only": NIFTI_HEADERS["qform only"]["qform"],
    "both, sform wins": NIFTI_HEADERS["both, sform wins"]["sform"],
    "no transform": None,
    "sform with shear, qform kept": NIFTI_HEADERS["sform with shear, qform kept"]["qform"],
}


def _nifti_expected(case: str) -> Geometry:
    chosen = NIFTI_CHOSEN[case]
    if chosen is None:
        return Geometry((0.9, 1.1, 2.5), (0.0, 0.0, 0.0))
    return _from_lps_affine(_RAS_TO_LPS @ np.asarray(chosen)[:3])


@pytest.mark.parametrize("case", list(NIFTI_HEADERS))
def test_nifti_geometry_as_itk_reads_it(tmp_path: Path, case: str) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # nibabel order (x, y, z)
    path = _nifti(tmp_path / "h.nii.gz", data, **NIFTI_HEADERS[case])
    _assert_same(read_volume(path), data.T, _nifti_expected(case))


def test_nifti_scaling_keeps_integers_when_it_can(tmp_path: Path) -> None:
    raw = np.arange(0, 4 * 5 * 6 * 40, 40, dtype=np.uint16).reshape(6, 5, 4)
    whole = _nifti(tmp_path / "whole.nii", raw, sform=_ras_affine(), sform_code=1, slope=1.0, inter=-1024.0)
    ours = read_ct(whole)
    assert ours.array.dtype == np.int16  # not float: a 600-slice CT stays 300 MB, not 600
    geometry = _from_lps_affine(_RAS_TO_LPS @ _ras_affine()[:3])
    _assert_same(ours, raw.T.astype(np.int16) - 1024, geometry)
    half = _nifti(tmp_path / "half.nii", raw, sform=_ras_affine(), sform_code=1, slope=0.5, inter=-1000.0)
    ours = read_ct(half)
    assert ours.array.dtype == np.float32
    _assert_same(ours, raw.T.astype(np.float32) * 0.5 - 1000, geometry)


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
    flips = {"right-anterior-superior": [-1, -1, 1], "left-anterior-superior": [1, -1, 1]}.get(space, [1, 1, 1])
    axes = (np.asarray(header["space directions"]) * flips).T  # columns: LPS steps of the x, y, z axes
    expected = _from_lps_affine(np.column_stack([axes, header["space origin"] * flips]))
    _assert_same(read_volume(path), data, expected)


def test_nrrd_with_spacings_only(tmp_path: Path) -> None:
    import nrrd

    path = tmp_path / "plain.nrrd"
    nrrd.write(
        str(path), np.ones((3, 4, 5), np.uint8), {"spacings": [0.5, 0.75, 3.0], "encoding": "raw"}, index_order="C"
    )
    ours = read_volume(path)
    assert ours.geometry.spacing == (0.5, 0.75, 3.0) and ours.geometry.origin == (0.0, 0.0, 0.0)
    _assert_same(ours, np.ones((3, 4, 5), np.uint8), Geometry((0.5, 0.75, 3.0)))


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
    # TransformMatrix lists the direction column by column
    _assert_same(ours, data, Geometry((0.5, 0.6, 2.0), (1.5, -2.5, 3.5), tuple(rot.ravel())))


def test_metaimage_slice_list_read_and_a_missing_slice_file_refused(tmp_path: Path) -> None:
    # ITK reads slice lists (the own reader refused them); a slice file gone is one message
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 7
    (tmp_path / "a.raw").write_bytes(data[0].tobytes())
    (tmp_path / "b.raw").write_bytes(data[1].tobytes())
    path = tmp_path / "list.mhd"
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementSpacing = 0.5 0.5 2\n"
        "ElementDataFile = LIST\na.raw\nb.raw\n"
    )
    _assert_same(read_volume(path), data, Geometry((0.5, 0.5, 2.0)))
    (tmp_path / "b.raw").unlink()
    with pytest.raises(InputError, match="could not be read") as e:
        read_volume(path)
    assert "list.mhd" in str(e.value) and "again" in str(e.value)


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


@pytest.mark.parametrize(
    "orientation",
    [
        (1, 0, 0, 0, 1, 0),
        (1, 0, 0, 0, 0, -1),
        tuple(np.r_[_rotation(0.2, 0.1, 0.3)[:, 0], _rotation(0.2, 0.1, 0.3)[:, 1]]),
    ],
)
def test_dicom_series_read_in_slice_order(tmp_path: Path, orientation) -> None:
    pixels = _dicom_series(tmp_path / "s", orientation=orientation)
    ours = read_ct(tmp_path / "s")
    # GDCM widens 16 stored bits with an intercept to int32; the values fit int16, so int16 it is
    assert ours.array.dtype == np.int16
    o = np.asarray(orientation, float)
    # PixelSpacing (0.7, 0.6) is (between rows, between columns); slices 2.5 mm apart along the normal
    expected = Geometry(
        (0.6, 0.7, 2.5), (-50.0, 20.0, 100.0), tuple(np.column_stack([o[:3], o[3:], np.cross(o[:3], o[3:])]).ravel())
    )
    _assert_same(ours, pixels.astype(np.int16) - 1024, expected)


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
    expect = json.loads((tmp_path / "s" / "expected.json").read_text())
    assert [int(ours.array.min()), int(ours.array.max())] == [expect["min"], expect["max"]]
    assert list(ours.shape) == expect["shape_zyx"] and list(ours.geometry.spacing) == expect["spacing_xyz"]
    np.testing.assert_allclose(ours.geometry.origin, expect["origin_xyz"], atol=1e-4)
    from smoke_test import write_dicom_series

    write_dicom_series(tmp_path / "plain")  # the same series uncompressed: lossless means equal voxels
    np.testing.assert_array_equal(ours.array, read_ct(tmp_path / "plain").array)


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


def _reference_resample(arr: np.ndarray, geometry: Geometry, shape, target: Geometry, linear: bool, default: float):
    """ITK's resampling rules written out in numpy: the expected values.

    The continuous source index of every target voxel's world point; inside when it lies in
    [-0.5, n - 0.5) on every axis; nearest rounds halves up; linear clamps to the edge voxel
    inside that half-voxel border; outside gets ``default``.
    """
    from scipy import ndimage

    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    index = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1).astype(float)
    world = np.asarray(target.origin) + (index * np.asarray(target.spacing)) @ target.direction_matrix.T
    source = ((world - np.asarray(geometry.origin)) @ np.linalg.inv(geometry.direction_matrix).T) / np.asarray(
        geometry.spacing
    )
    n = np.asarray(arr.shape[::-1], float)
    inside = np.all((source >= -0.5) & (source < n - 0.5), axis=1)
    if linear:
        clamped = np.clip(source, 0, n - 1)
        values = ndimage.map_coordinates(arr.astype(np.float64), clamped[:, ::-1].T, order=1, mode="nearest")
    else:
        i = np.clip(np.floor(source + 0.5), 0, n - 1).astype(int)
        values = arr[i[:, 2], i[:, 1], i[:, 0]]
    return np.where(inside, values, default).reshape(tuple(shape))


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
    ref = _reference_resample(arr, OBLIQUE, shape, target, linear, -5.0)
    assert ours.dtype == np.float32 and (ref == -5.0).any() and (ref != -5.0).any()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("case", list(RESAMPLE_TARGETS))
def test_mask_resampling_equals_itk(case: str) -> None:
    mask = np.random.default_rng(4).random((20, 30, 40)) > 0.6
    shape, target = RESAMPLE_TARGETS[case]
    ours = resample_array(mask, OBLIQUE, shape, target, linear=False)
    ref = _reference_resample(mask.astype(np.uint8), OBLIQUE, shape, target, False, 0)
    assert ours.dtype == bool
    np.testing.assert_array_equal(ours, ref.astype(bool))


# -- every real file -------------------------------------------------------------

# recorded when nibabel/pynrrd/pydicom and SimpleITK read these files identically (sum: of the voxels as int64)
REAL = {
    "chest_ct_dicom": dict(
        shape=(141, 512, 512),
        dtype="int16",
        spacing=(0.9765625, 0.9765625, 2.0),
        origin=(-250.0, -164.0, -164.5),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-24678725164,
        sha1="0401a9708f2cdd1feb6b11b79e33e5ecc5decf39",
    ),
    "totalseg/example_ct_dicom": dict(
        shape=(20, 512, 512),
        dtype="int16",
        spacing=(0.9765625, 0.9765625, 2.0),
        origin=(-249.51171875, -437.51171875, -804.5),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-3272217339,
        sha1="a98395f00287273e906b7a5743f4fbdb13e49330",
    ),
    "totalseg/example_ct.nii.gz": dict(
        shape=(112, 101, 122),
        dtype="int32",
        spacing=(3.0, 3.0, 3.0),
        origin=(177.95632934570312, -11.319000244140625, 94.3017578125),
        direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-496851173,
        sha1="fbb5c2a1800a89645cbe5f1b3a793985648b252c",
    ),
    "totalseg/aorta_ct_cropped.nii.gz": dict(
        shape=(164, 126, 120),
        dtype="int16",
        spacing=(1.5, 1.5, 1.5),
        origin=(-71.658203125, -255.658203125, 540.2000122070312),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-497705824,
        sha1="6f42bb6f76f02303abe0f7967db08c22353df2d0",
    ),
    "cip/ct-64.nrrd": dict(
        shape=(79, 64, 64),
        dtype="int16",
        spacing=(4.171872, 4.171872, 3.9873417721518987),
        origin=(-128.413806, -264.41380599999997, -360.25632911392404),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-150669474,
        sha1="7ed560e5a655548e4aab19f6a6cdc080465fe68c",
    ),
    "cip/lm-64.nrrd": dict(
        shape=(79, 64, 64),
        dtype="uint16",
        spacing=(4.171872, 4.171872, 3.9873417721518987),
        origin=(-128.413806, -264.41380599999997, -360.25632911392404),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=5177785,
        sha1="2253d53dd4b713955cc193c0c9c762b80da9fd4a",
    ),
    "cip/crop_ct_2slices.nrrd": dict(
        shape=(2, 349, 443),
        dtype="int16",
        spacing=(0.585938, 0.585938, 0.5),
        origin=(-123.441356, -302.975712, -102.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=-135895069,
        sha1="a667e2a12e7c9b4e80cba60b9ae6188200869a95",
    ),
    "cip/crop_ct_partialLungLabelMap.nrrd": dict(
        shape=(96, 349, 443),
        dtype="uint16",
        spacing=(0.585938, 0.585938, 0.5),
        origin=(-123.441356, -302.975712, -132.00000000000006),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=169282179,
        sha1="5b500374677a5ea79340e777a37793908c08944e",
    ),
    "atm22/preds_YangLab/ATM_305_0000.nii.gz": dict(
        shape=(388, 512, 512),
        dtype="uint8",
        spacing=(0.6620000004768372, 0.6620000004768372, 0.800000011920929),
        origin=(-165.29299926757812, -169.20010375976562, -907.5999145507812),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=136320,
        sha1="c35973f9bdbf23fb96038e164133b7a5166ebce1",
    ),
    "atm22/preds_timi/ATM_305_0000.nii.gz": dict(
        shape=(388, 512, 512),
        dtype="int8",
        spacing=(0.6620000004768372, 0.6620000004768372, 0.800000011920929),
        origin=(-165.29299926757812, -169.20010375976562, -907.5999145507812),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        sum=137490,
        sha1="a2cadc0833a822cb37eca841c68282c2233cf30c",
    ),
}


@pytest.mark.slow
@needs_shared
@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(REAL))
def test_real_files_read_as_recorded(name: str) -> None:
    expect = REAL[name]
    ours = read_volume(SHARED / name)
    assert ours.shape == expect["shape"] and str(ours.array.dtype) == expect["dtype"]
    np.testing.assert_allclose(ours.geometry.spacing, expect["spacing"], atol=1e-6)
    np.testing.assert_allclose(ours.geometry.origin, expect["origin"], atol=1e-4)
    np.testing.assert_allclose(ours.geometry.direction, expect["direction"], atol=1e-6)
    assert int(ours.array.astype(np.int64).sum()) == expect["sum"]
    assert hashlib.sha1(np.ascontiguousarray(ours.array).tobytes()).hexdigest() == expect["sha1"]


@needs_shared
@pytest.mark.shared_data
def test_real_label_with_selector_unchanged() -> None:
    assert read_label(SHARED / "cip" / "crop_ct_partialLungLabelMap.nrrd", "bits:8:2").voxel_count() == 162_675


def test_rescaled_integers_stay_small_and_never_wrap() -> None:
    from core.io.decoded import smallest_integers

    gdcm = np.array([-1024, -1023, 3071], np.int32)  # GDCM's int32 for a 16-bit CT with intercept -1024
    out = smallest_integers(gdcm)
    assert out.dtype == np.int16 and out.tolist() == [-1024, -1023, 3071]
    out = smallest_integers(np.array([-1024, 64511], np.int32))  # does not fit int16
    assert out.dtype == np.int32 and out.tolist() == [-1024, 64511]
    out = smallest_integers(np.array([255.0, 55.0, 0.0], np.float32))  # ITK's float32 for a whole NIfTI slope
    assert out.dtype == np.int16 and out.tolist() == [255, 55, 0]
    out = smallest_integers(np.array([0, 2**40], np.int64))
    assert out.dtype == np.int64 and out.tolist() == [0, 2**40]
    same = np.array([1, 2], np.int16)
    assert smallest_integers(same) is same
