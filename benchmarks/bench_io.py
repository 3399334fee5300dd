"""Volume IO and resampling: core.io / core.resample (SimpleITK) against the previous route, in one run.

    .venv/bin/python benchmarks/bench_io.py [--slices 600] [--repeats 3] [--formats .nii.gz .nrrd ...]

A 512 x 512 x N int16 CT (the real chest CT's slices repeated to N, so the data
compress as a CT does) is written and read in every format by core.io, which
goes through SimpleITK. Beside it, in the same run, the route core.io took
before SimpleITK came back, where it can still run: nibabel for NIfTI (zlib
level 1, as that code wrote), pynrrd for NRRD, pydicom stacking the real DICOM
series (../shared/data/chest_ct_dicom), and the own numpy/scipy resampler, loaded
from git history (``PREVIOUS_RESAMPLER``) when the checkout has it. The own
MetaImage code has no such stand-in, so .mha has no baseline. nibabel, pynrrd
and pydicom are the test extra's; without them only core.io runs.

Resampling: the shipped model's path on that CT (to 2.5 x 2.5 x 3 mm, linear,
and the probabilities back, linear) and a nearest-neighbour mask onto a rotated
grid. Prints the median seconds, core.io / previous, file sizes and each step's
peak memory (the resident set size of a child process per step: tracemalloc does
not see C allocations).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DICOM = ROOT.parent / "shared" / "data" / "chest_ct_dicom"
FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]
# the last commit with the own resampler (scipy.ndimage + separable numpy passes)
PREVIOUS_RESAMPLER = "08fc83b:core/resample.py"
# the library the previous route used per format (None: own code, gone)
PREVIOUS = {".nii.gz": "nibabel", ".nii": "nibabel", ".nrrd": "nrrd", ".mha": None, ".mhd": None, ".nhdr": "nrrd"}


# each step runs in its own interpreter so its peak RSS is its own (see peak_rss_mb)
def _child(step: str, args: dict[str, Any]) -> dict[str, Any]:
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_io
out = bench_io.run_step({step!r}, json.loads({json.dumps(json.dumps(args))}))
out["peak_mb"] = bench_io.peak_rss_mb()
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{step} failed: {r.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    from the parent through fork and exec, so every child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ct(slices: int) -> Any:
    import numpy as np

    from core.io import read_ct
    from core.volume import Geometry, IntensityVolume

    if DICOM.is_dir():
        real = read_ct(DICOM).array
        reps = -(-slices // real.shape[0])
        arr = np.concatenate([real] * reps)[:slices]
    else:
        rng = np.random.default_rng(0)
        arr = rng.integers(-1024, 1500, size=(slices, 512, 512)).astype(np.int16)
    return IntensityVolume(np.ascontiguousarray(arr), Geometry((0.7, 0.7, 0.8), (-180.0, -180.0, -300.0)), name="ct")


def previous_resampler() -> types.ModuleType | None:
    """core/resample.py as it was before SimpleITK came back (from git), or None outside a checkout."""
    try:
        source = subprocess.run(
            ["git", "show", PREVIOUS_RESAMPLER], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    spec = importlib.util.spec_from_loader("previous_resample", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, PREVIOUS_RESAMPLER, "exec"), module.__dict__)  # noqa: S102 - our own code, from git
    return module


def _write_previous(array: Any, spacing: Any, origin: Any, direction: Any, path: str) -> None:
    """What the previous nifti_file / nrrd_file wrote (nibabel with gzip level 1, pynrrd level 1)."""
    import gzip

    import numpy as np

    if path.endswith((".nii", ".nii.gz")):
        import nibabel

        nib: Any = nibabel  # nibabel's image classes carry no annotations
        ras = np.diag([-1.0, -1.0, 1.0])
        affine = np.eye(4)
        affine[:3, :3] = ras @ (np.asarray(direction, float) * np.asarray(spacing, float))
        affine[:3, 3] = ras @ np.asarray(origin, float)
        image = nib.Nifti1Image(array.T, affine, dtype=array.dtype)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        with open(path, "wb") as raw:
            if path.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                    image.to_file_map({"image": nib.FileHolder(fileobj=gz), "header": nib.FileHolder(fileobj=gz)})
            else:
                image.to_file_map({"image": nib.FileHolder(fileobj=raw), "header": nib.FileHolder(fileobj=raw)})
    else:
        import nrrd

        header = {
            "space": "left-posterior-superior",
            "space directions": (np.asarray(direction, float) * np.asarray(spacing, float)).T,
            "space origin": np.asarray(origin, float),
            "kinds": ["domain"] * 3,
            "encoding": "gzip",
        }
        nrrd.write(path, np.ascontiguousarray(array), header, index_order="C", compression_level=1)


def _read_previous(path: str) -> Any:
    import numpy as np

    if Path(path).is_dir():  # pydicom, slice by slice, ordered along the normal, rescaled
        import pydicom

        slices = [pydicom.dcmread(f) for f in sorted(Path(path).glob("*.dcm"))]
        normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, float), (2, 3)))
        slices.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
        return np.stack(
            [
                (ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)).astype(np.int16)
                for ds in slices
            ]
        )
    if path.endswith((".nii", ".nii.gz")):
        import nibabel

        image: Any = nibabel.load(path, mmap=False)  # a Nifti1Image; load() is typed as its base class
        return np.asanyarray(image.dataobj).T
    import nrrd

    return nrrd.read(path, index_order="C")[0]


def run_step(step: str, args: dict[str, Any]) -> dict[str, Any]:
    """One measured step, in a fresh interpreter (see _child)."""
    import numpy as np

    t0 = time.perf_counter()
    if step.startswith("write-"):
        from core.io import read_volume, write_volume

        vol = read_volume(args["source"])
        g = vol.geometry
        t0 = time.perf_counter()
        if step == "write-core.io":
            write_volume(vol, args["path"])
        else:
            _write_previous(vol.array, g.spacing, g.origin, g.direction_matrix, args["path"])
    elif step == "read-core.io":
        from core.io import read_volume

        read_volume(args["path"])
    elif step == "read-previous":
        _read_previous(args["path"])
    elif step.startswith("resample-"):
        from core.io import read_ct
        from core.preprocess import resampled_geometry
        from core.volume import Geometry

        ct = read_ct(args["path"])
        arr = ct.array.astype(np.float32)
        small_shape, small_geo = resampled_geometry(ct.geometry, ct.shape, (2.5, 2.5, 3.0))
        rng = np.random.default_rng(0)
        prob = rng.random(small_shape, dtype=np.float32)
        theta = 0.3
        rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
        rotated = Geometry(ct.geometry.spacing, ct.geometry.origin, tuple(rot.ravel()))
        mask = arr > -500
        jobs = [
            ("down", arr, ct.geometry, small_shape, small_geo, True, -1024.0),
            ("up", prob, small_geo, ct.shape, ct.geometry, True, 0.0),
            ("mask-rotated", mask, ct.geometry, ct.shape, rotated, False, 0.0),
        ]
        if step == "resample-core.io":
            from core.resample import resample_array
        else:
            previous = previous_resampler()
            assert previous is not None
            resample_array = previous.resample_array
        times = {}
        for name, a, g, shape, tg, linear, default in jobs:
            t = time.perf_counter()
            resample_array(a, g, shape, tg, linear, default)
            times[name] = time.perf_counter() - t
        return {"seconds": times}
    return {"seconds": time.perf_counter() - t0}


def _have(module: str | None) -> bool:
    return module is not None and importlib.util.find_spec(module) is not None


def _median(runs: list[dict[str, Any]]) -> tuple[float, float]:
    return statistics.median(r["seconds"] for r in runs), max(r["peak_mb"] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", nargs="+", default=FORMATS)
    args = ap.parse_args()
    from core.io import write_volume

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "source.nii"
        ct = _ct(args.slices)
        write_volume(ct, source, compress=False)
        print(
            f"CT {ct.shape[2]} x {ct.shape[1]} x {ct.shape[0]} int16 ({ct.array.nbytes / 1e6:.0f} MB); "
            f"{'slices of the real chest CT' if DICOM.is_dir() else 'random values'}; median of {args.repeats}"
        )
        del ct
        print(f"{'step':30s} {'core.io (SimpleITK)':>18s} {'previous route':>22s}   ratio   file MB")
        for suffix in args.formats:
            previous = PREVIOUS.get(suffix)
            libs = ["core.io"] + (["previous"] if _have(previous) else [])
            for verb in ("write", "read"):
                row: dict[str, tuple[float, float]] = {}
                size = ""
                for lib in libs:
                    path = tmp / f"{lib}{suffix}"
                    runs = []
                    for _ in range(args.repeats):
                        if verb == "write":
                            runs.append(_child(f"write-{lib}", {"source": str(source), "path": str(path)}))
                        else:
                            # each reads what core.io wrote, so both read the same bytes
                            runs.append(_child(f"read-{lib}", {"path": str(tmp / f"core.io{suffix}")}))
                    row[lib] = _median(runs)
                    if verb == "write":
                        size += (
                            f"{path.stat().st_size / 1e6:.0f}"
                            if lib == "core.io"
                            else f" ({path.stat().st_size / 1e6:.0f})"
                        )
                _print_row(f"{verb} {suffix}", row, f"{previous or 'own code, gone'}", size)
        if DICOM.is_dir():
            libs = ["core.io"] + (["previous"] if _have("pydicom") else [])
            row = {
                lib: _median([_child(f"read-{lib}", {"path": str(DICOM)}) for _ in range(args.repeats)]) for lib in libs
            }
            _print_row("read DICOM chest_ct (141)", row, "pydicom", "")
        libs = ["core.io"] + (["previous"] if previous_resampler() is not None else [])
        res = {lib: _child(f"resample-{lib}", {"path": str(source)}) for lib in libs}
        for name in ("down", "up", "mask-rotated"):
            row = {lib: (res[lib]["seconds"][name], res[lib]["peak_mb"]) for lib in libs}
            _print_row(f"resample {name}", row, "own numpy/scipy", "")
    print(
        "peak = the child process's peak RSS in MB (Python, numpy and the library included); ratio = core.io / previous"
    )
    return 0


def _print_row(name: str, row: dict[str, tuple[float, float]], previous: str, size: str) -> None:
    ours = f"{row['core.io'][0]:7.2f} s {row['core.io'][1]:5.0f}M"
    if "previous" in row:
        before = f"{row['previous'][0]:7.2f} s {row['previous'][1]:5.0f}M"
        ratio = f"{row['core.io'][0] / row['previous'][0]:7.2f}"
    else:
        before, ratio = f"{'-':>16s}", "      -"
    print(f"{name:30s} {ours:>18s} {before:>16s} {previous[:8]:>5s} {ratio}   {size}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
