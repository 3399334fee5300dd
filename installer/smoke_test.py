"""Smoke test of a frozen Airway Studio build (Linux or Windows), standard library only.

    python installer/smoke_test.py [--app dist/AirwayStudio/AirwayStudio[.exe]] [--allow-skip]

Runs the bundle's own executable the way users and the GUI do: ``--version``, a
generated phantom, ``info`` on it and on a DICOM series written here (and on the
series given with ``--dicom``: compressed ones test the frozen GDCM decoder), ``segment`` with the bundled model (and with the
training-free ``--method region-growing`` when the build has it), a 1-epoch ``train``
with DataLoader worker processes (the frozen executable re-launches itself for them),
and the GUI ``--demo --screenshot`` whose PNG must not be blank. Each check prints
PASS/FAIL/SKIP with its time; the last line is ``N passed, N failed, N skipped``.

Exit status: 0 only when every check passed; 1 when one failed; 3 when none failed but
one was skipped (a feature this build does not have), unless ``--allow-skip`` is given.
``--app main.py`` runs the same checks on a source checkout (with this Python). On
Windows the GUI executable is windowed (no console): the CLI checks run the bundle's
console twin ``airway.exe`` beside it (``--cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the bundled model's own spacing: at it the model finds the phantom's tree (DSC ~92; realct_wingsnet.pt, 91.5)
PHANTOM_ARGS = ["--size", "48", "--spacing", "2.5", "2.5", "3.0", "--seed", "100"]
#: a 1-epoch run: the quick preset with stage 0 only, on three 32^3 phantoms, two DataLoader workers
TRAIN_CONFIG = """\
[run]
num_workers = 2
threads = 2

[stage0]
epochs = 1
milestones = []

[stage1]
enabled = false

[stage2]
enabled = false
"""


class Skip(Exception):
    """The build lacks the feature a check needs: reported as SKIP, never as a pass."""


class Failure(Exception):
    pass


def default_app() -> Path:
    name = "AirwayStudio.exe" if sys.platform == "win32" else "AirwayStudio"
    return ROOT / "dist" / "AirwayStudio" / name


def default_cli(app: Path) -> Path:
    twin = app.with_name("airway.exe")
    return twin if app.suffix.lower() == ".exe" and twin.is_file() else app


class Runner:
    def __init__(self, app: Path, work: Path, timeout: float, verbose: bool, cli: Path | None = None):
        self.app = app
        self.cli = cli or app
        self.work = work
        self.timeout = timeout
        self.verbose = verbose
        self.env = dict(os.environ)
        # a fresh cache: the ONNX export (torch.onnx inside the bundle) runs every time
        self.env["AIRWAY_CACHE_DIR"] = str(work / "cache")
        self.env.setdefault("PYTHONUTF8", "1")
        self._segment_help: str | None = None

    def segment_methods(self) -> set[str]:
        """The build's `segment --method` choices; empty for a build without the option."""
        if self._segment_help is None:
            self._segment_help = self.run(["segment", "--help"]).stdout
        if "--method" not in self._segment_help:
            return set()
        return {m for m in ("model", "region-growing", "auto") if m in self._segment_help}

    def command(self, args: list[str], gui: bool = False) -> list[str]:
        exe = self.app if gui else self.cli
        if exe.suffix == ".py":
            return [sys.executable, str(exe), *args]
        return [str(exe), *args]

    def run(
        self,
        args: list[str],
        wrap: list[str] | None = None,
        timeout: float | None = None,
        expect: int = 0,
        gui: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*(wrap or []), *self.command(args, gui)]
        if self.verbose:
            print("    $", " ".join(cmd), flush=True)
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=self.env,
                cwd=self.work,
                timeout=timeout or self.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise Failure(f"timed out after {exc.timeout:.0f} s: {' '.join(cmd)}") from None
        if proc.returncode != expect:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-6:]
            raise Failure(f"exit {proc.returncode} (expected {expect}) from {' '.join(args[:2])}: " + " | ".join(tail))
        return proc


# -- PNG check (no Pillow in a bare CI Python) ----------------------------------------


