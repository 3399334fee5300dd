"""Run the one segmentation route (:func:`core.segmentation.segment_and_gate`) in a child process,
talking JSON lines.

The GUI segments in a child process rather than a thread: importing torch and
the Python parts of the sliding window hold the GIL for long stretches (about
a second for the import alone), which would freeze the window; a process also
frees every byte (and the GPU) when it ends, and cancelling cannot leave the
case half-changed.

Protocol (``python -m core.predict_process REQUEST.json``):

- the request names the CT as an ``.npy`` file (array in the order the case
  holds it) plus its geometry, the checkpoint, the predictor's options
  (:meth:`core.segmentation.PredictOptions.to_json`) and an output folder;
- stdout carries one JSON object per line: ``started`` (device, backend,
  ``export_seconds``: what exporting the model for its engine took, 0 when
  cached), ``progress`` (done, total, message), then one of ``done`` (paths of
  ``mask.npy`` (bool) and ``probabilities.npy`` (uint8, 255 = 1.0), seconds,
  export_seconds, windows, backend, messages, ``warnings`` and ``gate`` from
  core.gate), ``error`` (kind, message, what, fix) or ``cancelled``;
- a line ``cancel`` on stdin, or stdin closing, cancels the run.

Exit status: 0 done, 2 error of the project's family, 130 cancelled, 1 crash.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AirwayError, Cancelled, InputError
from core.progress import Cancellable, CancelToken, throttled
from core.segmentation.options import PredictOptions
from core.volume import Geometry, IntensityVolume

Emit = Callable[[dict[str, Any]], None]

#: at most 20 progress lines a second: the GUI reads every one on its thread
PROGRESS_INTERVAL_S = 0.05


def write_request(
    folder: str | os.PathLike[str],
    ct: IntensityVolume,
    checkpoint: str | os.PathLike[str],
    options: PredictOptions,
    *,
    nice: int = 5,
    gate: bool = True,
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
        "options": options.to_json(),
        "gate": bool(gate),
        "nice": int(nice),
        "out": str(folder.resolve()),
    }
    path = folder / "request.json"
    path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    return path


def run_request(request: dict[str, Any], emit: Emit, cancel: Cancellable) -> dict[str, Any]:
    """Carry out one request; emits ``started``/``progress`` and returns the ``done`` event."""
    from core.segmentation import Predictor, segment_and_gate

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
    array = np.load(ct_path, mmap_mode="r", allow_pickle=False)
    ct = IntensityVolume(np.asarray(array), Geometry.from_dict(request["geometry"]), name=request.get("name") or "ct")
    predictor = Predictor(request["checkpoint"], PredictOptions.from_json(request.get("options") or {}))
    emit(
        {
            "event": "started",
            "device": predictor.device,
            "backend": predictor.backend_name,
            "export_seconds": predictor.export_seconds,
        }
    )

    def progress(done: float, total: float, message: str = "") -> None:
        emit({"event": "progress", "done": int(done), "total": int(total), "message": message})

    result = segment_and_gate(
        predictor,
        ct,
        gate=bool(request.get("gate", True)),
        progress=throttled(progress, PROGRESS_INTERVAL_S),
        cancel=cancel,
    )
    pred = result.prediction
    np.save(out / "mask.npy", np.ascontiguousarray(pred.mask.array, dtype=bool), allow_pickle=False)
    np.save(
        out / "probabilities.npy", np.ascontiguousarray(pred.probabilities.array, dtype=np.uint8), allow_pickle=False
    )
    return {
        "event": "done",
        "mask": str(out / "mask.npy"),
        "probabilities": str(out / "probabilities.npy"),
        "seconds": float(pred.seconds),
        "export_seconds": float(predictor.export_seconds),
        "windows": int(pred.windows),
        "backend": pred.backend,
        "device": predictor.device,
        "messages": list(pred.messages),
        "warnings": result.warnings,
        "gate": result.gate_dict(),
    }


def _watch_stdin(cancel: CancelToken) -> None:
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
    cancel = CancelToken()
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
    from core.child_process import die_with_parent

    # a crashed or killed app sends no "cancel", and the predictor looks at
    # stdin only between windows: end with the app, whatever it is doing
    die_with_parent()
    sys.exit(main())
