"""Volume IO and resampling: core.io / core.resample against SimpleITK, which they replaced.

    .venv/bin/python benchmarks/bench_io.py [--slices 600] [--repeats 3] [--formats .nii.gz .nrrd ...]

A 512 x 512 x N int16 CT (the real chest CT's slices repeated to N, so the data
compress as a CT does) is written and read in every format by both, and the
real DICOM series (../shared/data/chest_ct_dicom) is read by both. Resampling:
the shipped model's path on that CT (to 2.5 x 2.5 x 3 mm, linear, and the
probabilities back, linear) and a nearest-neighbour mask onto a rotated grid.
Prints the median seconds, ours / SimpleITK, file sizes and the peak memory
each step adds to the process (tracemalloc does not see C allocations, so the
figure is the resident set size before and after, measured in a child
process per step). SimpleITK is the test extra's; without it only ours runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DICOM = ROOT.parent / "shared" / "data" / "chest_ct_dicom"
FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]


# each step runs in its own interpreter so its peak RSS is its own
def _child(step: str, args: dict) -> dict:
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_io
out = bench_io.run_step({step!r}, json.loads({json.dumps(json.dumps(args))}))
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{step} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _ct(slices: int):
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


def run_step(step: str, args: dict) -> dict:
    """One measured step, in a fresh interpreter (see _child)."""
    import numpy as np

    t0 = time.perf_counter()
    if step == "write-ours":
        from core.io import read_volume, write_volume

        vol = read_volume(args["source"])
        t0 = time.perf_counter()
        write_volume(vol, args["path"])
    elif step == "write-sitk":
        import SimpleITK as sitk

        img = sitk.ReadImage(args["source"])
        t0 = time.perf_counter()
        sitk.WriteImage(img, args["path"], useCompression=not args["path"].endswith(".nii"))
    elif step == "read-ours":
        from core.io import read_volume

        read_volume(args["path"])
    elif step == "read-sitk":
        import SimpleITK as sitk

        if os.path.isdir(args["path"]):
            reader = sitk.ImageSeriesReader()
            uid = reader.GetGDCMSeriesIDs(args["path"])[0]
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(args["path"], uid))
            sitk.GetArrayFromImage(reader.Execute())
        else:
            sitk.GetArrayFromImage(sitk.ReadImage(args["path"]))
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
        times = {}
        for name, a, g, shape, tg, linear, default in jobs:
            t = time.perf_counter()
            if step == "resample-ours":
                from core.resample import resample_array

                resample_array(a, g, shape, tg, linear, default)
            else:
                import SimpleITK as sitk

                src = sitk.GetImageFromArray(a.view(np.uint8) if a.dtype == bool else a)
                src.SetSpacing(g.spacing)
                src.SetOrigin(g.origin)
                src.SetDirection(g.direction)
                ref = sitk.Image([int(s) for s in shape[::-1]], sitk.sitkUInt8)
                ref.SetSpacing(tg.spacing)
                ref.SetOrigin(tg.origin)
                ref.SetDirection(tg.direction)
                out = sitk.Resample(
                    src, ref, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, default
                )
                sitk.GetArrayFromImage(out)
            times[name] = time.perf_counter() - t
        return {"seconds": times}
    return {"seconds": time.perf_counter() - t0}


def _have_sitk() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", nargs="+", default=FORMATS)
    args = ap.parse_args()
    libs = ["ours"] + (["sitk"] if _have_sitk() else [])
    if len(libs) == 1:
        print("SimpleITK not installed: only core.io is timed (pip install -e '.[test]' for the comparison)")
    from core.io import write_volume

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "source.nii"
        ct = _ct(args.slices)
        write_volume(ct, source, compress=False)
        print(
            f"CT {ct.shape[2]} x {ct.shape[1]} x {ct.shape[0]} int16 ({ct.array.nbytes / 1e6:.0f} MB); "
            f"{'slices of the real chest CT' if DICOM.is_dir() else 'random values'}; median of {args.repeats}"
        )
        del ct
        print(f"{'step':28s} " + " ".join(f"{lib:>16s}" for lib in libs) + "   ratio   file MB")
        for suffix in args.formats:
            for verb in ("write", "read"):
                row = {}
                size = ""
                for lib in libs:
                    path = tmp / f"{lib}{suffix}"
                    runs = []
                    for _ in range(args.repeats):
                        if verb == "write":
                            out = _child(f"write-{lib}", {"source": str(source), "path": str(path)})
                        else:
                            # each reads what the other wrote too, so a format quirk cannot hide
                            out = _child(f"read-{lib}", {"path": str(tmp / f"ours{suffix}")})
                        runs.append(out)
                    row[lib] = (statistics.median(r["seconds"] for r in runs), max(r["peak_mb"] for r in runs))
                    if verb == "write" and lib == "ours":
                        size = f"{path.stat().st_size / 1e6:.0f}"
                    if verb == "write" and lib == "sitk":
                        size += f" (ITK {path.stat().st_size / 1e6:.0f})"
                _print_row(f"{verb} {suffix}", row, libs, size)
        if DICOM.is_dir():
            row = {}
            for lib in libs:
                runs = [_child(f"read-{lib}", {"path": str(DICOM)}) for _ in range(args.repeats)]
                row[lib] = (statistics.median(r["seconds"] for r in runs), max(r["peak_mb"] for r in runs))
            _print_row("read DICOM chest_ct (141)", row, libs, "")
        res = {lib: _child(f"resample-{lib}", {"path": str(source)}) for lib in libs}
        for name in ("down", "up", "mask-rotated"):
            row = {lib: (res[lib]["seconds"][name], res[lib]["peak_mb"]) for lib in libs}
            _print_row(f"resample {name}", row, libs, "")
    print("peak = the child process's peak RSS in MB (Python, numpy and the library included)")
    return 0


def _print_row(name: str, row: dict, libs: list[str], size: str) -> None:
    cells = " ".join(f"{row[lib][0]:7.2f} s {row[lib][1]:5.0f}M" for lib in libs)
    ratio = f"{row['ours'][0] / row['sitk'][0]:7.2f}" if "sitk" in row else "      -"
    print(f"{name:28s} {cells} {ratio}   {size}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
