"""Volumes, geometry and file formats: round trips and bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core.errors import AirwayError, GeometryError, InputError
from core.io import read_ct, read_label, read_volume, resample_label_to, write_volume
from core.volume import Geometry, IntensityVolume, LabelSelector, LabelVolume, check_same_grid, to_canonical

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data is absent (real CT data is not in the repo)"
)

FORMATS = [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"]
OBLIQUE = Geometry(
    spacing=(0.7, 0.8, 1.25),
    origin=(-120.5, 33.25, -400.0),
    direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
)


def _ct(rng: np.random.Generator) -> IntensityVolume:
    return IntensityVolume(rng.integers(-1024, 2000, size=(7, 9, 11)).astype(np.int16), OBLIQUE, "ct")


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_keeps_array_and_geometry(tmp_path: Path, suffix: str) -> None:
    ct = _ct(np.random.default_rng(0))
    path = write_volume(ct, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.geometry.spacing == pytest.approx(ct.geometry.spacing, abs=1e-6)
    assert back.geometry.origin == pytest.approx(ct.geometry.origin, abs=1e-4)
    assert back.geometry.direction == pytest.approx(ct.geometry.direction, abs=1e-6)
    # no temporary files left behind
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_label_round_trip_as_mask(tmp_path: Path, suffix: str) -> None:
    mask = np.zeros((6, 6, 6), bool)
    mask[2:4, 1:5, 3] = True
    path = write_volume(LabelVolume(mask, OBLIQUE, "lab"), tmp_path / f"l{suffix}")
    back = read_label(path)
    assert back.array.dtype == bool
    np.testing.assert_array_equal(back.array, mask)


def test_float_ct_round_trip(tmp_path: Path) -> None:
    arr = np.linspace(-1000, 500, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    back = read_ct(write_volume(IntensityVolume(arr, OBLIQUE), tmp_path / "f.mha"))
    np.testing.assert_array_equal(back.array, arr)


def test_label_selectors() -> None:
    arr = np.array([0, 1, 2, 512, 513, 770]).reshape(1, 2, 3)
    assert LabelSelector.parse(None).apply(arr).tolist() == (arr != 0).tolist()
    assert LabelSelector.parse("value:2").apply(arr).ravel().tolist() == [False, False, True, False, False, False]
    # CIP maps keep airway as (value >> 8) == 2
    assert LabelSelector.parse("bits:8:2").apply(arr).ravel().tolist() == [False, False, False, True, True, False]
    with pytest.raises(InputError, match="bits:SHIFT:N"):
        LabelSelector.parse("airway")


# -- bad inputs: our error type, a message naming the file and the fix, nothing written


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_ct(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(e.value) and "Check the path" in str(e.value)


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    # big enough that half the file cuts into the voxel data, not the header
    ct = IntensityVolume(np.random.default_rng(1).integers(-1024, 2000, size=(20, 30, 40)).astype(np.int16), OBLIQUE)
    good = write_volume(ct, tmp_path / f"ct{suffix}")
    data_file = (
        good.with_suffix(".raw") if suffix == ".mhd" else good.with_suffix(".raw.gz") if suffix == ".nhdr" else good
    )
    data_file = data_file if data_file.exists() else next(p for p in tmp_path.iterdir() if p != good)
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        read_ct(good)
    assert good.name in str(e.value) and ("truncated" in str(e.value))


def test_corrupt_and_empty_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(InputError, match="junk.nrrd"):
        read_ct(junk)
    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_ct(empty)


def test_2d_image_refused(tmp_path: Path) -> None:
    import nibabel as nib

    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError) as e:
        read_ct(path)
    assert "3D" in str(e.value) and "slice.nii.gz" in str(e.value)
    with pytest.raises(InputError, match="3D"):
        IntensityVolume(np.zeros((4, 4)))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii", ".nii.gz"])
def test_nan_ct_refused(tmp_path: Path, suffix: str) -> None:
    from core.io import write_volume_file

    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    path = tmp_path / f"nan{suffix}"
    vol = IntensityVolume(np.zeros_like(arr), OBLIQUE)
    vol.array = arr  # past the class's own NaN check: the file must be refused on reading too
    write_volume_file(vol, path)
    with pytest.raises(InputError, match="NaN") as e:
        read_ct(path)
    assert path.name in str(e.value)
    with pytest.raises(InputError, match="NaN"):
        read_label(path)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="No DICOM series"):
        read_ct(tmp_path)


def test_empty_label_refused_when_asked(tmp_path: Path) -> None:
    path = write_volume(LabelVolume(np.zeros((4, 4, 4), bool), OBLIQUE), tmp_path / "empty_label.nii.gz")
    assert read_label(path).voxel_count() == 0
    with pytest.raises(InputError, match="empty") as e:
        read_label(path, allow_empty=False)
    assert "empty_label.nii.gz" in str(e.value)


def test_mismatched_geometry_names_both(tmp_path: Path) -> None:
    ct = _ct(np.random.default_rng(2))
    other = Geometry((0.7, 0.8, 2.5), OBLIQUE.origin, OBLIQUE.direction)
    path = write_volume(LabelVolume(np.ones((7, 9, 11), bool), other, "ref"), tmp_path / "ref.nii.gz")
    with pytest.raises(GeometryError) as e:
        read_label(path, reference=ct)
    msg = str(e.value)
    assert "1.25" in msg and "2.5" in msg and "resample" in msg
    # explicit opt-in resampling puts it on the CT grid
    lab = read_label(path)
    res = resample_label_to(lab, ct)
    check_same_grid(ct, res)
    assert res.array.dtype == bool and res.voxel_count() > 0


def test_unknown_output_format_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown volume format"):
        write_volume(_ct(np.random.default_rng(3)), tmp_path / "ct.png")
    assert list(tmp_path.iterdir()) == []


def test_errors_are_one_family() -> None:
    assert issubclass(InputError, AirwayError) and issubclass(GeometryError, AirwayError)


# -- geometry and orientation


def test_index_world_round_trip() -> None:
    pts = np.array([[0, 0, 0], [6, 8, 10], [3.5, 2.25, 1.0]])
    w = OBLIQUE.index_to_world(pts)
    np.testing.assert_allclose(OBLIQUE.world_to_index(w), pts, atol=1e-9)
    # x index runs along -X (direction[0] = -1) with spacing 0.7
    np.testing.assert_allclose(w[0] - OBLIQUE.index_to_world([0, 0, 1]), [0.7, 0, 0], atol=1e-9)


def test_canonical_orientation_keeps_world_positions() -> None:
    rng = np.random.default_rng(4)
    # a permuted, flipped direction: index x -> world -y, index y -> world +z, index z -> world -x
    direction = (0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    geo = Geometry((0.5, 0.75, 2.0), (10.0, 20.0, 30.0), direction)
    vol = IntensityVolume(rng.integers(0, 100, size=(4, 5, 6)).astype(np.int16), geo)
    can, reo = to_canonical(vol)
    assert can.geometry.orientation_code() == "LPS"
    np.testing.assert_allclose(can.geometry.direction_matrix, np.eye(3), atol=1e-12)
    # every voxel keeps its value at the same world point
    for zyx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        world = geo.index_to_world(zyx)
        new = np.rint(can.geometry.world_to_index(world)).astype(int)
        assert can.array[tuple(new)] == vol.array[zyx]
    np.testing.assert_array_equal(reo.invert(can.array), vol.array)


@needs_shared
def test_flipped_direction_file_is_shown_in_lps() -> None:
    ct = read_ct(SHARED / "totalseg" / "example_ct.nii.gz")
    assert ct.geometry.orientation_code() != "LPS"
    can, _ = to_canonical(ct)
    assert can.geometry.orientation_code() == "LPS"
    # world position of the first voxel of the canonical array is the most right/anterior/inferior corner
    corners = np.array(
        [[z, y, x] for z in (0, ct.shape[0] - 1) for y in (0, ct.shape[1] - 1) for x in (0, ct.shape[2] - 1)]
    )
    world = ct.geometry.index_to_world(corners)
    np.testing.assert_allclose(can.geometry.origin, world.min(axis=0), atol=1e-3)


@needs_shared
def test_cip_label_with_bit_selector() -> None:
    lab = read_label(SHARED / "cip" / "lm-64.nrrd", "bits:8:2")
    assert lab.voxel_count() == 555


# -- hostile headers (issue 27): refused with the file's name and a fix, before any voxel is read

from hostile_files import hostile_direction_file, huge_header_file  # noqa: E402 - tests/ is on sys.path


@pytest.mark.parametrize("kind", ["zero.mha", "nan.mha", "shear.mha", "nan.nrrd", "shear.nrrd", "zero.nii", "nan.nii"])
def test_direction_that_is_no_rotation_refused(tmp_path: Path, kind: str) -> None:
    path = hostile_direction_file(tmp_path, kind)
    with pytest.raises(InputError) as e:
        read_volume(path)
    msg = str(e.value)
    assert path.name in msg and "not a rotation" in msg and "Fix the orientation" in msg
    with pytest.raises(InputError, match="not a rotation"):
        read_label(path)


def test_direction_within_tolerance_accepted(tmp_path: Path) -> None:
    # cosines written with 4 decimals (as many scanners do) are a rotation within 1e-3
    c, s = round(float(np.cos(0.3)), 4), round(float(np.sin(0.3)), 4)
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    path = write_volume(IntensityVolume(np.zeros((2, 3, 4), np.int16), geo), tmp_path / "rounded.mha")
    assert read_volume(path).geometry.direction == pytest.approx(geo.direction, abs=1e-6)


@pytest.fixture
def no_voxel_reads(monkeypatch):
    """Fails a test that reads voxels: ITK's pixel reads, recorded."""
    import SimpleITK as sitk

    reads: list[str] = []
    original = sitk.ImageFileReader.Execute

    def execute(self, *args, **kwargs):
        reads.append(self.GetFileName())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", execute)
    return reads


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nrrd-gzip", ".mha", ".mha-zlib"])
def test_huge_header_in_a_small_file_refused_before_any_allocation(tmp_path: Path, suffix: str, no_voxel_reads) -> None:
    path = huge_header_file(tmp_path, suffix)
    with pytest.raises(InputError) as e:
        read_volume(path)
    msg = str(e.value)
    assert path.name in msg and "1000 x 1000 x 1000" in msg and "again" in msg, msg
    assert no_voxel_reads == []  # refused from the header alone


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc (Linux)")
def test_huge_header_does_not_allocate_in_a_real_process(tmp_path: Path) -> None:
    """`airway info` on each hostile file: exit 2, one line, and the process never grows towards 2 GB."""
    import subprocess
    import sys

    files = [huge_header_file(tmp_path, s) for s in (".nii", ".nii.gz", ".nrrd", ".mha")]
    root = Path(__file__).resolve().parents[1]
    # The child's own high-water mark (VmHWM of its address space). Not ru_maxrss: Linux folds the
    # parent's RSS into it at exec (a 3 GB pytest process gave a 3 GB "peak" to a 170 MB child).
    code = (
        "import sys\n"
        "from core.cli import main\n"
        "codes = [main(['info', f]) for f in sys.argv[1:]]\n"
        "hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:'))\n"
        "print(codes, int(hwm.split()[1]) // 1024)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)], cwd=root, capture_output=True, text=True, timeout=300
    )
    codes, peak_mb = r.stdout.strip().rsplit("]", 1)
    assert codes + "]" == "[2, 2, 2, 2]", r.stdout + r.stderr
    assert int(peak_mb) < 1000, f"peak {peak_mb} MB"
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("airway: error:")]
    assert len(lines) == 4 and "Traceback" not in r.stderr


