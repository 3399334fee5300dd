"""3D snapshots (TP/FP/FN surface, anterior view) of case x model pairs, rendered
off screen with pyvista in a child process: without a display or EGL, VTK can
crash the process instead of raising, and the comparison must survive that.

``python -m core.compare.snapshot REQUEST.json``: REQUEST holds ``jobs``
[{reference, prediction, label_selector, prediction_selector, out}] and
``size`` [w, h]; one JSON line per job on stdout (``{"out", "ok"}`` or
``{"out", "error"}``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SNAPSHOT_SIZE = (360, 360)


def render_jobs(
    jobs: list[dict[str, Any]], size: tuple[int, int] = SNAPSHOT_SIZE, timeout_s: float = 600.0
) -> tuple[dict[str, str], str]:
    """Render in a child process; ``({out: error message or ""}, note)`` where ``note`` says why
    nothing could be rendered (empty when the renderer ran)."""
    if not jobs:
        return {}, ""
    with tempfile.TemporaryDirectory(prefix="airway-snap-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps({"jobs": jobs, "size": list(size)}), encoding="utf-8")
        env = dict(os.environ)
        if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
            env.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "core.compare.snapshot", str(req)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return {}, f"3D snapshots timed out after {timeout_s:.0f} s"
    status: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and "out" in d:
            status[d["out"]] = d.get("error", "")
    if proc.returncode != 0 and not any(v == "" for v in status.values()):
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return status, (
            "3D snapshots unavailable: the off-screen renderer failed "
            f"({tail[:200]}). Run under a display or Xvfb, or install EGL (libegl1)."
        )
    return status, ""


def _render_one(job: dict[str, Any], size: tuple[int, int], colours: dict[int, Any]) -> None:
    import numpy as np
    import pyvista as pv

    from core.io import read_label
    from core.surfaces import outcome_surface

    ref = read_label(job["reference"], job.get("label_selector"))
    pred = read_label(job["prediction"], job.get("prediction_selector"), reference=ref)
    surf = outcome_surface(pred.array, ref.array, ref.geometry)
    # Any: pyvista's decorated methods confuse mypy (they look like unbound descriptors)
    p: Any = pv.Plotter(off_screen=True, window_size=list(size))
    try:
        p.set_background("#1e1f24")
        if surf.n_cells:
            labels = np.asarray(surf.cell_data["label"], dtype=np.int64)
            lut = np.full((max(4, int(labels.max()) + 1), 3), 200, np.uint8)
            for k, c in colours.items():
                lut[k] = c
            surf.cell_data["rgb"] = lut[labels]
            p.add_mesh(surf, scalars="rgb", rgb=True, show_scalar_bar=False)
        p.view_vector((0.0, -1.0, 0.0), viewup=(0.0, 0.0, 1.0))  # anterior, as the app's default camera
        p.reset_camera()
        p.screenshot(job["out"])
    finally:
        p.close()


def main(argv: list[str] | None = None) -> int:
    from core.resources import load_json_resource

    argv = sys.argv[1:] if argv is None else argv
    req = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    classes = load_json_resource("presets", "overlay_colors.json")["classes"]
    colours = {1: classes["TP"]["rgb"], 2: classes["FP"]["rgb"], 3: classes["FN"]["rgb"]}
    size = tuple(req.get("size") or SNAPSHOT_SIZE)
    for job in req["jobs"]:
        try:
            Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
            _render_one(job, size, colours)
            print(json.dumps({"out": job["out"], "ok": True}), flush=True)
        except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the others
            print(json.dumps({"out": job["out"], "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    return 0


if __name__ == "__main__":
    from core.child_process import die_with_parent

    die_with_parent()  # a killed app or CLI leaves no renderer behind
    sys.exit(main())