def png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit non-interlaced RGB/RGBA/grey PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise Failure(f"{path.name} is not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise Failure(f"{path.name} has no IHDR")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise Failure(f"{path.name}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = prev[i], (prev[i - channels] if i >= channels else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            raise Failure(f"{path.name}: bad PNG filter {kind} in row {y}")
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def image_stats(path: Path) -> tuple[int, float]:
    """(distinct colours, share of the most common colour) over the whole image."""
    width, height, channels, rows = png_pixels(path)
    counts: dict[bytes, int] = {}
    for row in rows:
        for i in range(0, len(row), channels):
            px = row[i : i + min(channels, 3)]
            counts[px] = counts.get(px, 0) + 1
    return len(counts), max(counts.values()) / (width * height)


# -- the checks -------------------------------------------------------------------------


def check_version(r: Runner) -> str:
    out: str = r.run(["--version"]).stdout.strip()
    if not out.startswith("Airway Studio "):
        raise Failure(f"unexpected --version output: {out!r}")
    return out


def check_phantom(r: Runner) -> str:
    r.run(["phantom", *PHANTOM_ARGS, "--out", "phantom"])
    missing = [n for n in ("ct.nii.gz", "label.nii.gz") if not (r.work / "phantom" / n).is_file()]
    if missing:
        raise Failure(f"phantom wrote no {', '.join(missing)}")
    return "48^3 phantom written"


def check_info(r: Runner) -> str:
    info = json.loads(r.run(["info", "phantom/ct.nii.gz", "--json"]).stdout)
    if info.get("shape_zyx") != [48, 48, 48] or info.get("spacing_xyz") != [2.5, 2.5, 3.0]:
        raise Failure(f"info read shape {info.get('shape_zyx')}, spacing {info.get('spacing_xyz')}")
    return f"shape {info['shape_zyx']}, spacing {info['spacing_xyz']}"


#: a small axial CT series written here (standard library): 6 slices of 16 x 20 pixels
DICOM_SHAPE = (6, 16, 20)
DICOM_SPACING = (0.75, 0.7, 2.5)  # x (between columns), y (between rows), z (slice step), mm
DICOM_ORIGIN = (-120.0, -80.0, -300.0)


def _dicom_element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian data element, value padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", group, element) + vr.encode("ascii")
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def write_dicom_series(folder: Path) -> tuple[int, int]:
    """A valid Part 10 CT series in ``folder``, files named against slice order; (min, max) HU stored."""
    folder.mkdir(parents=True, exist_ok=True)
    ct, explicit_le = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
    nz, ny, nx = DICOM_SHAPE
    stored: list[int] = []
    for z in range(nz):
        uid = f"1.2.826.0.1.3680043.8.498.{z + 1}"
        pixels = [(x * 7 + y * 13 + z * 101) % 2000 for y in range(ny) for x in range(nx)]
        stored += pixels
        ds = b"".join(
            [
                _dicom_element(0x0008, 0x0016, "UI", ct.encode()),
                _dicom_element(0x0008, 0x0018, "UI", uid.encode()),
                _dicom_element(0x0008, 0x0060, "CS", b"CT"),
                _dicom_element(0x0020, 0x000D, "UI", b"1.2.826.0.1.3680043.8.498.100"),
                _dicom_element(0x0020, 0x000E, "UI", b"1.2.826.0.1.3680043.8.498.200"),
                _dicom_element(0x0020, 0x0013, "IS", str(z + 1).encode()),
                _dicom_element(
                    0x0020,
                    0x0032,
                    "DS",
                    "\\".join(
                        str(v) for v in (DICOM_ORIGIN[0], DICOM_ORIGIN[1], DICOM_ORIGIN[2] + z * DICOM_SPACING[2])
                    ).encode(),
                ),
                _dicom_element(0x0020, 0x0037, "DS", b"1\\0\\0\\0\\1\\0"),
                _dicom_element(0x0028, 0x0002, "US", struct.pack("<H", 1)),
                _dicom_element(0x0028, 0x0004, "CS", b"MONOCHROME2"),
                _dicom_element(0x0028, 0x0010, "US", struct.pack("<H", ny)),
                _dicom_element(0x0028, 0x0011, "US", struct.pack("<H", nx)),
                _dicom_element(0x0028, 0x0030, "DS", f"{DICOM_SPACING[1]}\\{DICOM_SPACING[0]}".encode()),
                _dicom_element(0x0028, 0x0100, "US", struct.pack("<H", 16)),
                _dicom_element(0x0028, 0x0101, "US", struct.pack("<H", 16)),
                _dicom_element(0x0028, 0x0102, "US", struct.pack("<H", 15)),
                _dicom_element(0x0028, 0x0103, "US", struct.pack("<H", 0)),
                _dicom_element(0x0028, 0x1052, "DS", b"-1024"),
                _dicom_element(0x0028, 0x1053, "DS", b"1"),
                _dicom_element(0x7FE0, 0x0010, "OW", struct.pack(f"<{len(pixels)}H", *pixels)),
            ]
        )
        meta = b"".join(
            [
                _dicom_element(0x0002, 0x0001, "OB", b"\0\1"),
                _dicom_element(0x0002, 0x0002, "UI", ct.encode()),
                _dicom_element(0x0002, 0x0003, "UI", uid.encode()),
                _dicom_element(0x0002, 0x0010, "UI", explicit_le.encode()),
            ]
        )
        meta = _dicom_element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) + meta
        # names run against the slice order: the reader must sort by position, not by name
        (folder / f"IM{nz - z:03d}.dcm").write_bytes(b"\0" * 128 + b"DICM" + meta + ds)
    return min(stored) - 1024, max(stored) - 1024


def dicom_expectation(lo: int, hi: int) -> dict[str, Any]:
    """What ``info --json`` must report for the series write_dicom_series wrote."""
    return {
        "shape_zyx": list(DICOM_SHAPE),
        "spacing_xyz": list(DICOM_SPACING),
        "origin_xyz": list(DICOM_ORIGIN),
        "min": lo,
        "max": hi,
    }


def check_dicom(r: Runner) -> str:
    expect = dicom_expectation(*write_dicom_series(r.work / "dicom"))
    info = json.loads(r.run(["info", "dicom", "--json"]).stdout)
    got = {k: info.get(k) for k in expect}
    if got != expect:
        raise Failure(f"DICOM series read as {got}, written as {expect}")
    return f"{DICOM_SHAPE[0]} slices, spacing {info['spacing_xyz']}, HU {expect['min']}..{expect['max']}"


def check_dicom_given(r: Runner, folders: list[Path]) -> str:
    """Each folder must read as a 3D CT; one with an ``expected.json`` (compress_dicom.py) exactly as that says."""
    notes = []
    for folder in folders:
        info = json.loads(r.run(["info", str(folder), "--json"]).stdout)
        shape = info.get("shape_zyx") or []
        if len(shape) != 3 or min(shape) < 2 or not info.get("max", 0) > info.get("min", 0):
            raise Failure(f"{folder} read as shape {shape}, values {info.get('min')}..{info.get('max')}")
        expected = folder / "expected.json"
        if expected.is_file():
            expect = json.loads(expected.read_text(encoding="utf-8"))
            got = {k: info.get(k) for k in expect if k != "transfer_syntax"}
            if got != {k: v for k, v in expect.items() if k != "transfer_syntax"}:
                raise Failure(f"{folder} ({expect.get('transfer_syntax')}) read as {got}, written as {expect}")
            notes.append(f"{folder.name}: {expect.get('transfer_syntax')} exact")
        else:
            notes.append(f"{folder.name}: shape {shape}, HU {info['min']:g}..{info['max']:g}")
    return "; ".join(notes)


def _segment(r: Runner, extra: list[str], out: str) -> dict[str, Any]:
    proc = r.run(
        [
            "segment",
            "-q",
            "--input",
            "phantom/ct.nii.gz",
            "--output",
            out,
            "--reference",
            "phantom/label.nii.gz",
            "--json",
            *extra,
        ]
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise Failure(f"segment printed no JSON: {proc.stdout.strip()[-200:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if not (r.work / out).is_file() or not result.get("voxels"):
        raise Failure(f"segment wrote no airway ({result.get('voxels')} voxels)")
    return result


def check_segment(r: Runner, expect_backend: str) -> str:
    # a build with --method picks region-growing when no --model is given: ask for the model
    res = _segment(r, ["--method", "model"] if "model" in r.segment_methods() else [], "seg_model.nii.gz")
    dsc = res["metrics"]["dsc"]
    if dsc < 80:
        raise Failure(f"DSC {dsc:.1f} with the bundled model (about 92 expected on this phantom)")
    wanted = ("onnxruntime", "openvino") if expect_backend == "fast-cpu" else (expect_backend,)
    if expect_backend != "any" and not str(res.get("backend", "")).startswith(wanted):
        raise Failure(
            f"ran on backend {res.get('backend')}, not {' or '.join(wanted)} "
            "(a missing engine falls back to PyTorch silently)"
        )
    return f"{res['voxels']} voxels, DSC {dsc:.1f}, backend {res['backend']}"


def check_region_growing(r: Runner) -> str:
    if "region-growing" not in r.segment_methods():
        raise Skip("this build's `segment` has no --method region-growing")
    res = _segment(r, ["--method", "region-growing"], "seg_rg.nii.gz")
    return f"{res['voxels']} voxels, DSC {res['metrics']['dsc']:.1f}"


def check_train(r: Runner) -> str:
    r.run(["phantom-dataset", "--n", "3", "--size", "32", "--out", "train_data"])
    (r.work / "smoke.toml").write_text(TRAIN_CONFIG, encoding="utf-8")
    r.run(
        [
            "train",
            "--preset",
            "quick",
            "--config",
            "smoke.toml",
            "--data",
            "train_data",
            "--out",
            "run",
            "--device",
            "cpu",
        ],
        timeout=max(r.timeout, 600),
    )
    ckpts = sorted(p.name for p in (r.work / "run" / "checkpoints").glob("*.pt"))
    if "last.pt" not in ckpts:
        raise Failure(f"train wrote no checkpoints/last.pt (found {ckpts})")
    return f"1 epoch, checkpoints {', '.join(ckpts)}"


def gui_wrapper() -> list[str]:
    """xvfb-run on a Linux machine without a display; nothing where there is one (and on Windows)."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            raise Failure("no display and no xvfb-run: install xvfb to run the GUI check headless")
        return [xvfb, "-a", "-s", "-screen 0 1600x1000x24"]
    return []


def check_gui(r: Runner) -> str:
    shot = r.work / "gui.png"
    t0 = time.perf_counter()
    r.run(["--demo", "--screenshot", str(shot), "--size", "1280x800"], wrap=gui_wrapper(), gui=True)
    seconds = time.perf_counter() - t0
    if not shot.is_file():
        raise Failure("no screenshot written")
    colours, top = image_stats(shot)
    # an empty window is a few flat greys; slice views + 3D surface + tables give thousands
    if colours < 200 or top > 0.9:
        raise Failure(f"screenshot looks blank: {colours} colours, the commonest covers {top:.0%}")
    return f"start to screenshot {seconds:.1f} s, {colours} colours, commonest {top:.0%}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", type=Path, default=default_app(), help="the frozen executable (default: %(default)s)")
    p.add_argument(
        "--cli",
        type=Path,
        default=None,
        help="executable for the subcommands (default: airway.exe beside a Windows --app, else --app)",
    )
    p.add_argument("--allow-skip", action="store_true", help="exit 0 when checks were skipped but none failed")
    p.add_argument(
        "--expect-backend",
        default="fast-cpu",
        help="CPU engine the bundled model must run on: fast-cpu (default: ONNX Runtime or OpenVINO, "
        "not the PyTorch fallback), onnxruntime, openvino, or any",
    )
    p.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks (names as printed)")
    p.add_argument(
        "--dicom",
        type=Path,
        nargs="+",
        help="also read these DICOM series folders: compressed ones "
        "(installer/compress_dicom.py, real data) prove the frozen GDCM decoder",
    )
    p.add_argument("--timeout", type=float, default=300, help="seconds per command (default 300)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--verbose", "-v", action="store_true", help="print each command")
    args = p.parse_args(argv)
    # absolute, not resolved: /usr/bin/airway-studio -> /opt/... is tested through the symlink
    app = args.app.absolute()
    cli = (args.cli or default_cli(app)).absolute()
    for exe in {app, cli}:
        if not exe.is_file():
            print(f"smoke test: no executable at {exe}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="airway-smoke-"))
    r = Runner(app, work, args.timeout, args.verbose, cli)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("version", lambda: check_version(r)),
        ("phantom", lambda: check_phantom(r)),
        ("info", lambda: check_info(r)),
        ("dicom", lambda: check_dicom(r)),
        *([("dicom-given", lambda: check_dicom_given(r, [d.absolute() for d in args.dicom]))] if args.dicom else []),
        ("segment-model", lambda: check_segment(r, args.expect_backend)),
        ("segment-region-growing", lambda: check_region_growing(r)),
        ("train", lambda: check_train(r)),
        ("gui", lambda: check_gui(r)),
    ]
    # info and both segmentations read the phantom: asking for them alone still makes it
    wanted = set(args.only or [name for name, _ in checks])
    if wanted & {"info", "segment-model", "segment-region-growing"}:
        wanted.add("phantom")
    print(f"smoke test of {app}{f' (CLI {cli})' if cli != app else ''}, work folder {work}", flush=True)
    results = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for name, check in checks:
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            status, note = "PASS", check()
        except Skip as exc:
            status, note = "SKIP", str(exc)
        except (Failure, json.JSONDecodeError, KeyError, OSError) as exc:
            status, note = "FAIL", f"{type(exc).__name__}: {exc}" if not isinstance(exc, Failure) else str(exc)
        results[status] += 1
        print(f"{status} {name:<24} {time.perf_counter() - t0:6.1f} s  {note}", flush=True)
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{results['PASS']} passed, {results['FAIL']} failed, {results['SKIP']} skipped")
    if results["FAIL"]:
        return 1
    if results["SKIP"] and not args.allow_skip:
        print("not every check ran (see SKIP above): exit 3; --allow-skip accepts that", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
