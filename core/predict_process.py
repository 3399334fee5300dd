"""Run :class:`core.inference.Predictor` in a child process, talking JSON lines.

The GUI segments in a child process rather than a thread: importing torch and
the Python parts of the sliding window hold the GIL for long stretches (about
a second for the import alone), which would freeze the window; a process also
frees every byte (and the GPU) when it ends, and cancelling cannot leave the
case half-changed.

Protocol (``python -m core.predict_process REQUEST.json``):

- the request names the CT as an ``.npy`` file (array in the order the case
  holds it) plus its geometry, the checkpoint, the device and window options
  and an output folder;
- stdout carries one JSON object per line: ``started`` (device, backend),
  ``progress`` (done, total, eta_s), then one of ``done`` (paths of
  ``mask.npy`` (bool) and ``probabilities.npy`` (uint8, 255 = 1.0), seconds,
  windows, backend, messages, ``warnings`` and ``gate`` from core.gate), ``error`` (kind, message, what, fix) or
  ``cancelled``;
- a line ``cancel`` on stdin, or stdin closing, cancels the run.

Exit status: 0 done, 2 error of the project's family, 130 cancelled, 1 crash.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AirwayError, Cancelled, InputError
from core.volume import Geometry, IntensityVolume

Emit = Callable[[dict[str, Any]], None]


def write_request(
    folder: str | os.PathLike,
    ct: IntensityVolume,
    checkpoint: str | os.PathLike,
    *,
    device: str = "auto",
    window: int | None = None,
    step: int | None = None,
    gaussian: bool | None = None,
    backend: str = "auto",
    threads: int | None = None,
    nice: int = 5,
    mode: str | None = "fast",
    region: str | None = None,
) -> Path:
    """Save ``ct`` and a request in ``folder`` (created); returns the request path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "ct.npy", np.ascontiguousarray(ct.array), allow_pickle=False)
    request = {
        "ct": "ct.npy",
        "geometry": ct.geometry.to_dict(),
        "name": ct.name,
        "checkpoint": str(Path(checkpoint).resolve()),
        "device": device,
        "window": None if not window else int(window),  # None: the checkpoint's own
        "step": None if not step else int(step),
        "gaussian": None if gaussian is None else bool(gaussian),  # None: the mode's
        "mode": mode,  # "fast" (default), "exact" (the paper's procedure) or None (plain arguments)
        "region": region,
        "backend": backend,
        "threads": threads,
        "nice": int(nice),
        "out": str(folder.resolve()),
    }
    path = folder / "request.json"
    path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    return path


def run_request(request: dict[str, Any], emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """Carry out one request; emits ``started``/``progress`` and returns the ``done`` event."""
    from core.inference import Predictor

    out = Path(request["out"])
    ct_path = Path(request["ct"])
    if not ct_path.is_absolute():
        ct_path = out / ct_path
    if not ct_path.exists():
        raise InputError(
            f"The CT handed to the segmentation process is missing ({ct_path}).", "Run the segmentation again."
        )
    if request.get("nice") and hasattr(os, "nice"):
        # below the GUI's priority: on a busy CPU the window stays responsive
        try:
            os.nice(int(request["nice"]))
        except OSError:
            pass
    threads = request.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    array = np.load(ct_path, mmap_mode="r", allow_pickle=False)
    ct = IntensityVolume(np.asarray(array), Geometry.from_dict(request["geometry"]), name=request.get("name") or "ct")
    predictor = Predictor(
        request["checkpoint"],
        device=request.get("device", "auto"),
        window=request.get("window") or None,
        step=request.get("step") or None,
        gaussian=request.get("gaussian"),
        backend=str(request.get("backend", "auto")),
        mode=request.get("mode"),
        region=request.get("region") or None,
    )
    emit({"event": "started", "device": predictor.device, "backend": predictor.backend_name})
    last = [0.0]

    def progress(done: int, total: int, eta_s: float | None = None) -> None:
        now = time.monotonic()
        # at most 20 lines a second: the GUI reads every one on its thread
        if done < total and now - last[0] < 0.05:
            return
        last[0] = now
        emit(
            {
                "event": "progress",
                "done": int(done),
                "total": int(total),
                "eta_s": None if eta_s is None else float(eta_s),
            }
        )

    result = predictor.predict(ct, progress=progress, cancel=cancel)
    warnings, gate = [], None
    if request.get("gate", True):
        from core.gate import check_mask
        from core.models.card import card_summary

        emit(
            {"event": "progress", "done": 1, "total": 1, "eta_s": None, "message": "Checking the mask (trachea, lungs)"}
        )
        report = check_mask(ct, result.mask.mask)
        gate = report.as_dict()
        if not report.passed:
            warnings.append(report.warning(card_summary(predictor.header)))
    np.save(out / "mask.npy", np.ascontiguousarray(result.mask.array, dtype=bool), allow_pickle=False)
    np.save(
        out / "probabilities.npy", np.ascontiguousarray(result.probabilities.array, dtype=np.uint8), allow_pickle=False
    )
    return {
        "event": "done",
        "mask": str(out / "mask.npy"),
        "probabilities": str(out / "probabilities.npy"),
        "seconds": float(result.seconds),
        "windows": int(result.windows),
        "backend": result.backend,
        "device": predictor.device,
        "messages": list(result.messages),
        "warnings": warnings,
        "gate": gate,
    }


def _watch_stdin(cancel: threading.Event) -> None:
    try:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
    except (OSError, ValueError):
        pass
    cancel.set()  # "cancel" or the parent went away


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    if len(argv) != 1:
        emit({"event": "error", "kind": "InputError", "message": "usage: python -m core.predict_process REQUEST.json"})
        return 2
    cancel = threading.Event()
    threading.Thread(target=_watch_stdin, args=(cancel,), daemon=True).start()
    try:
        request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        emit(run_request(request, emit, cancel))
        return 0
    except Cancelled:
        emit({"event": "cancelled"})
        return 130
    except AirwayError as exc:
        emit({"event": "error", "kind": type(exc).__name__, "message": str(exc), "what": exc.what, "fix": exc.fix})
        return 2
    except MemoryError:
        emit(
            {
                "event": "error",
                "kind": "MemoryError",
                "message": "Out of memory while segmenting. Use a smaller window, the CPU, or close other programs.",
            }
        )
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the GUI with its traceback
        emit(
            {
                "event": "error",
                "kind": type(exc).__name__,
                "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