def test_volume_larger_than_free_memory_refused_before_reading(tmp_path: Path, monkeypatch, no_voxel_reads) -> None:
    import collections

    import psutil

    path = write_volume(_ct(np.random.default_rng(5)), tmp_path / "ct.nii.gz")
    memory = collections.namedtuple("memory", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(1000, 8 << 30))
    with pytest.raises(InputError) as e:
        read_ct(path)
    msg = str(e.value)
    assert "ct.nii.gz" in msg and "memory is free" in msg and "Close other programs" in msg
    assert no_voxel_reads == []


def test_a_write_the_file_system_refuses_is_an_error_in_every_format(tmp_path: Path) -> None:
    """ITK's NIfTI writer leaves a short file without an error; core.io must say what the system said."""
    import subprocess
    import sys

    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG, like a full disk\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "import numpy as np\n"
        "from core.errors import InputError\n"
        "from core.io import write_volume_file\n"
        "from core.volume import IntensityVolume\n"
        "ct = IntensityVolume(np.random.default_rng(0).integers(-1000, 1000, (20, 30, 40)).astype(np.int16))\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        write_volume_file(ct, path)\n"
        "        print('written', path)\n"
        "    except InputError as exc:\n"
        "        print(exc)\n"
    )
    paths = [str(tmp_path / f"ct{s}") for s in FORMATS]
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code, *paths], cwd=root, capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(FORMATS), r.stdout + r.stderr
    for path, line in zip(paths, lines):
        assert line.startswith(path) and "Could not write the volume: File too large" in line, line
